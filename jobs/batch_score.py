"""Score a versioned dataset with a registered model: a Ray Data job over an onnxruntime actor pool.

    python jobs/batch_score.py model=<name>@<alias> input=<data ref> output=<folder> [options] [overrides]

    model=    <name>@<alias> | <name>@<version> | <name> (= <name>@champion) | @<alias> (registry.model_name)
    input=    delta:<path>[@<version>] | lakefs://<repo>/<ref>/<path> | files:<path> | <file or folder>
    output=   a new or empty folder (local path or s3://, gs://): parquet parts + _raymlops_batch.json
    options:  threshold=0.5  keep=<col>,<col> (input columns copied to the output; default all)
              overwrite=false  use_gpu=false
    overrides: the job's Hydra overrides (state_dir=..., env=prod, ray.address=..., ...), so the same
              registry and data the pipeline job uses are read.

Inside a Ray job (``ray job submit -- python jobs/batch_score.py ...``) it joins that cluster; alone it
starts an embedded Ray. Exit status: 0 done; 2 bad input, with a message naming it (the checks run
before Ray starts; a run that fails later removes what it wrote); 1 any other failure.
"""

from __future__ import annotations

import difflib
import logging
import sys
from typing import Any

REQUIRED = ("model", "input", "output")
OPTIONAL = {"threshold": "0.5", "keep": "", "overwrite": "false", "use_gpu": "false"}
KEYS = (*REQUIRED, *OPTIONAL)


class UsageError(Exception):
    """Bad command line: the message says what and lists the valid keys."""


def _valid_keys() -> str:
    return f"required: {', '.join(f'{k}=' for k in REQUIRED)}; optional: " + ", ".join(
        f"{k}={v or '...'}" for k, v in OPTIONAL.items()
    )


def parse_argv(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` arguments into this job's keys and the config overrides."""
    ours: dict[str, str] = {}
    overrides: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise UsageError(f"argument {arg!r} is not key=value. Keys: {_valid_keys()}.")
        if key in KEYS:
            if key in ours:
                raise UsageError(f"key {key!r} is given twice.")
            ours[key] = value
        else:
            overrides.append(arg)
    missing = [k for k in REQUIRED if not ours.get(k)]
    if missing:
        raise UsageError(f"missing key(s) {', '.join(f'{k}=' for k in missing)}. Keys: {_valid_keys()}.")
    return {**OPTIONAL, **ours}, overrides


def _flag(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise UsageError(f"{key}={value!r} is not true or false.")


def _threshold(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"threshold={value!r} is not a number.") from None


def compose_config(overrides: list[str]) -> Any:  # -> DictConfig
    """The job config with ``overrides``; an unknown key names this job's keys and the config's."""
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    from raymlops.config import compose

    try:
        return compose(overrides)
    except ConfigCompositionException as exc:
        cause = exc.__cause__
        bad = getattr(cause, "full_key", None)
        if not isinstance(cause, ConfigKeyError | ConfigAttributeError) or not bad or "." in bad:
            from raymlops.config.overrides import misspelt_key_message

            raise UsageError(misspelt_key_message(overrides) or str(exc)) from None
        # ``model`` is this job's key here, not the config group (the model family) of the same name.
        config_keys = sorted(str(k) for k in compose([]) if k not in KEYS)
        hint = difflib.get_close_matches(bad, [*KEYS, *config_keys], n=3)
        raise UsageError(
            f"unknown key {bad!r}."
            + (f" Did you mean {', '.join(map(repr, hint))}?" if hint else "")
            + f" Keys: {_valid_keys()}; or a config override of: {', '.join(config_keys)}."
        ) from None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raymlops.errors import RayMLOpsError

    had_ray = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    try:
        keys, overrides = parse_argv(args)
        options = {
            "threshold": _threshold(keys["threshold"]),
            "keep_columns": [c.strip() for c in keys["keep"].split(",") if c.strip()] or None,
            "overwrite": _flag("overwrite", keys["overwrite"]),
            "use_gpu": _flag("use_gpu", keys["use_gpu"]),
        }
        cfg = compose_config(overrides)
        from raymlops.security.roles import authorize
        from raymlops.serving.batch import batch_score

        authorize(cfg.security, "batch.score", str(keys["model"]), why=f"{keys['input']} -> {keys['output']}")

        result = batch_score(keys["model"], keys["input"], keys["output"], cfg, **options)
    except (UsageError, RayMLOpsError) as exc:
        print(f"batch_score.py: {exc}", file=sys.stderr)
        return 2
    if not had_ray:  # an embedded Ray this call started: flush its workers' logs before the summary
        import ray

        ray.shutdown()
    rate = result.rows / result.seconds if result.seconds else 0.0
    print(
        f"batch_score: {result.model_name} version {result.model_version} (run {result.model_run_id}) "
        f"scored {result.rows:,} rows of {result.data_version} in {result.seconds:.1f} s "
        f"({rate:,.0f} rows/s) -> {result.output} ({len(result.files)} parquet files; "
        f"lineage in {result.metadata_path})",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
