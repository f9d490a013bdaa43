"""``raymlops batch-score``: score a versioned dataset with a registered model (a Ray Data job over an
onnxruntime actor pool).

    raymlops batch-score --model M --input I --output O [--threshold T] [--keep C,C] [--overwrite]
                         [--use-gpu] [overrides ...]
    python jobs/batch_score.py model=M input=I output=O [threshold=T] [keep=C,C] [overwrite=B]
                               [use_gpu=B] [overrides ...]

    model     <name>@<alias> | <name>@<version> | <name> (= <name>@champion) | @<alias> (registry.model_name)
    input     delta:<path>[@<version>] | lakefs://<repo>/<ref>/<path> | files:<path> | <file or folder>
    output    a new or empty folder (local path or s3://, gs://): parquet parts + _raymlops_batch.json
    threshold the decision threshold of a binary model (default 0.5); keep: input columns copied to the
              output (default all). The scores are the model's task's columns: binary probability, label;
              multiclass label, probability_<class> per class; regression value.
    overrides the job's Hydra overrides (state_dir=..., env=prod, ray.address=..., ...), so the same
              registry and data the pipeline job uses are read.

The job's ``key=value`` form is read too: ``model=``, ``input=``, ``output=``, ``threshold=``, ``keep=``,
``overwrite=`` and ``use_gpu=`` among the overrides are this command's options (``model=`` here names
the registered model, not the config's model family).

Inside a Ray job (``ray job submit -- python jobs/batch_score.py ...``) it joins that cluster; alone it
starts an embedded Ray. Exit status: 0 done; 2 bad input, with a message naming it (the checks run
before Ray starts; a run that fails later removes what it wrote); 1 any other failure.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import Any

from raymlops.cli.overrides import UsageError

__all__ = ["add_batch_score_command", "run_batch_score_command"]

REQUIRED = ("model", "input", "output")
OPTIONAL = {"threshold": "0.5", "keep": "", "overwrite": "false", "use_gpu": "false"}
KEYS = (*REQUIRED, *OPTIONAL)


def add_batch_score_command(sub: argparse._SubParsersAction) -> None:
    batch = sub.add_parser(
        "batch-score",
        help="score a versioned dataset with a registered model (jobs/batch_score.py)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("--model", default=None, help="NAME[@ALIAS|@VERSION] or @ALIAS")
    batch.add_argument("--input", default=None, help="a data reference: delta:..., lakefs://..., a path")
    batch.add_argument("--output", default=None, help="a new or empty folder for the scored parquet")
    batch.add_argument("--threshold", default=None, help="decision threshold (default 0.5)")
    batch.add_argument("--keep", default=None, metavar="COL,COL", help="input columns to copy (default all)")
    batch.add_argument("--overwrite", action="store_const", const="true", default=None)
    batch.add_argument("--use-gpu", dest="use_gpu", action="store_const", const="true", default=None)
    batch.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job (and key=value options)")


def _valid_keys() -> str:
    return f"required: {', '.join(f'{k}=' for k in REQUIRED)}; optional: " + ", ".join(
        f"{k}={v or '...'}" for k, v in OPTIONAL.items()
    )


def command_keys(args: argparse.Namespace) -> tuple[dict[str, str], list[str]]:
    """This command's options (from ``--flags`` or ``key=value``) and the config overrides left over."""
    ours = {k: getattr(args, k) for k in KEYS if getattr(args, k, None) is not None}
    overrides: list[str] = []
    for arg in args.overrides:
        key, _, value = arg.partition("=")
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
    """The job config with ``overrides``; an unknown key names this command's keys and the config's."""
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
        # ``model`` is this command's key here, not the config group (the model family) of the same name.
        config_keys = sorted(str(k) for k in compose([]) if k not in KEYS)
        hint = difflib.get_close_matches(bad, [*KEYS, *config_keys], n=3)
        raise UsageError(
            f"unknown key {bad!r}."
            + (f" Did you mean {', '.join(map(repr, hint))}?" if hint else "")
            + f" Keys: {_valid_keys()}; or a config override of: {', '.join(config_keys)}."
        ) from None


def run_batch_score_command(args: argparse.Namespace) -> int:
    """Score, once the role (``batch.score``) is checked: after the keys, which the overrides hold."""
    keys, overrides = command_keys(args)
    threshold = _threshold(keys["threshold"])
    keep_columns = [c.strip() for c in keys["keep"].split(",") if c.strip()] or None
    overwrite, use_gpu = _flag("overwrite", keys["overwrite"]), _flag("use_gpu", keys["use_gpu"])
    had_ray = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    cfg = compose_config(overrides)
    from raymlops.security.roles import authorize
    from raymlops.serving.batch import batch_score

    authorize(cfg.security, "batch.score", str(keys["model"]), why=f"{keys['input']} -> {keys['output']}")

    result = batch_score(
        keys["model"],
        keys["input"],
        keys["output"],
        cfg,
        threshold=threshold,
        keep_columns=keep_columns,
        overwrite=overwrite,
        use_gpu=use_gpu,
    )
    if not had_ray:  # an embedded Ray this call started: flush its workers' logs before the summary
        import ray

        ray.shutdown()
    rate = result.rows / result.seconds if result.seconds else 0.0
    print(
        f"batch_score: {result.model_name} version {result.model_version} (run {result.model_run_id}) "
        f"scored {result.rows:,} rows of {result.data_version} in {result.seconds:.1f} s "
        f"({rate:,.0f} rows/s) -> {result.output} ({len(result.files)} parquet files; "
        f"columns {', '.join(result.columns)}; lineage in {result.metadata_path})",
        flush=True,
    )
    return 0
