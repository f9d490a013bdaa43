"""The baselines' runners (benchmarks/baselines/) say what they did in one JSON object, also without
their venv: each runner started with a Python that lacks its packages (ours: no Evidently, pandera or
MLServer in .venv) prints ``{"skipped": ...}`` and exits 0, so a benchmark run without ``make
baselines`` still reports its own figures. The runs through the real baselines venv are the benchmarks'
own (a manual check, not CI: the venv is not installed there)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, load_script

b = load_script("benchmarks/baselines/__init__.py", "bench_baselines")


def _runner_json(runner: str, args: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "baselines" / runner), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()  # one JSON object, nothing else on stdout
    return json.loads(line)


def test_each_runner_prints_skipped_json_without_its_packages(tmp_path: Path) -> None:
    args = {
        "evidently_drift.py": ["--input", str(tmp_path)],
        "pandera_validation.py": ["--input", str(tmp_path), "--rules", str(tmp_path / "rules.json")],
        "mlserver_serve.py": [
            "--input",
            str(tmp_path),
            "--http-port",
            "1",
            "--grpc-port",
            "2",
            "--metrics-port",
            "3",
        ],
    }
    assert sorted(args) == sorted(b.RUNNERS)
    for runner, runner_args in args.items():
        result = _runner_json(runner, runner_args)
        assert set(result) == {"skipped"}, (runner, result)
        assert result["skipped"].startswith("make baselines"), result
        assert sys.executable in result["skipped"], result  # says which Python lacked the package
    assert list(tmp_path.iterdir()) == []  # a skipped MLServer runner wrote no settings

    # Through the benchmarks' helpers: a Python without the packages, and no venv at all.
    assert "skipped" in b.run("evidently_drift.py", ["--input", str(tmp_path)], sys.executable)
    assert b.run("pandera_validation.py", [], None) == b.SKIPPED
    assert b.seconds(b.SKIPPED) is None and "skipped" in b.note("pandera", b.SKIPPED)
    server, info = b.start_mlserver(sys.executable, tmp_path, (1, 2, 3), 0)
    assert server is None and "skipped" in info
    assert b.start_mlserver(None, tmp_path, (1, 2, 3), 0) == (None, b.SKIPPED)


def test_options_and_output_that_cannot_be_read_are_refused(tmp_path: Path) -> None:
    assert b.python("none") is None
    with pytest.raises(FileNotFoundError, match="make baselines"):
        b.python(str(tmp_path / "no-python"))
    with pytest.raises(ValueError, match="no JSON object"):
        b.parse_result("Traceback (most recent call last):\n")
    assert b.parse_result('{"seconds": 1.5}\n') == {"seconds": 1.5}
    assert b.seconds({"seconds": 2}) == 2.0
    v2 = json.loads(
        b.v2_body(b'{"records": [{"hour": 5, "carrier": null}]}', {"hour": "float", "carrier": "string"})
    )
    assert v2 == {
        "inputs": [
            {"name": "hour", "shape": [1, 1], "datatype": "FP32", "data": [5]},
            {"name": "carrier", "shape": [1, 1], "datatype": "BYTES", "data": [""]},
        ]
    }
