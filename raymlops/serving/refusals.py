"""Security audit records of the router's own refusals (out-of-distribution rejects, rate limits)."""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["audit_refusal"]

logger = logging.getLogger(__name__)


def audit_refusal(
    path: str | None, action: str, target: str, why: str, details: dict[str, Any], who: str = "anonymous"
) -> None:
    """A refusal as a record in the audit log at ``path`` (``serve.auth.audit_log``; None: nothing),
    written on a thread: the append takes a file lock and must not stall the event loop."""
    if not path:
        return
    from raymlops.security.audit import audit_event

    def write() -> None:
        try:
            audit_event(action, target, "refused", why, who=who, details=details, path=path)
        except OSError:  # an unwritable audit log must not fail the request
            logger.exception("audit log %s not writable", path)

    threading.Thread(target=write, name="raymlops-audit", daemon=True).start()
