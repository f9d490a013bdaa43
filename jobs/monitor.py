"""Monitor a served model from its prediction log: feature and prediction drift, live accuracy, latency.

    python jobs/monitor.py [--since ISO] [--until ISO] [--model NAME[@ALIAS|@VERSION]] [overrides ...]

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
import logging
import sys
import time
from typing import Any


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="jobs/monitor.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--since", help="window start, ISO 8601 (default: until - monitor.window)")
    parser.add_argument("--until", help="window end, ISO 8601, exclusive (default: now)")
    parser.add_argument("--model", help="NAME, NAME@ALIAS or NAME@VERSION (default: monitor.model)")
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("-")]
    if unknown:
        parser.error(f"unrecognized option(s): {' '.join(unknown)}")
    return args, overrides


class UsageError(Exception):
    """Bad overrides: the message names the key and the valid ones."""


def _compose(overrides: list[str]) -> Any:  # -> DictConfig
    from hydra.errors import ConfigCompositionException

    from raymlops.config import compose

    try:
        return compose(overrides)
    except ConfigCompositionException as exc:
        from raymlops.config.overrides import misspelt_key_message

        raise UsageError(misspelt_key_message(overrides) or str(exc)) from None


def run_once(cfg: Any, args: argparse.Namespace, exporter: Any = None) -> Any:  # -> MonitorReport
    from raymlops.monitoring.monitor import run_monitor, write_outputs

    report = run_monitor(cfg, model=args.model, since=args.since, until=args.until)
    paths = write_outputs(report, cfg.monitor.out_dir)
    if exporter is not None:
        exporter.update(report)
    print(report.summary(), flush=True)
    print(f"report: {paths['report']}  metrics: {paths['prom']}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raymlops.errors import RayMLOpsError

    try:
        cfg = _compose(overrides)
        from raymlops.security.roles import authorize

        authorize(cfg.security, "monitor.run", str(cfg.monitor.model))
        monitor = cfg.monitor
        if monitor.serve_port is None:
            report = run_once(cfg, args)
            return 0 if report.ok else 1
        from raymlops.monitoring.exporter import MonitorExporter

        exporter = MonitorExporter()
        port = exporter.serve(int(monitor.serve_port), str(monitor.serve_host))
        print(f"serving the monitor's gauges on http://{monitor.serve_host}:{port}/metrics", flush=True)
        # A loop over the trailing window: a fixed --since/--until would report the same window forever.
        args.since = args.until = None
        while True:
            run_once(cfg, args, exporter)
            time.sleep(float(monitor.interval_s))
    except (UsageError, RayMLOpsError) as exc:
        print(f"monitor.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
