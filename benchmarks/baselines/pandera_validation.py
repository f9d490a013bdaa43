"""pandera on the validation benchmark's parquet files with the flights rules (baselines venv).

Input (written by benchmarks/validation.py): the folder of parquet part files our side validates, and
``--rules``, the ``validate`` config as JSON. The rules become one ``DataFrameSchema``, check for check:
type (a numeric / string / timestamp dtype check, as the rule's kind says), ``max_null_fraction``
(``nullable`` when it is above 0, plus the fraction itself, nulls counted), ``min``/``max``
(``Check.ge``/``Check.le``), ``allowed`` (``Check.isin``), the unique key (``unique=`` on the schema),
``min_rows``/``max_rows``; a rule of severity ``warn`` warns instead of failing
(``raise_warning=True``). Timed: ``pd.read_parquet`` of the folder plus ``schema.validate(lazy=True)``
(every failure collected, as ours reports every check), since our side reads the files too.
Prints ``{"baseline", "version", "seconds", "samples", "validate_seconds", "failed_columns", "rows"}``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from _runner import arguments, log, median_seconds, say, skip_unless_importable

_TYPE_CHECKS = {
    "numeric": "is_numeric_dtype",
    "string": "is_string_dtype",
    "timestamp": "is_datetime64_any_dtype",
}


def schema(rules: dict[str, Any]) -> Any:
    import pandas as pd
    import pandera.pandas as pa

    columns = {}
    for name, rule in (rules.get("columns") or {}).items():
        warn = rule.get("severity", "fail") == "warn"
        is_type = getattr(pd.api.types, _TYPE_CHECKS[rule["type"]])
        checks = [pa.Check(is_type, name="type", raise_warning=warn)]
        limit = float(rule.get("max_null_fraction") or 0.0)
        if limit > 0:
            checks.append(
                pa.Check(
                    lambda s, limit=limit: bool(s.isna().mean() <= limit),
                    name="max_null_fraction",
                    ignore_na=False,
                    raise_warning=warn,
                )
            )
        if rule.get("min") is not None:
            checks.append(pa.Check.ge(rule["min"], raise_warning=warn))
        if rule.get("max") is not None:
            checks.append(pa.Check.le(rule["max"], raise_warning=warn))
        if rule.get("allowed") is not None:
            checks.append(pa.Check.isin(list(rule["allowed"]), raise_warning=warn))
        columns[name] = pa.Column(
            checks=checks, nullable=limit > 0, required=bool(rule.get("required", True))
        )
    low, high = rules.get("min_rows", 1), rules.get("max_rows")
    table_checks = [
        pa.Check(lambda df: bool(len(df) >= low and (high is None or len(df) <= high)), name="row_count")
    ]
    key = list((rules.get("unique") or {}).get("key") or [])
    return pa.DataFrameSchema(columns, checks=table_checks, unique=key or None, strict=False)


def main() -> int:
    p = arguments(__doc__.splitlines()[0])
    p.add_argument("--rules", required=True, help="the validate config as JSON")
    args = p.parse_args()
    skip_unless_importable("pandera", "pandas", "pyarrow")
    import pandas as pd
    import pandera
    import pandera.errors

    rules = json.loads(Path(args.rules).read_text())
    checker = schema(rules)
    result: dict[str, Any] = {}

    def validate(frame: Any) -> list[str]:
        with warnings.catch_warnings():  # a warn rule's failure is a warning, not a failure
            warnings.simplefilter("ignore")
            try:
                checker.validate(frame, lazy=True)
                return []
            except pandera.errors.SchemaErrors as errors:
                cases = errors.failure_cases
                # Schema-wide checks (the unique key, row counts) are ours' table checks.
                table = cases["schema_context"] == "DataFrameSchema"
                failed = {str(c) for c in cases.loc[~table, "column"]}
                return sorted(failed | ({"<table>"} if table.any() else set()))

    def run() -> None:
        frame = pd.read_parquet(args.input)
        began = time.perf_counter()
        result["failed"] = validate(frame)
        result["validate_s"] = time.perf_counter() - began
        result["rows"] = len(frame)

    seconds, samples = median_seconds(run, args.repeats, args.warmup)
    log(f"pandera {pandera.__version__}: {result['rows']:,} rows, failed {result['failed']}")
    say(
        {
            "baseline": "pandera DataFrameSchema",
            "version": pandera.__version__,
            "seconds": seconds,
            "samples": samples,
            "validate_seconds": round(result["validate_s"], 4),
            "failed_columns": result["failed"],
            "rows": result["rows"],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
