"""The serving protocols, by name, as data; and the route -> role table their declarations make.

``PROTOCOLS`` maps a name to its class. A name that is not registered may be a dotted path,
``"package.module:ClassName"``, naming a ``ServingProtocol`` of your own without editing this package
(``protocol_class``). ``ROUTE_ROLES``, which the API-key check reads (``raymlops.serving.auth``), is
built from what the registered protocols declare plus FastAPI's own pages; nobody writes it by hand.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping

from raymlops.errors import ConfigError
from raymlops.security.role_ranks import check_role_name, role_rank
from raymlops.serving.protocols.base import OPEN, ServingProtocol
from raymlops.serving.protocols.oip_v2 import OipV2
from raymlops.serving.protocols.v1 import V1

__all__ = ["APP_ROUTES", "PROTOCOLS", "ROUTE_ROLES", "protocol_class", "route_roles"]

PROTOCOLS: dict[str, type[ServingProtocol]] = {V1.name: V1, OipV2.name: OipV2}

# FastAPI's own pages: the schema names every endpoint, so not anonymous either.
APP_ROUTES: dict[tuple[str, str], str | None] = {
    ("GET", "/openapi.json"): "viewer",
    ("GET", "/docs"): "viewer",
    ("GET", "/docs/oauth2-redirect"): "viewer",
    ("GET", "/redoc"): "viewer",
}


def protocol_class(name: str, key: str = "serve.protocol") -> type[ServingProtocol]:
    """The protocol registered as ``name``, or the class a ``"module:ClassName"`` path names.

    Raises:
        ConfigError: On ``key``: no such protocol, a path that does not import, or a class that is no
            ``ServingProtocol``.
    """
    registered = PROTOCOLS.get(name)
    if registered is not None:
        return registered
    module_name, colon, class_name = name.partition(":")
    if not colon or not module_name or not class_name:
        raise ConfigError(
            key, f"{name!r} is no registered protocol nor a 'module:ClassName' path.", PROTOCOLS
        )
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            key, f"cannot load {name!r}: {exc}; check the module path and class name."
        ) from None
    if not isinstance(found, type) or not issubclass(found, ServingProtocol):
        raise ConfigError(
            key, f"{name!r} is not a ServingProtocol subclass (raymlops.serving.protocols.base)."
        )
    return found


def route_roles(protocols: Iterable[type[ServingProtocol]]) -> dict[tuple[str, str], str | None]:
    """Every route the protocols (and FastAPI's pages) declare -> its lowest role, open routes first,
    then by role, each in declaration order.

    Raises:
        ConfigError: A route declared twice with different roles, or a role that is not one.
    """
    table: dict[tuple[str, str], str | None] = {}
    for protocol in (*protocols, None):
        declared: Mapping[tuple[str, str], str | None] = APP_ROUTES if protocol is None else protocol.routes
        for route, role in declared.items():
            where = f"{getattr(protocol, 'name', 'app')}.routes[{route!r}]"
            if role is not OPEN:
                check_role_name(role, where)
            if route in table and table[route] != role:
                raise ConfigError(where, f"is declared with role {table[route]!r} elsewhere, {role!r} here.")
            table[route] = role
    return dict(sorted(table.items(), key=lambda item: -1 if item[1] is None else role_rank(item[1])))


ROUTE_ROLES = route_roles(PROTOCOLS.values())
