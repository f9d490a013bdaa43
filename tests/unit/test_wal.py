"""The prediction log's write-ahead file: a writer process killed with SIGKILL loses no logged row.

A real child process logs rows through ``PredictionLogger`` (flush thresholds that never trigger), says
how many, and is killed with SIGKILL; the next logger over the same root recovers every row into
parquet, exactly as a graceful close would have written them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from raymlops.errors import ConfigError
from raymlops.monitoring.prediction_log import WAL_DIR, PredictionLogger, read_feedback, read_predictions
from raymlops.monitoring.wal import SUFFIX, read_segment, recover_wal
from raymlops.serving.spec import ModelSpec, PredictionLogSettings

REPO = Path(__file__).resolve().parents[2]
SPEC = ModelSpec("flights", "3", "/models/v3/model.onnx", "d1", {"distance": "float", "origin": "string"})
ROWS = 40

_CHILD = textwrap.dedent(
    """
    import sys, numpy as np, pyarrow as pa
    from raymlops.monitoring.feedback import Feedback
    from raymlops.monitoring.prediction_log import PredictionLogger
    from raymlops.serving.spec import ModelSpec
    spec = ModelSpec("flights", "3", "/models/v3/model.onnx", "d1", {"distance": "float", "origin": "string"})
    logger = PredictionLogger(sys.argv[1], flush_rows=100_000, flush_interval_s=3600, fsync_interval_ms=50)
    for i in range(int(sys.argv[2])):
        features = pa.table({"distance": [100.0 + i, float("nan")], "origin": ["JFK", None]})
        logger.log(spec, "served", f"req-{i}", features, np.array([i / 100, 0.75], np.float32), 1.5)
    logger.log_feedback([Feedback("req-0", 1.0, 0, "flights")])
    print("logged", flush=True)
    sys.stdin.read()  # killed here, rows still buffered
    """
)


def _kill_child_after_logging(root: Path, rows: int) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root), str(rows)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "logged"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()


def test_rows_of_a_killed_writer_are_recovered_by_the_next_start(tmp_path: Path) -> None:
    root = tmp_path / "log"
    _kill_child_after_logging(root, ROWS)
    assert read_predictions(root, "flights").num_rows == 0  # nothing reached parquet before the kill
    segments = sorted((root / WAL_DIR / "predictions").glob(f"*{SUFFIX}"))
    assert len(segments) == 1
    header, chunks = read_segment(segments[0])
    assert header["codec"].endswith(":ScoredRequest") and len(chunks) == ROWS

    # What a graceful writer makes of the same rows, for comparison.
    expected_root = tmp_path / "graceful"
    graceful = PredictionLogger(str(expected_root), flush_rows=100_000, flush_interval_s=3600, wal=False)
    for chunk in chunks:
        graceful.log(SPEC, "served", chunk.prediction_id, chunk.features, chunk.probabilities, 1.5)
    graceful.close()

    restarted = PredictionLogger(str(root))  # a new replica's start recovers, on a thread of its own
    assert restarted.recovery is not None
    restarted.recovery.join(timeout=30)
    assert restarted.recovered_rows == 2 * ROWS + 1  # two rows per request, one feedback row
    assert not list((root / WAL_DIR).rglob(f"*{SUFFIX}")), "recovered segments must be deleted"
    got = read_predictions(root, "flights")
    want = read_predictions(expected_root, "flights")
    assert got.num_rows == 2 * ROWS
    assert sorted(set(got["prediction_id"].to_pylist())) == sorted(f"req-{i}" for i in range(ROWS))
    assert got.schema == want.schema
    for name in got.column_names:  # repr: NaN features compare equal
        if name != "ts":
            assert [repr(v) for v in got[name].to_pylist()] == [repr(v) for v in want[name].to_pylist()], name
    assert got["probability"].to_pylist()[:2] == [float(np.float32(0.0)), float(np.float32(0.75))]
    assert read_feedback(root, "flights").num_rows == 1
    # Recovering again finds nothing; the files keep their deterministic names (no duplicates).
    assert recover_wal(root / WAL_DIR / "predictions", root / "predictions") == 0
    assert read_predictions(root, "flights").num_rows == 2 * ROWS


def test_a_live_writer_is_left_alone_and_a_torn_tail_is_skipped(tmp_path: Path) -> None:
    live = PredictionLogger(str(tmp_path), flush_rows=100_000, flush_interval_s=3600, fsync_interval_ms=0)
    features = pa.table({"distance": [1.0], "origin": ["EWR"]})
    for i in range(3):
        live.log(SPEC, "served", f"p{i}", features, np.array([0.5], np.float32), 1.0)
    wal_dir = tmp_path / WAL_DIR / "predictions"
    assert recover_wal(wal_dir, tmp_path / "predictions") == 0  # flocked by its live writer
    assert live.stats()["written_rows"] == 0

    # A copy of its segment with half a frame at the end: a dead writer's torn last write.
    (segment,) = wal_dir.glob(f"*{SUFFIX}")
    data = segment.read_bytes()
    (wal_dir / f"dead-writer.000000{SUFFIX}").write_bytes(data + data[-30:-10])
    assert recover_wal(wal_dir, tmp_path / "predictions") == 3
    live.close()  # writes its own 3 rows and deletes its segment
    assert not list(wal_dir.glob(f"*{SUFFIX}"))
    log = read_predictions(tmp_path, "flights")
    assert log.num_rows == 6 and sorted(set(log["prediction_id"].to_pylist())) == ["p0", "p1", "p2"]


def test_durability_settings_are_checked() -> None:
    settings = PredictionLogSettings("/tmp/x", fsync_interval_ms=0, fsync_rows=10)
    assert PredictionLogSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(ConfigError, match="fsync_interval_ms"):
        PredictionLogSettings("/tmp/x", fsync_interval_ms=-1)
    with pytest.raises(ConfigError, match="fsync_rows"):
        PredictionLogSettings.from_dict({"root": "/tmp/x", "fsync_rows": 1.5})
    with pytest.raises(ConfigError, match="wal"):
        PredictionLogSettings("/tmp/x", wal="yes")  # type: ignore[arg-type]
