"""The flights_loop demo's month loop: replay, publish, monitor, trigger, retrain, roll out; a timeline.

After the pipeline trained and deployed a model on the early months, each later month in turn

1. is replayed as live traffic (``loop.requests_per_month`` requests of ``loop.rows_per_request`` flights,
   a seeded sample sent in time order) with every flight's true outcome sent as feedback;
2. lands as new data: the whole month is write-audit-published into the demo's Delta table;
3. is monitored: :func:`~raymlops.monitoring.monitor.run_monitor` over exactly that month's window;
4. is judged by the retrain triggers (:func:`~raymlops.loop.retrain.run_retrain`), and when one fires,
   retrained on every month so far (validated and tested on the newest month) and rolled out
   progressively against the champion while a background client keeps sending that month's requests
   (2 per second while the candidate trains, 25 per second once it joins the app for its rollout).

Months are compressed into seconds, so the demo sets ``retrain.cooldown_s=0``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from raymlops.loop.months import MONTH_NAMES, month_rows, month_split, publish_month, sample_month
from raymlops.loop.timeline import Timeline
from raymlops.registry.tags import INPUT_COLUMNS_TAG

__all__ = ["run_loop"]

logger = logging.getLogger(__name__)

FLUSH_WAIT_S = 2.5  # the router writes its prediction and feedback logs every 2 s


def _monitor_line(report: Any, version: str) -> tuple[str, dict[str, Any]]:
    entry = report.versions.get(version) or {}
    accuracy = entry.get("accuracy") or {}
    live, test = accuracy.get("live") or {}, accuracy.get("test") or {}
    drift = entry.get("feature_drift") or {}
    psis = {n: f["psi"] for n, f in (drift.get("features") or {}).items() if f.get("psi") is not None}
    worst = max(psis, key=lambda n: psis[n]) if psis else None
    prediction = (entry.get("prediction_drift") or {}).get("psi")
    numbers = {
        "live_accuracy": live.get("accuracy"),
        "live_auc": live.get("auc"),
        "test_accuracy": test.get("accuracy"),
        "test_auc": test.get("auc"),
        "labelled": accuracy.get("rows", 0),
    }
    parts = [f"v{version}: {sum((entry.get('rows') or {}).values()):,} rows"]
    if live.get("accuracy") is not None:
        parts.append(
            f"live accuracy {live['accuracy']:.3f} (test {test.get('accuracy', float('nan')):.3f}), "
            f"AUC {live.get('auc') or float('nan'):.3f} (test {test.get('auc', float('nan')):.3f}) "
            f"on {accuracy.get('rows', 0):,} labelled"
        )
    if worst is not None:
        parts.append(f"max feature PSI {psis[worst]:.3f} ({worst})")
    if prediction is not None:
        parts.append(f"prediction PSI {prediction:.3f}")
    mine = [a for a in report.alerts if a.get("version") == version]
    parts.append(f"alerts: {', '.join(a['kind'] for a in mine)}" if mine else "no alert")
    return "; ".join(parts), numbers


def _offline_metrics(registry: Any, model: str, version: str, sample: Any, label: Any) -> dict[str, float]:
    """``version``'s registered graph scored on the replayed flights: the counterfactual for a month."""
    from raymlops.evaluation.metrics import binary_metrics
    from raymlops.models.export import parse_input_columns, predict_onnx

    registered = registry.version(model, version)
    columns = parse_input_columns(registered.tags.get(INPUT_COLUMNS_TAG, ""))
    from raymlops.security.integrity import registered_artifact

    proba = predict_onnx(registered_artifact(registry, registered, "model.onnx"), sample, columns)
    truth = sample[str(label.column)].to_numpy(zero_copy_only=False) > float(label.threshold)
    metrics = binary_metrics(truth.astype(np.float64), np.asarray(proba, dtype=np.float64), "offline")
    return {"accuracy": float(metrics["offline/accuracy"]), "auc": float(metrics["offline/auc"])}


def _champion(registry: Any, model: str, alias: str) -> str:
    from raymlops.errors import ModelNotFoundError

    holder = registry.by_alias(model, alias)
    if holder is None:
        raise ModelNotFoundError(f"{model}@{alias}")
    return str(holder.version)


