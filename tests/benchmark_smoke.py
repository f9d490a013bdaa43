"""Every benchmark in benchmarks/ runs at ``--smoke`` size and prints its JSON figures (DESIGN §8).

Nothing else ran the benchmarks, so they rotted unnoticed (``serve_vs_raw`` died on a ``TypeError``,
``pipeline`` on a config enum it could not write as JSON). Each runs here as users run it, ``python
benchmarks/<name>.py --smoke``, in a fresh process with its own local Ray: it must exit 0 and print at
least one figure line with the section's keys, a finite ``ours``, and no target judged (smoke sizes
measure start-up, not the code). Benchmarks are found by file name, so a new one is covered without
editing this module.

One test per benchmark, in three modules that pytest-xdist's ``--dist loadfile`` can hand to different
workers (all together 488 s on a quiet 2-core machine, in one module they held one worker for 980 s of a
loaded suite): tests/integration/test_benchmarks_smoke_serving.py (the serving benchmarks, in a row so
that ``router`` trains the small model that ``serve_vs_raw`` and ``prediction_log`` load from its cache),
test_benchmarks_smoke_pipeline.py (the two that run the quickstart) and test_benchmarks_smoke.py (every
other benchmark, a new one included). This module holds what they share.
Every process a benchmark leaves behind (Ray's raylet and workers, a uvicorn or redis-server child) is
stopped by its id: each benchmark runs in a session of its own, and whatever is still in that session
when the benchmark is done is terminated.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

KEYS = ["benchmark", "metric", "ours", "baseline", "unit", "ratio", "target", "meets"]
# Under the suite's 900 s per test, with room for a loaded machine (train took 210 s at load 20 here).
TIMEOUT_S = 800
FOUND = sorted(p.stem for p in (REPO / "benchmarks").glob("[a-z]*.py"))
# router first: it trains the model the other two serving benchmarks load from its cache.
SERVING = ["router", "serve_vs_raw", "prediction_log", "batch_score", "online_lookup"]
PIPELINE = ["pipeline", "scaling"]
OTHERS = [name for name in FOUND if name not in SERVING + PIPELINE]


def _in_session(session: int) -> list[int]:
    """Every process in ``session`` (Ray's processes change their group, not their session)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == session:  # fields after the name: state, ppid, pgrp, session
                found.append(int(entry))
    return found


def _stop_session(session: int) -> list[int]:
    """Terminate what is left of ``session``, by process id; kill what outlives 10 s. Returns the ids."""
    left = _in_session(session)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _in_session(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _in_session(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def run_smoke(name: str) -> tuple[int, str, str]:
    """``benchmarks/<name>.py --smoke`` in a session of its own: (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "RAY_ADDRESS")}
    child = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--smoke"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _stop_session(child.pid)
        out, err = child.communicate()
        pytest.fail(f"{name} --smoke ran past {TIMEOUT_S} s; its last output:\n{err[-3000:]}")
    finally:
        _stop_session(child.pid)
    return child.returncode, out, err


def figure_lines(stdout: str) -> list[dict]:
    """The JSON objects of stdout. Ray's raylet may print a line there too (a Serve controller's
    retried shutdown, seen once), so other lines are not refused: a line that opens like JSON must be."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def check_smoke(name: str) -> None:
    """Run ``name`` at smoke size and check what it printed (the body of every smoke test)."""
    started = time.monotonic()
    code, out, err = run_smoke(name)
    print(f"{name} --smoke: {time.monotonic() - started:.1f} s")  # shown with -rP: the module's budget
    assert code == 0, f"{name} --smoke exited {code}:\n{err[-4000:]}"
    figures = figure_lines(out)
    assert figures, f"{name} --smoke printed no figure:\n{out}\n{err[-2000:]}"
    for figure in figures:
        assert list(figure) == KEYS, figure
        assert figure["benchmark"] == name, figure
        assert isinstance(figure["metric"], str) and isinstance(figure["unit"], str), figure
        assert isinstance(figure["ours"], int | float) and math.isfinite(figure["ours"]), figure
        for key in ("baseline", "ratio"):
            assert figure[key] is None or math.isfinite(figure[key]), figure
        assert figure["target"] is None and figure["meets"] is None, f"smoke size judged a target: {figure}"
    summaries = [line for line in out.splitlines() if line.startswith(f"{name}: ")]
    assert summaries and "smoke: not judged" in summaries[-1], out
