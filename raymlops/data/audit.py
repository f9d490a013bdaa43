"""Audit one data version: rules, reference profile and drift from one distributed pass, reports on disk.

Used by the ``validate`` stage and by write-audit-publish (``python -m raymlops data ingest``), so a
candidate is judged by exactly the rules a training run would apply.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from raymlops.data.stats import compute_dataset_stats
from raymlops.data.validation import check_rules, stats_options
from raymlops.security.pii import PIIMasker, mask_profile

__all__ = ["AuditResult", "audit_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditResult:
    report: dict[str, Any]  # passed, failures, warnings, rows, table/column checks, drift
    report_path: Path  # validation_report.json
    html_path: Path  # validation_report.html: the same, for a person, with histograms
    profile_path: Path  # profile.json: the reference profile of this data version

    @property
    def failures(self) -> list[str]:
        return list(self.report["failures"])


def _drift(profile, rules: dict[str, Any], report: dict[str, Any]) -> dict[str, Any] | None:
    """Drift vs ``rules['drift']['reference']``; drifted features become failures or warnings."""
    from raymlops.data.drift import drift_report
    from raymlops.data.profile import Profile

    cfg = rules.get("drift") or {}
    if not cfg.get("reference"):
        return None
    reference = Profile.load(Path(cfg["reference"]))
    drift = drift_report(
        reference,
        profile,
        psi_threshold=cfg["psi_threshold"],
        ks_threshold=cfg["ks_threshold"],
        chi2_pvalue=cfg["chi2_pvalue"],
        share_threshold=cfg["share_threshold"],
        columns=cfg.get("columns"),
    )
    drift["reference_version"] = reference.data_version
    target = report["failures"] if cfg.get("severity") == "fail" else report["warnings"]
    for name, feature in drift["features"].items():
        if feature["drifted"]:
            ks = f", ks {feature['ks']:.3f}" if feature.get("ks") is not None else ""
            target.append(
                f"column {name!r}: drift: observed psi {feature['psi']:.3f}{ks}, "
                f"expected psi < {cfg['psi_threshold']}" + (f", ks < {cfg['ks_threshold']}" if ks else "")
            )
    report["passed"] = not report["failures"]
    return drift


def audit_dataset(
    ds,
    rules: dict[str, Any],
    data_version: str,
    out_dir: Path,
    now: datetime | None = None,
    *,
    pii: PIIMasker | None = None,
) -> AuditResult:  # ds: ray.data.Dataset
    """Check ``rules`` (the ``validate`` config as a dict) on ``ds`` and write the three reports.

    ``pii`` columns are judged on their raw values but hashed or left out in all three reports (the
    profile too: it is registered with the model and monitoring compares the hashed log with it).
    """
    from raymlops.data.profile import Profile
    from raymlops.data.report_html import render_data_report

    key = list((rules.get("unique") or {}).get("key") or []) or None
    stats = compute_dataset_stats(ds, None, key, **stats_options(rules))
    report = check_rules(stats, rules, now, pii=pii)
    report["data_version"] = data_version
    profile = Profile.from_stats(stats.columns, stats.rows, data_version)
    if pii:
        profile = mask_profile(pii, profile)
    report["drift"] = _drift(profile, rules, report)

    out_dir.mkdir(parents=True, exist_ok=True)
    result = AuditResult(
        report,
        out_dir / "validation_report.json",
        out_dir / "validation_report.html",
        out_dir / "profile.json",
    )
    from raymlops.security.crypto import write_sensitive

    # Observed values, allowed lists, min/max: feature values, encrypted when encryption is on.
    write_sensitive(result.report_path, json.dumps(report, indent=2, default=str))
    html = render_data_report(report, report["drift"], f"Data report: {data_version}")
    write_sensitive(result.html_path, html)
    profile.save(result.profile_path)
    for warning in report["warnings"]:
        logger.warning("validation warning: %s", warning)
    return result
