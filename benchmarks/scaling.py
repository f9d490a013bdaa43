"""scaling: the quickstart on one node vs on a head and two worker nodes, with the same cores.

Ours: a ``ray.cluster_utils.Cluster`` on this machine: a head with no CPUs (it schedules and runs the
driver, as a cluster's head pod does) and two worker nodes with one CPU each. Baseline: one embedded
local Ray with two CPUs. Both run ``run_pipeline`` with the quickstart's stages up to ``register``
(``serve.enabled=false``: a deployment would outlive the run) on the same Delta table, seeded before
timing. Each run is a fresh child process, so each pays its own Ray start-up, which is left out of the
figure: only ``run_pipeline`` is timed.

Same cores, so this measures what spreading over nodes costs (object transfers between the nodes'
object stores, scheduling across raylets, one more set of Ray processes), not speed-up. ``ratio`` =
one node's seconds / the cluster's (higher is better); target >= 0.85. Per-stage figures say where the
time goes.

``--quick``: a 10% sample, one epoch, the AUC gate at 0.5, one timed run per side, no warm-up.
``--smoke``: as ``--quick`` with a 3% sample, the stages up to ``features`` only, and the cluster side
with one worker node of two CPUs (the same seeded table, the same two kinds of Ray set-up, every figure:
what the figures need, at the smallest size that still passes validation's 1,000-row floor). A smoke run
is start-up: each further node and Train worker is one more set of processes to start, not more code run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import Figure, emit, log, parser, start_ray, summary

NAME = "scaling"
STAGES = ["ingest", "validate", "features", "train", "evaluate", "export", "register"]
OBJECT_STORE = 300 * 1024**2  # per node on the cluster side; start_ray gives the single node its default


def _size_overrides(size: str) -> list[str]:
    """The pipeline overrides of ``size`` (full | quick | smoke)."""
    if size == "smoke":
        one_worker = ["trainer.scaling.num_workers=1", "trainer.scaling.cpus_per_worker=1.0"]
        return ["data.sample_fraction=0.03", "model.epochs=1", "evaluate.gates=['test/auc>=0']", *one_worker]
    if size == "quick":
        return ["data.sample_fraction=0.1", "model.epochs=1", "evaluate.gates=['test/auc>=0.5']"]
    return []


def _size(args: argparse.Namespace) -> str:
    return "smoke" if args.smoke else "quick" if args.quick else "full"


def _child(mode: str, state: str, table: str, size: str) -> None:
    """One pipeline run on a fresh Ray (``mode``: single | cluster); prints its timings as JSON."""
    import os

    import ray

    from raymlops.pipeline.ray_session import TRAIN_HEALTH_CHECK_ENV

    cluster = None

    os.environ[TRAIN_HEALTH_CHECK_ENV] = "0.1"  # as start_ray does for the single node (RAY-NOTES)
    if mode == "cluster":
        from ray.cluster_utils import Cluster

        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": OBJECT_STORE},
        )
        nodes = 1 if size == "smoke" else 2  # the same two CPUs, on one worker node or two
        for _ in range(nodes):
            cluster.add_node(num_cpus=2 // nodes, object_store_memory=OBJECT_STORE)
        cluster.wait_for_nodes()
        # Workers are told the address, as start_local_ray does (Ray Train's cleaner joins it).
        env = {TRAIN_HEALTH_CHECK_ENV: "0.1", "RAY_ADDRESS": cluster.address}
        ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": env})
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
    else:
        start_ray(num_cpus=2)
    from raymlops.config import compose
    from raymlops.pipeline.runner import run_pipeline

    overrides = [
        "+experiment=quickstart",
        f"state_dir={state}",
        f"data.ref=delta:{table}",
        "serve.enabled=false",
        # smoke: the data stages only (Ray Train's start-up per child was most of a smoke run's minutes;
        # the train stage's figures print as 0 there, and the harness runs every line of its own code)
        f"stages=[{','.join(STAGES[:3] if size == 'smoke' else STAGES)}]",
        "ray.progress_bars=false",
    ]
    cfg = compose(overrides + _size_overrides(size))
    started = time.perf_counter()
    ctx, _ = run_pipeline(cfg)
    total = time.perf_counter() - started
    nodes = len([n for n in ray.nodes() if n["Alive"]])
    print(
        json.dumps({"total": total, "stages": ctx.lineage.get("stage_seconds", {}), "nodes": nodes}),
        flush=True,
    )
    ray.shutdown()  # before the nodes go: a driver outliving them exits 1 (lost objects)
    if cluster is not None:
        cluster.shutdown()


def _seed(table: str) -> None:
    """The Delta table the quickstart's first ingest would write, written here in-process (no Ray, no
    job start-up: the seeding job cost more than a smoke run's two timed pipelines together)."""
    from raymlops.config import compose
    from raymlops.data.seed import open_seeded

    cfg = compose(["+experiment=quickstart", f"data.ref=delta:{table}"]).data
    open_seeded(cfg.ref, cfg.source, cfg.lakefs)


def _run(mode: str, table: str, size: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"scaling-{mode}-") as state:
        args = [sys.executable, __file__, "--child", mode, "--state", state, "--table", table]
        done = subprocess.run(
            args + ([] if size == "full" else [f"--{size}"]), capture_output=True, text=True, timeout=1800
        )
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    log(f"{mode}: {result['total']:.1f} s on {result['nodes']} node(s) {result['stages']}")
    return result


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--child", choices=["single", "cluster"], help=argparse.SUPPRESS)
    p.add_argument("--state", help=argparse.SUPPRESS)
    p.add_argument("--table", help=argparse.SUPPRESS)
    args = p.parse_args()
    size = _size(args)
    if args.child:
        _child(args.child, args.state, args.table, size)
        return
    repeats = args.repeats or (3 if size == "full" else 1)
    warmup = args.warmup if args.warmup is not None else (1 if size == "full" else 0)
    with tempfile.TemporaryDirectory(prefix="scaling-data-") as data:
        table = str(Path(data) / "flights")
        log("seeding the Delta table (untimed)")
        _seed(table)
        for index in range(warmup):
            log(f"warm-up {index + 1}/{warmup}")
            _run("cluster", table, size)
            _run("single", table, size)
        cluster, single = [], []
        for _ in range(repeats):  # alternating, as the harness does
            cluster.append(_run("cluster", table, size))
            single.append(_run("single", table, size))
    figures = [
        Figure(
            NAME,
            "end_to_end_seconds",
            statistics.median(r["total"] for r in cluster),
            statistics.median(r["total"] for r in single),
            "s",
            higher_is_better=False,
            target=0.85,
        )
    ]
    for stage in STAGES:
        figures.append(
            Figure(
                NAME,
                f"stage_seconds.{stage}",
                statistics.median(r["stages"].get(stage, 0.0) for r in cluster),
                statistics.median(r["stages"].get(stage, 0.0) for r in single),
                "s",
                higher_is_better=False,
            )
        )
    for figure in figures:
        emit(figure)
    layout = "1 worker node x 2 CPUs" if size == "smoke" else "2 worker nodes x 1 CPU"
    summary(figures, f"ours = head + {layout}; baseline = 1 node x 2 CPUs")


if __name__ == "__main__":
    main()
