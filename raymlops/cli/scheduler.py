"""``raymlops scheduler``: check the retrain triggers every ``retrain.check_interval_s``; retrain when one
fires.

    raymlops scheduler [--max-checks N] [overrides ...]

    --max-checks N  stop after N checks (default: run until Ctrl-C / SIGTERM)
    overrides       the job's Hydra overrides, passed on to every retrain (+experiment=quickstart,
                    state_dir=..., retrain.schedule='0 3 * * 1', retrain.check_interval_s=600, ...)

The embedded default's scheduler: one long-running process, one line per check. Each check evaluates
every enabled trigger (new data, drift, accuracy drop, the cron ``retrain.schedule``) exactly as the
retrain command does; when one fired and the cooldown allows, it starts ``python -m raymlops retrain``
with the same overrides as a child process (its own embedded Ray, or the cluster of ``RAY_ADDRESS``),
waits for it, and goes on checking. The retrain evaluates the triggers again and writes every audit
record, so a scheduled retrain is audited exactly like a manual one.

Ctrl-C or SIGTERM stops it cleanly: a running retrain is interrupted (SIGINT, as Ctrl-C, repeated every
10 s; killed if it has not exited after 60 s) and waited for. On Kubernetes or with cron, run
``jobs/retrain.py`` on a schedule instead (a CronJob / RayJob, or a crontab line; see the README): the
triggers are the same.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import subprocess
import sys
import threading
import time
from typing import Any

__all__ = ["Scheduler", "add_scheduler_command", "run_scheduler_command"]

RETRAIN = [sys.executable, "-m", "raymlops", "retrain"]  # the child each fired check starts
CHILD_GRACE_S = 60.0
CHILD_REINTERRUPT_S = 10.0


def add_scheduler_command(sub: argparse._SubParsersAction) -> None:
    scheduler = sub.add_parser(
        "scheduler",
        help="check the retrain triggers on an interval; retrain when one fires (jobs/scheduler.py)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scheduler.add_argument("--max-checks", type=int, default=None, help="stop after this many checks")
    scheduler.add_argument("overrides", nargs="*", help="Hydra overrides, passed on to every retrain")


def _say(line: str) -> None:
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ} {line}", flush=True)


class Scheduler:
    """The check loop; ``stop`` (set by a signal) ends it between or during checks."""

    def __init__(self, cfg: Any, overrides: list[str]) -> None:
        self.cfg, self.overrides = cfg, overrides
        self.stop = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None

    def check(self, number: int) -> None:
        from raymlops.loop.retrain import cooldown_reason
        from raymlops.monitoring.triggers import evaluate_triggers, fired
        from raymlops.registry.governance import Governance

        decisions = evaluate_triggers(self.cfg)
        due = fired(decisions)
        if not due:
            reasons = "; ".join(d.line() for d in decisions) or "no trigger enabled"
            _say(f"check {number}: nothing due ({reasons})")
            return
        names = ", ".join(f"{d.trigger} ({d.reason})" for d in due)
        cooling = cooldown_reason(
            self.cfg, Governance.from_config(self.cfg), str(self.cfg.registry.model_name)
        )
        if cooling:
            _say(f"check {number}: fired {names}; not started: {cooling}")
            return
        # Its own session: a Ctrl-C at the terminal reaches the scheduler only, which then interrupts the
        # retrain itself, again only if it is still running 10 s later (an interrupt during the job's
        # clean-up would cut that short).
        self.child = subprocess.Popen([*RETRAIN, *self.overrides], start_new_session=True)
        _say(f"check {number}: fired {names} -> retrain started (pid {self.child.pid})")
        code = self._wait_child()
        meaning = {0: "released or skipped", 1: "no release (rejected, rolled back or failed)"}
        _say(f"check {number}: retrain pid {self.child.pid} exited {code} ({meaning.get(code, 'stopped')})")
        self.child = None

    def _wait_child(self) -> int:
        assert self.child is not None
        while True:
            try:
                return self.child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if not self.stop.is_set():
                    continue
            _say(f"stopping the running retrain (pid {self.child.pid})")
            return self._interrupt_child()

    def _interrupt_child(self) -> int:
        """SIGINT, as Ctrl-C would: Ray's own SIGTERM handler in the child's driver aborts the process,
        a KeyboardInterrupt lets the job audit the interruption and shut its embedded Ray down.

        Repeated every ``CHILD_REINTERRUPT_S`` while the child runs: a KeyboardInterrupt that lands inside
        a finalizer is swallowed by Python ("Exception ignored in ..."), and one that landed in logging's
        lock release left the lock held and the job waiting forever on Ray Data threads (seen ~1 in 4
        runs with SIGINT at the start of the validate stage). Killed after ``CHILD_GRACE_S``.
        """
        assert self.child is not None
        deadline = time.monotonic() + CHILD_GRACE_S
        while True:
            self.child.send_signal(signal.SIGINT)
            left = deadline - time.monotonic()
            try:
                return self.child.wait(timeout=max(0.0, min(CHILD_REINTERRUPT_S, left)))
            except subprocess.TimeoutExpired:
                if left <= CHILD_REINTERRUPT_S:
                    _say(f"retrain pid {self.child.pid} still running after {CHILD_GRACE_S:g} s: killed")
                    self.child.kill()
                    return self.child.wait()
                _say(f"retrain pid {self.child.pid} still running: interrupting it again")

    def run(self, max_checks: int | None) -> None:
        from raymlops.errors import RayMLOpsError

        interval = float(self.cfg.retrain.check_interval_s)
        _say(f"scheduler started: checking the retrain triggers every {interval:g} s")
        number = 0
        while not self.stop.is_set() and (max_checks is None or number < max_checks):
            number += 1
            try:
                self.check(number)
            except RayMLOpsError as exc:  # e.g. the registry briefly unreachable: try again next time
                _say(f"check {number}: failed: {exc}")
            if max_checks is None or number < max_checks:
                self.stop.wait(interval)
        _say(f"scheduler stopped after {number} check(s)")


def run_scheduler_command(args: argparse.Namespace) -> int:
    """The loop; each retrain it starts checks its own role (``retrain.run``)."""
    from raymlops.cli.overrides import compose_overrides
    from raymlops.errors import ConfigError

    cfg = compose_overrides(args.overrides)
    if cfg.retrain.check_interval_s <= 0:
        raise ConfigError("retrain.check_interval_s", f"must be > 0, got {cfg.retrain.check_interval_s}.")
    if cfg.retrain.schedule is not None:
        from raymlops.monitoring.cron import parse_cron

        parse_cron(str(cfg.retrain.schedule))
    scheduler = Scheduler(cfg, list(args.overrides))

    def stop(signum: int, frame: Any) -> None:
        scheduler.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheduler.run(args.max_checks)
    return 0
