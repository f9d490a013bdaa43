"""What the router's ASGI middlewares (API keys, rate limit) share of a request's scope."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import Scope

__all__ = ["route_path"]


def route_path(scope: Scope) -> str:
    """The path the app routes on: without the application's route prefix (``root_path``)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path
