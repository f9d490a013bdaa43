"""The job's MLflow run: opened when a pipeline starts, closed with its status, children for Tune trials.

Every job is one MLflow run holding the resolved config (as ``config.yaml`` and as flattened params),
the git SHA and dirty flag, package versions, the data version, per-epoch and final metrics, stage
timings and resource use, and the artifacts the stages log. The registered model version points at it.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raymlops.registry.mlflow_registry import ModelRegistry
from raymlops.registry.tags import BEST_TRIAL_TAG, CONFIG_DIGEST_TAG, TAG_PREFIX, TRIAL_TAG

__all__ = ["JobTracker", "config_digest", "flatten"]

logger = logging.getLogger(__name__)
_MAX_PARAM_CHARS = 6000  # MLflow's limit for one param value


def flatten(value: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: config trees as MLflow params."""
    out = {} if out is None else out
    if isinstance(value, Mapping):
        for key, item in value.items():
            flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value
    return out


def _metrics(history: list[dict[str, Any]], final: Mapping[str, Any], now: int):  # -> list[Metric]
    from mlflow.entities import Metric

    rows = [
        Metric(k, float(v), now, int(row.get("epoch", step + 1)))
        for step, row in enumerate(history)
        for k, v in row.items()
        if k != "epoch" and isinstance(v, int | float)
    ]
    return rows + [Metric(k, float(v), now, 0) for k, v in final.items() if isinstance(v, int | float)]


def config_digest(text: str) -> str:
    """``sha256:<hex>`` of a resolved config's YAML text."""
    import hashlib

    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class JobTracker:
    """One MLflow run per job; ``run_id`` is what registered versions and child runs point at."""

    def __init__(self, registry: ModelRegistry, run_id: str) -> None:
        self.registry, self.run_id = registry, run_id
        self.config_digest = ""
        self._started = time.monotonic()

    @classmethod
    def start(
        cls, registry: ModelRegistry, run_name: str, tags: Mapping[str, str], config: Mapping[str, Any]
    ) -> JobTracker:
        """Open the run with ``tags`` and log ``config`` (resolved) as params and as ``config.yaml``.

        Secret values (keys naming a secret, URL passwords) are replaced first
        (:func:`raymlops.security.redact.redact_config`): the tracking store is read by everyone who
        may read runs, and a secret resolved from the environment must not land in it.
        """
        from mlflow.entities import Param
        from omegaconf import OmegaConf

        from raymlops.security.redact import redact_config

        config = redact_config(config)
        client = registry.client
        run = client.create_run(registry.experiment_id(), run_name=run_name, tags=dict(tags))
        params = [Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in flatten(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run.info.run_id, params=params[start : start + 100])
        text = OmegaConf.to_yaml(OmegaConf.create(dict(config)))
        client.log_text(run.info.run_id, text, "config.yaml")
        # The digest of exactly the logged bytes: lineage checks a registered version's config by it.
        client.set_tag(run.info.run_id, CONFIG_DIGEST_TAG, config_digest(text))
        logger.info("mlflow run started run_id=%s experiment=%s", run.info.run_id, registry.experiment)
        tracker = cls(registry, run.info.run_id)
        tracker.config_digest = config_digest(text)
        return tracker

    def log_metrics(self, final: Mapping[str, Any], history: list[dict[str, Any]] | None = None) -> None:
        metrics = _metrics(history or [], final, int(time.time() * 1000))
        for start in range(0, len(metrics), 1000):
            self.registry.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def log_text(self, name: str, text: str) -> None:
        self.registry.client.log_text(self.run_id, text, name)

    def log_artifacts(self, folder: str, paths: list[Path]) -> None:
        for path in paths:
            self.registry.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.registry.client.set_tag(self.run_id, key, str(value)[:5000])

    def log_trials(self, trials: list[dict[str, Any]]) -> list[str]:
        """Each Tune trial as a child run: its params, per-report metrics, final metrics, best marked."""
        from mlflow.entities import Param

        client, ids = self.registry.client, []
        for trial in trials:
            tags = {
                "mlflow.parentRunId": self.run_id,
                TRIAL_TAG: str(trial["name"]),
                BEST_TRIAL_TAG: str(bool(trial.get("best"))).lower(),
            }
            child = client.create_run(self.registry.experiment_id(), run_name=str(trial["name"]), tags=tags)
            params = [
                Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in flatten(trial.get("params", {})).items()
            ]
            metrics = _metrics(
                list(trial.get("history", [])), trial.get("metrics", {}), int(time.time() * 1000)
            )
            client.log_batch(child.info.run_id, params=params, metrics=metrics)
            client.set_terminated(child.info.run_id, status="FINISHED")
            ids.append(child.info.run_id)
        return ids

    def finish(
        self, status: str, figures: Mapping[str, Mapping[str, Any]], lineage: Mapping[str, Any]
    ) -> None:
        """Stage timings, resource use and lineage; then close the run FINISHED or FAILED."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        final: dict[str, float] = {
            "resource/driver_peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
            "resource/driver_cpu_seconds": usage.ru_utime + usage.ru_stime,
            "time/total_seconds": time.monotonic() - self._started,
        }
        for stage, seconds in (lineage.get("stage_seconds") or {}).items():
            final[f"time/{stage}_seconds"] = float(seconds)
        try:
            import ray

            if ray.is_initialized():
                for name, amount in ray.cluster_resources().items():
                    if name in ("CPU", "GPU", "memory"):
                        final[f"resource/cluster_{name.lower()}"] = float(amount)
        except Exception:  # resource figures are best effort; never fail a run for them
            logger.debug("cluster resources unavailable", exc_info=True)
        self.log_metrics(final)
        self.set_tags(
            {
                k if k.startswith(TAG_PREFIX) else f"{TAG_PREFIX}{k}": v
                for k, v in lineage.items()
                if k != "stage_seconds"
            }
        )
        self.log_text("figures.json", _json(figures))
        self.registry.client.set_terminated(
            self.run_id, status="FINISHED" if status == "succeeded" else "FAILED"
        )
        logger.info("mlflow run %s run_id=%s", status, self.run_id)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, default=str)
