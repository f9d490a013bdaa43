"""Write-audit-publish: new data lands as a candidate, is audited, and is published only if it passes.

A failed audit (or any error while auditing) discards the candidate: the main line keeps its version and
its rows, and nobody reading it ever saw the candidate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from raymlops.data.audit import AuditResult
from raymlops.data.versioning import DataBackend, DataVersion, Rows, rows_for
from raymlops.errors import DataValidationError

__all__ = ["PublishResult", "write_audit_publish"]

logger = logging.getLogger(__name__)

Auditor = Callable[[object, str], AuditResult]  # (ray Dataset of the candidate, its version) -> result


@dataclass(frozen=True)
class PublishResult:
    candidate: DataVersion  # where the new rows were audited
    published: DataVersion  # the main line's new version
    audit: AuditResult


def write_audit_publish(
    backend: DataBackend,
    table: Rows,
    audit: Auditor,
    message: str,
    metadata: dict[str, str],
    mode: str = "append",
) -> PublishResult:
    """Stage ``table`` (a table or a stream of batches), audit the candidate, publish it. Raises
    DataValidationError when the gate fails."""
    candidate = backend.stage(rows_for(backend, table), message, metadata, mode)
    logger.info("candidate staged version=%s", candidate.version)
    try:
        result = audit(backend.read(candidate.version), str(candidate.version))
    except BaseException:
        backend.discard(candidate)
        raise
    if result.failures:
        backend.discard(candidate)
        logger.warning("candidate rejected: %d failed rule(s); nothing published", len(result.failures))
        raise DataValidationError(result.failures, {"report_path": str(result.report_path)})
    published = backend.publish(candidate, message, {**metadata, "audit": "passed"})
    logger.info("published version=%s", published)
    return PublishResult(candidate.version, published, result)