def run_loop(ctx: Any, state: Any, retrain_stages: list[str]) -> dict[str, Any]:
    """Replay ``loop.replay_months`` against the deployed model; print the timeline; return key figures.

    ``retrain_stages``: what a triggered retrain runs (see :func:`raymlops.loop.stages.retrain_stages`).
    """
    from raymlops.data.sources import load_source
    from raymlops.loop.replay import Replayer
    from raymlops.loop.retrain import run_retrain
    from raymlops.monitoring.monitor import run_monitor, write_outputs
    from raymlops.registry.mlflow_registry import ModelRegistry
    from raymlops.serving.operations import api_key_headers, served_versions

    cfg, loop = ctx.cfg, ctx.cfg.loop
    model, alias = str(cfg.registry.model_name), str(cfg.retrain.alias)
    registered, deployed, exported = (
        state.require("register"),
        state.require("deploy"),
        state.require("export"),
    )
    label = cfg.features.label
    registry = ModelRegistry.from_config(cfg.registry)
    replayer = Replayer(
        deployed.url,
        model,
        list(exported.input_columns),
        (str(label.column), float(label.threshold)),
        rows_per_request=int(loop.rows_per_request),
        concurrency=int(loop.concurrency),
        headers=api_key_headers(),
    )
    source = load_source(str(loop.source))
    first = registered.version
    timeline, accuracy, outcomes = Timeline(), [], []
    split = str(cfg.evaluate.split)
    metrics = state.require("evaluate").metrics
    trained = f"{MONTH_NAMES[loop.train_months[0] - 1]}-{MONTH_NAMES[loop.train_months[-1] - 1]}"
    timeline.add(
        MONTH_NAMES[loop.train_months[-1] - 1],
        "trained",
        f"v{first} ({', '.join(registered.aliases) or 'no alias'}) on {trained} "
        f"({state.require('ingest').data_version}, sample {cfg.data.sample_fraction:g}): {split} AUC "
        f"{metrics[f'{split}/auc']:.3f}, accuracy {metrics[f'{split}/accuracy']:.3f}; deployed",
    )

    def rolling_out() -> bool:  # a candidate joined the app: the rollout needs traffic to judge it
        return len(served_versions(str(cfg.serve.app_name), model) or {}) > 1

    for month in loop.replay_months:
        name = MONTH_NAMES[month - 1]
        rows = month_rows(source, [month])
        sample = sample_month(
            rows, loop.requests_per_month * loop.rows_per_request, cfg.seed + month, label.column
        )
        traffic = replayer.replay(sample)
        time.sleep(FLUSH_WAIT_S)
        seconds = (traffic.ended - traffic.started).total_seconds() if traffic.ended else 0.0
        timeline.add(
            name,
            "traffic",
            f"{traffic.requests} requests ({sample.num_rows} flights) in {seconds:.1f} s, served by "
            f"{traffic.served_by()}; {traffic.errors} errors; outcomes sent as feedback",
        )
        published = publish_month(
            cfg, str(loop.table), rows, month, ctx.run_dir / "loop" / f"audit-{month:02d}"
        )
        timeline.add(
            name,
            "new data",
            f"{rows.num_rows:,} flights write-audit-published: {published.published} (audit passed)",
        )
        report = run_monitor(cfg, model=model, alias_or_version=alias, since=traffic.started)
        write_outputs(report, cfg.monitor.out_dir)
        champion = _champion(registry, model, alias)
        line, numbers = _monitor_line(report, champion)
        timeline.add(name, "monitor", line)
        original = _offline_metrics(registry, model, first, sample, label)
        accuracy.append({"month": name, "version": champion, **numbers, "original": original})
        with replayer.background(sample, busy=rolling_out) as background:
            outcome = run_retrain(
                cfg, report=report, overrides={**month_split(month), "stages": retrain_stages}
            )
        _record_outcome(timeline, name, outcome, background)
        if outcome.status != "skipped":
            outcomes.append(f"{name}: v{outcome.version} {outcome.status}")
    ctx.run_dir.joinpath("timeline.txt").write_text(timeline.render() + "\n")
    text = "\n".join(["", "closed loop timeline", timeline.render(), "", _accuracy_table(accuracy, first)])
    print(text, flush=True)
    return {
        "months": len(loop.replay_months),
        "retrains": sum(1 for r in timeline.rows if r[1] == "retrain"),
        "champion": f"v{_champion(registry, model, alias)}",
        "retrain_outcomes": "; ".join(outcomes) or "none",
        "timeline": str(ctx.run_dir / "timeline.txt"),
    }


