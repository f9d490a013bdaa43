"""ParquetLog on a real local filesystem, and the prediction/feedback log helpers (no Ray)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from raymlops.errors import ConfigError, RequestError
from raymlops.monitoring.parquet_log import ParquetLog, read_log
from raymlops.monitoring.prediction_log import (
    FEEDBACK_SCHEMA,
    Feedback,
    PredictionLogger,
    feedback_table,
    join_feedback,
    parse_feedback,
    read_feedback,
    read_predictions,
)
from raymlops.serving.spec import ModelSpec

TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([("id", pa.int64()), ("model", pa.string()), ("ts", TS), ("value", pa.float64())])
DAY1 = dt.datetime(2026, 11, 25, 23, 59, 59, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 11, 26, 0, 0, 1, tzinfo=dt.UTC)


def records(start: int, n: int, model: str = "a", ts: dt.datetime = DAY1) -> list[dict]:
    return [{"id": i, "model": model, "ts": ts, "value": i / 2} for i in range(start, start + n)]


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def read_ids(root: Path) -> list[int]:
    table = read_log(root, ("model", "date"))
    return [] if table is None else sorted(table["id"].to_pylist())


def make(root: Path, **options) -> ParquetLog:
    settings = {"partition_cols": ("model", "date"), "flush_rows": 10_000, "flush_interval_s": 60.0}
    return ParquetLog(root, schema=SCHEMA, **{**settings, **options})


def test_records_appear_after_flush_not_before(tmp_path: Path) -> None:
    log = make(tmp_path)
    try:
        log.append(records(0, 5))
        log.append(pa.Table.from_pylist(records(5, 3), schema=SCHEMA))
        assert parquet_files(tmp_path) == [] and log.stats()["pending_rows"] == 8  # only buffered
        assert log.flush() == 8
        assert read_ids(tmp_path) == list(range(8))
        assert log.flush() == 0  # nothing left
        table = read_log(tmp_path, ("model", "date"))
        assert table is not None
        assert table.column("value").to_pylist() == [i / 2 for i in range(8)]
        assert table.schema.field("ts").type == TS
    finally:
        log.close()


def test_background_thread_flushes_by_rows_and_by_interval(tmp_path: Path) -> None:
    by_rows = make(tmp_path / "rows", flush_rows=20)
    by_time = make(tmp_path / "time", flush_interval_s=0.2)
    try:
        by_rows.append(records(0, 25))
        by_time.append(records(0, 3))
        deadline = time.monotonic() + 10
        while (read_ids(tmp_path / "rows") == [] or read_ids(tmp_path / "time") == []) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert read_ids(tmp_path / "rows") == list(range(25))
        assert read_ids(tmp_path / "time") == [0, 1, 2]
    finally:
        by_rows.close()
        by_time.close()


def test_close_writes_everything_and_is_idempotent(tmp_path: Path) -> None:
    log = make(tmp_path)
    for start in range(0, 1000, 7):
        log.append(records(start, 7))
    log.close()
    log.close()
    assert read_ids(tmp_path) == list(range(1001))  # 143 appends of 7 rows
    assert log.stats()["pending_rows"] == 0 and log.closed
    # A straggler after close is written at once rather than lost.
    log.append(records(5000, 2))
    assert 5000 in read_ids(tmp_path) and 5001 in read_ids(tmp_path)


def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    log = make(tmp_path, flush_rows=200, flush_interval_s=0.05)
    threads_n, per_thread = 8, 300

    def writer(t: int) -> None:
        for i in range(per_thread):
            n = t * per_thread + i
            if i % 2:
                log.append(records(n, 1))
            else:
                log.append(pa.Table.from_pylist(records(n, 1), schema=SCHEMA))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert read_ids(tmp_path) == list(range(threads_n * per_thread))
    assert log.stats()["written_rows"] == threads_n * per_thread


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    log = make(tmp_path, flush_rows=50, flush_interval_s=0.01)
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                for path in parquet_files(tmp_path):  # every visible file is whole
                    assert not path.name.startswith(".")
                    pq.read_metadata(path)
                seen.append(len(read_ids(tmp_path)))
            except FileNotFoundError:
                continue
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for start in range(0, 3000, 50):
            log.append(records(start, 50))
            time.sleep(0.002)
    finally:
        log.close()
        stop.set()
        thread.join()
    assert errors == []
    assert len(seen) > 3 and seen == sorted(seen)  # only ever grows, by whole files
    assert read_ids(tmp_path) == list(range(3000))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_hive_partitions_by_model_and_utc_date(tmp_path: Path) -> None:
    log = make(tmp_path, name_prefix="replica-1")
    log.append(records(0, 2, "a", DAY1) + records(2, 3, "b/c", DAY2) + records(5, 1, "a", DAY2))
    log.close()
    relative = sorted(str(p.relative_to(tmp_path)) for p in parquet_files(tmp_path))
    assert [r.rsplit("/", 1)[0] for r in relative] == [
        "model=a/date=2026-11-25",
        "model=a/date=2026-11-26",
        "model=b%2Fc/date=2026-11-26",  # values are URI-encoded, as pyarrow's hive reader expects
    ]
    assert all(r.rsplit("/", 1)[1].startswith("part-replica-1-") for r in relative)
    # Partition columns live in the directory names only.
    assert pq.read_schema(parquet_files(tmp_path)[0]).names == ["id", "ts", "value"]
    table = read_log(tmp_path, ("model", "date"), partition_filter=ds.field("model") == "b/c")
    assert table is not None and sorted(table["id"].to_pylist()) == [2, 3, 4]
    assert set(table["date"].to_pylist()) == {"2026-11-26"}


def test_failed_write_keeps_rows_for_the_next_try(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "model=a"
    blocker.write_text("a file where the partition directory should go")
    log = make(tmp_path)
    try:
        log.append(records(0, 4))
        assert log.flush() == 0
        stats = log.stats()
        assert stats["pending_rows"] == 4 and stats["failed_writes"] == 1 and stats["last_error"]
        assert "write failed, keeping the rows" in caplog.text
        blocker.unlink()
        assert log.flush() == 4
        assert read_ids(tmp_path) == [0, 1, 2, 3]
    finally:
        log.close()


def test_full_buffer_drops_the_oldest_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "model=a").write_text("blocks every write")
    log = make(tmp_path, flush_rows=5, max_buffer_rows=10)
    try:
        for start in range(0, 25, 5):
            log.append(records(start, 5))
        log.flush()
        stats = log.stats()
        assert stats["dropped_rows"] == 15 and stats["pending_rows"] == 10
        assert "buffer full, dropping the oldest rows" in caplog.text
        (tmp_path / "model=a").unlink()
        log.flush()
        assert read_ids(tmp_path) == list(range(15, 25))  # the newest survived
    finally:
        log.close()


def test_rows_that_do_not_fit_the_schema_are_rejected_alone(tmp_path: Path) -> None:
    log = make(tmp_path)
    log.append(records(0, 2))
    log.append(pa.table({"id": [9], "unknown": [1]}))
    log.append([{"id": "not a number", "model": "a", "ts": DAY1}])
    log.append(records(2, 1))
    log.close()
    assert read_ids(tmp_path) == [0, 1, 2]
    assert log.stats()["rejected_rows"] == 2


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"flush_rows": 0}, "flush_rows"),
        ({"flush_interval_s": 0}, "flush_interval_s"),
        ({"max_buffer_rows": 5, "flush_rows": 10}, "max_buffer_rows"),
        ({"partition_cols": ("nope",)}, "not a schema column"),
        ({"name_prefix": ".hidden"}, "name_prefix"),
        ({"time_column": "value"}, "timestamp column"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path: Path, options: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        make(tmp_path, **options)


# ---- the prediction and feedback logs -----------------------------------------------------------

SPEC = ModelSpec("flights", "1", "/m.onnx", "d", {"distance": "float", "origin": "string"}, threshold=0.5)


def test_prediction_logger_writes_the_documented_schema(tmp_path: Path) -> None:
    logger = PredictionLogger(str(tmp_path), flush_rows=1000, flush_interval_s=60)
    features = pa.table({"distance": pa.array([1.5, None]), "origin": pa.array(["JFK", None])})
    logger.log(SPEC, "served", "p1", features, np.asarray([0.25, 0.75], np.float32), 3.5)
    other = ModelSpec("flights", "2", "/m2.onnx", "d", {"hour": "float"}, threshold=0.2)
    logger.log(other, "shadow", "p1", pa.table({"hour": [7.0, 8.0]}), np.asarray([0.1, 0.3], np.float32), 1)
    logger.close()
    table = read_predictions(tmp_path, "flights")
    assert table.schema.names == [
        "prediction_id",
        "row",
        "ts",
        "model",
        "version",
        "route",
        "probability",
        "label",
        "latency_ms",
        "f_distance",
        "f_origin",
        "f_hour",
    ]
    assert table.schema.field("row").type == pa.int32() and table.schema.field("label").type == pa.int8()
    rows = {(r["route"], r["row"]): r for r in table.to_pylist()}
    assert rows[("served", 1)]["probability"] == float(np.float32(0.75)) and rows[("served", 1)]["label"] == 1
    assert rows[("served", 0)]["f_distance"] == 1.5 and rows[("served", 1)]["f_origin"] is None
    assert rows[("served", 0)]["f_hour"] is None and rows[("shadow", 1)]["f_hour"] == 8.0
    assert rows[("shadow", 1)]["label"] == 1  # version 2's own threshold
    assert rows[("shadow", 0)]["version"] == "2" and rows[("served", 0)]["latency_ms"] == 3.5
    assert {p.parent.parent.name for p in (tmp_path / "predictions").rglob("*.parquet")} == {"model=flights"}
    assert read_predictions(tmp_path, "other").num_rows == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert read_predictions(tmp_path, "flights", since=later).num_rows == 0
    assert read_predictions(tmp_path, "flights", until=later.isoformat()).num_rows == 4


def test_retain_closes_logs_of_versions_that_left(tmp_path: Path) -> None:
    logger = PredictionLogger(str(tmp_path), flush_rows=1000, flush_interval_s=60)
    features = pa.table({"distance": [1.0], "origin": ["JFK"]})
    logger.log(SPEC, "served", "p1", features, np.asarray([0.5]), 1.0)
    logger.retain([])  # version 1 left: its rows are written now
    assert read_predictions(tmp_path, "flights").num_rows == 1
    logger.log(SPEC, "served", "p2", features, np.asarray([0.5]), 1.0)  # a straggler reopens it
    logger.close()
    assert read_predictions(tmp_path, "flights")["prediction_id"].to_pylist() == ["p1", "p2"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{", 400, "not valid JSON"),
        (b"[]", 422, "feedback is empty"),
        (b'"x"', 422, "got a JSON str"),
        (b'{"outcome": 1}', 422, "prediction_id must be"),
        (b'{"prediction_id": "", "outcome": 1}', 422, "prediction_id must be"),
        (b'{"prediction_id": "a"}', 422, "outcome is missing"),
        # An outcome of any task is a JSON scalar (a bool, a number, a class value); nothing else.
        (b'{"prediction_id": "a", "outcome": [1]}', 422, "outcome must be a JSON scalar"),
        (b'{"prediction_id": "a", "outcome": {"y": 1}}', 422, "outcome must be a JSON scalar"),
        (b'{"prediction_id": "a", "outcome": null}', 422, "got null"),
        (b'{"prediction_id": "a", "outcome": ""}', 422, "non-empty string"),
        (b'{"prediction_id": "a", "outcome": NaN}', 422, "finite"),
        (b'{"prediction_id": "a", "outcome": 1, "row": -1}', 422, "row must be"),
        (b'{"prediction_id": "a", "outcome": 1, "row": 1.5}', 422, "row must be"),
        (b'{"prediction_id": "a", "outcome": 1, "model": 3}', 422, "model must be"),
        (b'{"prediction_id": "a", "outcome": 1, "label": 1}', 422, "unknown field 'label'"),
        (b'{"feedback": [{"prediction_id": "a", "outcome": 1}, 5]}', 422, "feedback[1] must be an object"),
        (b'{"feedback": [], "x": 1}', 422, "takes no other field"),
    ],
)
def test_bad_feedback_is_a_request_error(body: bytes, status: int, fragment: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_feedback(body, max_items=10)
    assert info.value.status == status and fragment in info.value.message


def test_feedback_shapes_and_limit() -> None:
    one = parse_feedback(b'{"prediction_id": "a", "outcome": 1}', max_items=10)
    assert one == [Feedback("a", 1.0, 0, None)]
    many = [{"prediction_id": "a", "outcome": 0.5, "row": 2, "model": "flights"}] * 3
    assert (
        parse_feedback(json.dumps({"feedback": many}).encode(), max_items=3)
        == [Feedback("a", 0.5, 2, "flights")] * 3
    )
    with pytest.raises(RequestError, match="exceeds the limit of 2"):
        parse_feedback(json.dumps(many).encode(), max_items=2)


def test_join_feedback_takes_the_latest_outcome_per_row() -> None:
    predictions = pa.table(
        {
            "prediction_id": ["p1", "p1", "p2", "p3"],
            "row": pa.array([0, 1, 0, 0], pa.int32()),
            "ts": pa.array([1, 2, 3, 4], TS),
            "route": ["served"] * 4,
            "probability": [0.1, 0.9, 0.4, 0.6],
        }
    )
    feedback = pa.concat_tables(
        [
            feedback_table([Feedback("p1", 1.0, 1), Feedback("p2", 0.0)], ts_us=10),
            feedback_table([Feedback("p1", 0.0, 1), Feedback("zz", 1.0)], ts_us=20),  # p1/1 corrected
            feedback_table([Feedback("p2", 1.0)], ts_us=5),  # older than p2's first: loses
        ]
    )
    assert feedback.schema == FEEDBACK_SCHEMA
    joined = join_feedback(predictions, feedback)
    assert joined.select(["prediction_id", "row", "outcome"]).to_pylist() == [
        {"prediction_id": "p1", "row": 1, "outcome": 0.0},
        {"prediction_id": "p2", "row": 0, "outcome": 0.0},
    ]
    outer = join_feedback(predictions, feedback, join_type="left outer")
    assert outer["outcome"].to_pylist() == [None, 0.0, 0.0, None]
    with pytest.raises(ConfigError):
        join_feedback(predictions, feedback, join_type="cross")


def test_feedback_log_round_trip_with_and_without_model(tmp_path: Path) -> None:
    logger = PredictionLogger(str(tmp_path), flush_rows=1000, flush_interval_s=60)
    logger.log_feedback(
        [Feedback("a", 1.0, 0, "flights"), Feedback("b", 0.0), Feedback("c", 1.0, 0, "other")]
    )
    logger.close()
    assert sorted(read_feedback(tmp_path, "flights")["prediction_id"].to_pylist()) == ["a", "b"]
    assert sorted(read_feedback(tmp_path)["prediction_id"].to_pylist()) == ["a", "b", "c"]
    assert read_feedback(tmp_path / "nothing").num_rows == 0


def test_feedback_with_a_lone_surrogate_or_a_huge_integer_is_a_4xx() -> None:
    from raymlops.errors import RequestError
    from raymlops.monitoring.prediction_log import parse_feedback

    with pytest.raises(RequestError) as bad_id:
        parse_feedback(b'{"prediction_id": "\\ud827", "outcome": 1}', max_items=10)
    assert bad_id.value.status == 422 and "valid Unicode" in bad_id.value.message
    with pytest.raises(RequestError) as bad_model:
        parse_feedback(b'{"prediction_id": "a", "outcome": 1, "model": "\\udc00"}', max_items=10)
    assert bad_model.value.status == 422
    with pytest.raises(RequestError) as huge:
        parse_feedback(b'{"prediction_id": "a", "outcome": ' + b"9" * 5000 + b"}", max_items=10)
    assert huge.value.status == 400


def test_feedback_of_every_task_is_stored_as_sent_and_read_as_targets(tmp_path: Path) -> None:
    from raymlops.monitoring.feedback import feedback_targets, outcome_values
    from raymlops.tasks.multiclass import MulticlassTask

    sent = [("a", "gold"), ("b", True), ("c", 2**60 + 1), ("d", 231.5), ("e", "platinum")]
    body = json.dumps([{"prediction_id": i, "outcome": o} for i, o in sent]).encode()
    logger = PredictionLogger(str(tmp_path), flush_rows=1000, flush_interval_s=60)
    logger.log_feedback(parse_feedback(body, max_items=10))
    logger.close()
    table = read_feedback(tmp_path)
    assert table.schema.names[-1] == "outcome_text"
    # Lossless: text stays text, an integer beyond float64's 2**53 keeps its digits, a bool reads as 1.0.
    assert dict(zip(table["prediction_id"].to_pylist(), outcome_values(table), strict=True)) == {
        "a": "gold",
        "b": 1.0,
        "c": 2**60 + 1,
        "d": 231.5,
        "e": "platinum",
    }
    task = MulticlassTask(classes=("bronze", "gold", "silver"))
    targets, unknown = feedback_targets(task, ["gold", "silver", "platinum", "bronze"])
    np.testing.assert_array_equal(targets[[0, 1, 3]], [1.0, 2.0, 0.0])
    assert np.isnan(targets[2]) and unknown == ["platinum"]
    with pytest.raises(ValueError, match=r"\['platinum'\] are not among the classes"):
        task.outcome_targets(["platinum"])
