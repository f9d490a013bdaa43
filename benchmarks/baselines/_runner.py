"""What every baseline runner shares: it runs in the baselines venv (``make baselines``), not ours.

A runner is a child process of one of our benchmarks: it reads the input the benchmark wrote (parquet
files, an ONNX graph), times the baseline on it and prints ONE JSON object on stdout. Where the
baseline's packages are missing it prints ``{"skipped": ...}`` instead and exits 0, so that a benchmark
run without the venv still reports its own figures. Only the standard library is imported at module
level: the runner must be able to say "skipped" from any Python.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

SKIP_HINT = "make baselines"


def missing(*modules: str) -> str | None:
    """The first of ``modules`` this Python cannot import, or None."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


def skip_unless_importable(*modules: str) -> None:
    """Print the skipped JSON and exit 0 if one of ``modules`` is missing here."""
    absent = missing(*modules)
    if absent is not None:
        say({"skipped": f"{SKIP_HINT} ({absent} is not importable by {sys.executable})"})
        sys.exit(0)


def say(result: dict[str, Any]) -> None:
    print(json.dumps(result, allow_nan=False), flush=True)


def log(message: str) -> None:
    print(f"[baseline] {message}", file=sys.stderr, flush=True)


def arguments(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--input", required=True, help="the folder the benchmark wrote the input into")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--warmup", type=int, default=0)
    return p


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int) -> tuple[float, list[float]]:
    """The median wall seconds of ``repeats`` calls after ``warmup`` untimed ones, and the samples."""
    for _ in range(warmup):
        fn()
    samples = []
    for index in range(max(1, repeats)):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
        log(f"repeat {index + 1}/{repeats}: {samples[-1]:.3f} s")
    return statistics.median(samples), [round(s, 4) for s in samples]