def _record_outcome(timeline: Timeline, name: str, outcome: Any, background: Any) -> None:
    if outcome.status == "skipped":
        timeline.add(name, "no retrain", outcome.reason)
        return
    for decision in outcome.decisions:
        if decision.fired:
            timeline.add(name, f"trigger {decision.trigger}", decision.reason)
    evaluation = outcome.figures.get("evaluation") or {}
    gate = ""
    if evaluation:
        metrics = evaluation.get("metrics") or {}
        champ = evaluation.get("champion") or {}
        auc = next((v for k, v in metrics.items() if k.endswith("/auc")), None)
        champ_auc = next((v for k, v in champ.items() if k.endswith("/auc")), None)
        gate = f"; gate {'passed' if evaluation.get('passed') else 'FAILED'}: AUC {auc or float('nan'):.3f}"
        if champ_auc is not None:
            gate += f" vs champion v{champ.get('version')} {champ_auc:.3f} on the same rows"
    timeline.add(
        name,
        "retrain",
        f"job {outcome.run_id} on {outcome.data_version}: v{outcome.version} "
        f"({outcome.figures.get('seconds', 0):.0f} s){gate}",
    )
    rollout = outcome.figures.get("rollout") or {}
    extra = ""
    figures = rollout.get("figures") or {}
    if figures.get("candidate_mean_probability") is not None:
        extra = (
            f" [candidate mean p {figures['candidate_mean_probability']:.3f} vs champion "
            f"{figures.get('champion_mean_probability') or float('nan'):.3f}, "
            f"{figures.get('candidate_requests')} candidate requests]"
        )
    timeline.add(
        name,
        outcome.status.replace("_", " "),
        f"{outcome.reason}{extra}; background traffic {background.requests} requests, "
        f"{background.errors} errors, served by {background.served_by()}",
    )


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else float("nan")


def _accuracy_table(rows: list[dict[str, Any]], first: str) -> str:
    """Live accuracy and AUC per month (the monitor's, from feedback) beside what the original model
    scores on the same flights: a month's figures move with its delays, the comparison does not."""
    nan = float("nan")
    lines = [
        f"live accuracy / AUC (monitor: served answers joined to feedback) vs v{first}, the original model, "
        "on the same flights",
        f"{'month':<6} {'serving':<8} {'live acc':>9} {'live AUC':>9} {'labelled':>9} "
        f"{f'v{first} acc':>9} {f'v{first} AUC':>9}",
    ]
    for row in rows:
        acc, auc = row.get("live_accuracy"), row.get("live_auc")
        lines.append(
            f"{row['month']:<6} {'v' + row['version']:<8} {acc if acc is not None else nan:>9.3f} "
            f"{auc if auc is not None else nan:>9.3f} {row.get('labelled', 0):>9,} "
            f"{row['original']['accuracy']:>9.3f} {row['original']['auc']:>9.3f}"
        )
    before = [r for r in rows if r["version"] == first]
    after = [r for r in rows if r["version"] != first]
    for r in rows:
        r["original_accuracy"], r["original_auc"] = r["original"]["accuracy"], r["original"]["auc"]
    lines.append("")
    if before:
        lines.append(
            f"before retraining (v{first} serving, {len(before)} month(s)): live accuracy "
            f"{_mean(before, 'live_accuracy'):.3f}, AUC {_mean(before, 'live_auc'):.3f}"
        )
    if after:
        versions = ", ".join(sorted({f"v{r['version']}" for r in after}))
        lines.append(
            f"after retraining ({versions} serving, {len(after)} month(s)): live accuracy "
            f"{_mean(after, 'live_accuracy'):.3f}, AUC {_mean(after, 'live_auc'):.3f}; v{first} on the same "
            f"flights: accuracy {_mean(after, 'original_accuracy'):.3f}, "
            f"AUC {_mean(after, 'original_auc'):.3f}"
        )
    else:
        lines.append(
            "after retraining: no retrained version was promoted; the original champion kept serving"
        )
    lines.append(
        "(accuracy follows each month's share of on-time flights: the models rarely predict a delay above "
        "0.5; AUC measures how well they rank flights)"
    )
    return "\n".join(lines)
