"""Evidently's data-drift preset on the drift benchmark's reference and current data (baselines venv).

Input (written by benchmarks/drift.py): ``reference.parquet`` and ``current.parquet``, the same raw
feature columns our side profiles. Timed: ``Report([DataDriftPreset()]).run(current, reference)`` with
the preset's defaults (Evidently 0.7's API; for more than 1000 rows a numeric column is judged by the
normed Wasserstein distance), the frames already in memory as pandas, as an Evidently user holds them.
Prints ``{"baseline", "version", "seconds", "samples", "drifted"}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _runner import arguments, log, median_seconds, say, skip_unless_importable


def drifted_columns(snapshot: object) -> list[str]:
    """The columns whose drift score is at or above their threshold, from the snapshot's metrics."""
    out = []
    for metric in snapshot.dict()["metrics"]:  # type: ignore[attr-defined]
        config = metric.get("config", {})
        if config.get("type", "").endswith(":ValueDrift") and metric["value"] >= config["threshold"]:
            out.append(config["column"])
    return sorted(out)


def main() -> int:
    args = arguments(__doc__.splitlines()[0]).parse_args()
    skip_unless_importable("evidently", "pandas", "pyarrow")
    import evidently
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    folder = Path(args.input)
    reference = pd.read_parquet(folder / "reference.parquet")
    current = pd.read_parquet(folder / "current.parquet")
    log(f"evidently {evidently.__version__}: reference {reference.shape}, current {current.shape}")
    result: dict[str, object] = {}

    def run() -> None:
        result["snapshot"] = Report([DataDriftPreset()]).run(current, reference)

    seconds, samples = median_seconds(run, args.repeats, args.warmup)
    say(
        {
            "baseline": "evidently DataDriftPreset",
            "version": evidently.__version__,
            "seconds": seconds,
            "samples": samples,
            "drifted": drifted_columns(result["snapshot"]),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
