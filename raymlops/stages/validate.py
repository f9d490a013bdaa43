"""validate: the data gate. Rules, a reference profile and drift from one distributed pass; reports."""

from __future__ import annotations

import logging
from typing import Any, cast

from omegaconf import OmegaConf

from raymlops.data.audit import audit_dataset
from raymlops.errors import DataValidationError
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import PipelineState, ValidateOutput
from raymlops.security.pii import PIIPolicy

logger = logging.getLogger(__name__)


class ValidateStage(Stage):
    name = "validate"
    cacheable = True
    cache_inputs = ("ingest",)
    cache_config = ("validate", "data.columns", "data.pii")

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.validate
        ingest = state.require("ingest")
        rules = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
        pii = PIIPolicy.from_config(ctx.cfg).masker()
        # The rows ingest read into this process when they fit it (execution.*): the same kernels, no tasks.
        rows = ingest.table if ingest.table is not None else ingest.dataset
        result = audit_dataset(rows, rules, ingest.data_version, ctx.run_dir, pii=pii)
        report = result.report
        ctx.lineage["profile"] = str(result.profile_path)
        # driver_bytes: the statistics the driver received (bounded per column); key_buckets: the Ray tasks
        # that counted duplicate keys (absent when no key is checked, or it was checked in this process).
        where = {k: report[k] for k in ("driver_bytes", "key_buckets") if report.get(k) is not None}
        ctx.record(
            self.name,
            rules=len(report["table"]) + sum(len(c["checks"]) for c in report["columns"].values()),
            failed=len(report["failures"]),
            warnings=len(report["warnings"]),
            **where,
        )
        if report["failures"]:
            logger.warning("validation failures=%s report=%s", report["failures"], result.html_path)
            if cfg.fail_on_error:
                raise DataValidationError(report["failures"], {"report_path": str(result.report_path)})
        return state.with_(
            validate=ValidateOutput(
                result.report_path,
                not report["failures"],
                tuple(report["failures"]),
                tuple(report["warnings"]),
                result.profile_path,
                result.html_path,
            )
        )
