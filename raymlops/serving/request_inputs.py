"""A request's inputs for one version: the body within its limit, the protocol's checks, the features
fetched from the online store, the rows checked against the version's training profile.

No FastAPI here: the body is read from anything with ``headers`` and an async ``stream()``.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from raymlops.errors import OnlineStoreError, RequestError
from raymlops.features.online import OnlineStore, open_online_store
from raymlops.serving.feature_lookup import with_features
from raymlops.serving.refusals import audit_refusal

if TYPE_CHECKING:
    from raymlops.features.online.base import OnlineStoreSettings
    from raymlops.serving.metrics import ServingMetrics
    from raymlops.serving.model_inputs import ModelInputs
    from raymlops.serving.protocols.base import ServingProtocol
    from raymlops.serving.routing_table import Routes
    from raymlops.serving.spec import ModelSpec, RoutingConfig

__all__ = ["RequestInputs", "check_explain_rows", "read_body"]

logger = logging.getLogger(__name__)


async def read_body(request: Any, max_bytes: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(
            f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes; split the request.",
            status=413,
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:  # chunked uploads declare no length
            raise RequestError(
                f"request body exceeds the limit of {max_bytes} bytes; split the request.", status=413
            )
        chunks.append(chunk)
    return b"".join(chunks)


def check_explain_rows(payload: Any, max_explain_rows: int) -> None:
    """422 for more records than one explanation may take (explaining costs ~0.2 s per 100 rows)."""
    if isinstance(payload, list) and len(payload) > max_explain_rows:
        raise RequestError(
            f"too many records to explain: {len(payload)} exceeds max_explain_rows="
            f"{max_explain_rows} (explaining costs about 0.2 s per 100 rows); split the request."
        )


class RequestInputs:
    """Builds a version's ``ModelInputs`` for a request; owns the online store the versions read."""

    def __init__(self, metrics: ServingMetrics) -> None:
        self._metrics = metrics
        # Online feature store (None: no served version has a feature lookup); see reconfigure.
        self._store: OnlineStore | None = None
        self._store_settings: OnlineStoreSettings | None = None
        # Store lookups block on I/O: run them here, off the event loop (a few at once per replica).
        self._lookups = ThreadPoolExecutor(max_workers=4, thread_name_prefix="raymlops-features")
        self._audited: set[tuple[str, str, str]] = set()  # (name, version, column): one record each

    def reconfigure(self, config: RoutingConfig) -> None:
        """Open the online store the new table names (only if a version needs one), or keep the open one."""
        needed = any(s.feature_lookup is not None for specs in config.models.values() for s in specs)
        settings = config.online_store if needed else None
        if settings == self._store_settings:
            return
        store = None if settings is None else open_online_store(settings)
        old, self._store, self._store_settings = self._store, store, settings
        logger.info("online store settings=%s", settings.to_dict() if settings is not None else None)
        if old is not None:
            old.close()

    async def collect(
        self, protocol: ServingProtocol, payload: Any, spec: ModelSpec, max_rows: int
    ) -> tuple[ModelInputs, list[list[str]] | None]:
        """The version's inputs, with the views each row was missing from (None: no feature lookup);
        a lookup runs on the lookup threads, off the event loop."""
        request = protocol.inputs(payload, spec, max_rows)
        if spec.feature_lookup is None:
            return request, None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._lookups, self._fetch, request, spec)

    def collect_now(
        self, protocol: ServingProtocol, payload: Any, spec: ModelSpec, max_rows: int
    ) -> tuple[ModelInputs, list[list[str]] | None]:
        """``collect`` on the calling thread (a lookup blocks it)."""
        request = protocol.inputs(payload, spec, max_rows)
        if spec.feature_lookup is None:
            return request, None
        return self._fetch(request, spec)

    def _fetch(self, request: ModelInputs, spec: ModelSpec) -> tuple[ModelInputs, list[list[str]]]:
        store = self._store
        if store is None or spec.feature_lookup is None:  # parse_user_config refuses a lookup without one
            raise OnlineStoreError("(none)", "this router has no online store configured.")
        return with_features(request, spec.feature_lookup, spec.input_columns, store)

    def check_ood(
        self, routes: Routes, name: str, spec: ModelSpec, inputs: ModelInputs
    ) -> list[list[str]] | None:
        """Per row, the columns outside the version's training profile (None: not checked); counted
        in metrics. With ``ood.action: reject`` a flagged row refuses the request (RequestError, 422)."""
        check = routes.ood.get((name, spec.version))
        if check is None:
            return None
        flags = check.flags(inputs)
        if not any(flags):
            return flags
        self._metrics.ood_rows(name, spec.version, flags)
        if routes.config.ood.action == "reject":
            refusal = check.refusal(inputs, flags)
            column = next(columns[0] for columns in flags if columns)
            if (name, spec.version, column) not in self._audited:  # one audit record per column
                self._audited.add((name, spec.version, column))
                audit_refusal(
                    routes.config.auth.audit_log,
                    "predict",
                    f"{name} v{spec.version}",
                    refusal.message,
                    {"column": column},
                )
            raise refusal
        return flags
