"""The job's Hydra overrides on a command line: composed into the job config, or a message naming the key."""

from __future__ import annotations

from typing import Any

from raymlops.errors import RayMLOpsError

__all__ = ["UsageError", "compose_overrides"]


class UsageError(RayMLOpsError):
    """A bad command line: the message names the argument or key and the valid ones (exit status 2)."""


def compose_overrides(overrides: list[str]) -> Any:  # -> DictConfig
    """The job config for ``overrides``, as ``python -m raymlops.job`` composes it.

    Raises:
        UsageError: Hydra refused an override (a misspelt key names the closest valid ones).
    """
    from hydra.errors import ConfigCompositionException

    from raymlops.config import compose

    try:
        return compose(list(overrides))
    except ConfigCompositionException as exc:
        from raymlops.config.overrides import misspelt_key_message

        raise UsageError(misspelt_key_message(overrides) or f"{exc} {exc.__cause__ or ''}".strip()) from None
