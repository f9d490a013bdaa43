"""validate: rule checks from config over distributed column statistics; a JSON report; a gate."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

from omegaconf import OmegaConf

from raymlops.data.stats import compute_stats
from raymlops.data.validation import check_rules
from raymlops.errors import DataValidationError
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import PipelineState, ValidateOutput

logger = logging.getLogger(__name__)


class ValidateStage(Stage):
    name = "validate"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.validate
        ingest = state.require("ingest")
        rules = cast(dict[str, Any], OmegaConf.to_container(cfg.columns, resolve=True))
        stats = compute_stats(ingest.dataset, list(rules))
        report = check_rules(stats, ingest.num_rows, cfg.min_rows, rules)
        report["data_version"] = ingest.data_version
        report_path = ctx.run_dir / "validation_report.json"
        report_path.write_text(json.dumps(report, indent=2, default=str))
        ctx.record(
            self.name,
            rules=sum(len(c["checks"]) for c in report["columns"].values()),
            failed=len(report["failures"]),
        )
        if report["failures"]:
            logger.warning("validation failures=%s report=%s", report["failures"], report_path)
            if cfg.fail_on_error:
                raise DataValidationError(report["failures"], {"report_path": str(report_path)})
        return state.with_(
            validate=ValidateOutput(report_path, not report["failures"], tuple(report["failures"]))
        )
