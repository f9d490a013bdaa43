"""``raymlops monitor``: a served model's drift, live accuracy and latency, from its prediction log.

    raymlops monitor [--since ISO] [--until ISO] [--model NAME[@ALIAS|@VERSION]] [overrides ...]

    --since / --until  the window [since, until) of logged requests (ISO 8601; naive = UTC).
                       Default: until = now, since = until - monitor.window (1d).
    --model            NAME: every version with traffic in the window; NAME@champion or NAME@3: that
                       version only. Default: monitor.model (the registry's model name).
    overrides          the job's Hydra overrides (state_dir=..., env=prod, monitor.psi_threshold=0.3,
                       monitor.log_root=s3://..., ...), so the same registry and log the pipeline and
                       the router use are read.

Prints a short summary and writes, under monitor.out_dir (<state_dir>/monitor):
<model>/report.json (and history/report-<time>.json), <model>/summary.txt and the Prometheus textfile
textfile/raymlops_monitor_<model>.prom (for node_exporter's textfile collector).

With monitor.serve_port=PORT it also serves the gauges on http://<serve_host>:PORT/metrics and runs
again every monitor.interval_s over the trailing monitor.window, until interrupted.

Exit status: 0 no alert; 1 an alert condition (a feature or the predictions drifted, or live accuracy
or AUC fell more than the allowed drop below the version's test metrics); 2 bad arguments, config or
model (the message names it).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

__all__ = ["add_monitor_command", "run_monitor_command"]


def add_monitor_command(sub: argparse._SubParsersAction) -> None:
    monitor = sub.add_parser(
        "monitor",
        help="drift, live accuracy and latency of a served model (jobs/monitor.py)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    monitor.add_argument("--since", help="window start, ISO 8601 (default: until - monitor.window)")
    monitor.add_argument("--until", help="window end, ISO 8601, exclusive (default: now)")
    monitor.add_argument("--model", help="NAME, NAME@ALIAS or NAME@VERSION (default: monitor.model)")
    monitor.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job")


def run_once(cfg: Any, args: argparse.Namespace, exporter: Any = None) -> Any:  # -> MonitorReport
    from raymlops.monitoring.monitor import run_monitor, write_outputs

    report = run_monitor(cfg, model=args.model, since=args.since, until=args.until)
    paths = write_outputs(report, cfg.monitor.out_dir)
    if exporter is not None:
        exporter.update(report)
    print(report.summary(), flush=True)
    print(f"report: {paths['report']}  metrics: {paths['prom']}", flush=True)
    return report


def run_monitor_command(args: argparse.Namespace) -> int:
    from raymlops.cli.overrides import compose_overrides

    cfg = compose_overrides(args.overrides)
    monitor = cfg.monitor
    try:
        if monitor.serve_port is None:
            return 0 if run_once(cfg, args).ok else 1
        from raymlops.monitoring.exporter import MonitorExporter

        exporter = MonitorExporter()
        port = exporter.serve(int(monitor.serve_port), str(monitor.serve_host))
        print(f"serving the monitor's gauges on http://{monitor.serve_host}:{port}/metrics", flush=True)
        # A loop over the trailing window: a fixed --since/--until would report the same window forever.
        args.since = args.until = None
        while True:
            run_once(cfg, args, exporter)
            time.sleep(float(monitor.interval_s))
    except KeyboardInterrupt:
        return 0
