"""The roles and their order, written once: the CLI, the job and serving all rank roles here.

``viewer < predictor < data-scientist < operator < admin``: a role may do what every role below it
may. Kept apart from ``roles`` (who acts, what each action needs) so that the key file
(``security.keys``), which validates roles, and ``roles``, which reads the key file, both stand on it.
"""

from __future__ import annotations

from typing import Any

from raymlops.errors import ConfigError, did_you_mean

__all__ = ["ROLES", "check_role_name", "role_allows", "role_rank"]

ROLES = ("viewer", "predictor", "data-scientist", "operator", "admin")  # lowest first
_RANK = {role: rank for rank, role in enumerate(ROLES)}


def role_allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (roles are ordered)."""
    return _RANK[role] >= _RANK[needed]


def role_rank(role: str) -> int:
    """``role``'s place in ``ROLES`` (0: viewer), for sorting by it."""
    return _RANK[role]


def check_role_name(role: Any, key: str = "role") -> str:
    """``role`` if it names a role, else a ``ConfigError`` on ``key`` that lists the roles."""
    if not isinstance(role, str) or role not in _RANK:
        raise ConfigError(key, f"{role!r} is not a role." + did_you_mean(str(role), ROLES))
    return role
