"""What the router serves: one ``ModelSpec`` per live version, carried in Serve's ``user_config``.

``build_user_config`` (driver side) and ``parse_user_config`` (replica side) apply the same checks,
so a bad routing table fails in ``deploy()`` before anything reaches the cluster, and a replica
never swaps in a table it cannot serve.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from raymlops.errors import ConfigError
from raymlops.features.online.base import OnlineStoreSettings
from raymlops.features.online.lookup import FeatureLookup
from raymlops.models.export import INPUT_KINDS
from raymlops.security.keys import AuthTable
from raymlops.security.names import safe_name
from raymlops.security.pii import check_pii_settings
from raymlops.serving.ood import OODSettings, check_input_profile
from raymlops.serving.policy import RoutePolicy, check_policy, choose_version, parse_policies
from raymlops.serving.rate_limit import RateLimitSettings
from raymlops.settings_model import validate_settings

if TYPE_CHECKING:
    from raymlops.tasks.base import Task

__all__ = [
    "INPUT_KINDS",
    "PLACEMENTS",
    "ModelSpec",
    "OODSettings",
    "PredictionLogSettings",
    "RateLimitSettings",
    "RoutePolicy",
    "RoutingConfig",
    "build_user_config",
    "choose_version",
    "parse_user_config",
    "task_description",
]


# Where a version's session runs (see ModelSpec.placement).
PLACEMENTS = ("colocated", "deployment")
# Router settings besides the routing table, with their defaults.
_SETTINGS: dict[str, int] = {
    "max_rows_per_request": 10_000,
    "max_body_bytes": 16 * 1024**2,
    "shadow_max_in_flight": 4,
    "stats_window": 1_000,
    "max_explain_rows": 100,
    # placement "deployment": a ModelServer's @serve.batch folds up to this many requests into one run,
    "model_batch_size": 32,
    # waiting at most this long (microseconds) for a batch to fill.
    "model_batch_wait_us": 1000,
}
_STRICT = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
_NON_EMPTY = Field(min_length=1, description="must be a non-empty string")
_SETTING = Annotated[int, Field(ge=1, description="must be an integer >= 1")]


class _SpecShape(BaseModel):
    """A :class:`ModelSpec`'s fields as ``user_config`` carries them (``to_dict`` dumps this)."""

    model_config = _STRICT
    missing_noun: ClassVar[str] = "field"

    name: str = _NON_EMPTY
    version: str = _NON_EMPTY
    onnx_path: str = _NON_EMPTY
    data_version: str
    # column -> kind; the kind is checked by ModelSpec, whose message names the column
    input_columns: Mapping[str, Any] = Field(
        min_length=1, description="must map column -> kind (at least one)"
    )
    weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="must be a finite number >= 0")
    threshold: float = Field(0.5, ge=0, le=1, description="must be in [0, 1]")
    placement: Literal["colocated", "deployment"] = "colocated"
    feature_lookup: FeatureLookup | None = None
    input_profile: Any = None  # checked by ood.check_input_profile
    digest: str = Field(
        "", pattern=r"^([0-9a-f]{64})?$", description="must be a SHA-256 in 64 hex digits or ''"
    )
    source: str = ""
    tracking_uri: str = ""
    task: Mapping[str, Any] = Field(
        default_factory=dict, description="must be a Task.describe() mapping or {}"
    )

    @field_serializer("feature_lookup")
    def _lookup(self, lookup: FeatureLookup | None) -> dict[str, Any] | None:
        return None if lookup is None else lookup.to_dict()


class _LogShape(BaseModel):
    """``serving.prediction_log``'s shape (pii and fsync keys are checked by their own modules)."""

    model_config = _STRICT

    root: str = Field(min_length=1, description="must be a non-empty path or URI")
    flush_rows: int = Field(1000, ge=1, description="must be an integer >= 1")
    flush_interval_s: float = Field(2.0, gt=0, allow_inf_nan=False, description="must be a number > 0")
    pii: Any = None
    wal: bool = Field(True, description="must be true or false")
    fsync_interval_ms: Any = 100.0
    fsync_rows: Any = 0


class _RouterShape(BaseModel):
    """The router's ``user_config`` keys; the nested parts are checked by their own classes."""

    model_config = _STRICT

    models: Any = None
    policies: Any = None
    use_gpu: bool = False
    auth: Any = None
    prediction_log: Any = None
    env: Any = None
    online_store: Any = None
    rate_limit: Any = None
    ood: Any = None
    max_rows_per_request: _SETTING = _SETTINGS["max_rows_per_request"]
    max_body_bytes: _SETTING = _SETTINGS["max_body_bytes"]
    shadow_max_in_flight: _SETTING = _SETTINGS["shadow_max_in_flight"]
    stats_window: _SETTING = _SETTINGS["stats_window"]
    max_explain_rows: _SETTING = _SETTINGS["max_explain_rows"]
    model_batch_size: _SETTING = _SETTINGS["model_batch_size"]
    model_batch_wait_us: _SETTING = _SETTINGS["model_batch_wait_us"]


@dataclass(frozen=True)
class ModelSpec:
    """One servable model version.

    Attributes:
        name: The model name clients call (``/v1/models/{name}/predict``).
        version: The registry version; returned in the ``model-version`` header.
        onnx_path: Path of the composed ONNX graph (preprocessing + model), readable by every replica.
        data_version: Version of the data the model was trained on; returned in ``data-version``.
        input_columns: Raw column -> ``"float"`` or ``"string"``, as the graph's inputs expect.
        weight: Relative share of the name's traffic (0 = loaded but not routed to, e.g. a shadow).
        threshold: ``label = probability >= threshold``.
        placement: ``"colocated"`` (the default): the onnxruntime session lives inside every
            router replica, no extra hop. ``"deployment"``: its own Serve deployment
            (``model_server.ModelServer``, ``@serve.batch``) behind a ``DeploymentHandle``, for graphs
            too large to copy into every router replica.
        feature_lookup: For a model trained with feature views: which of its inputs the router fetches
            from the online store by the request's entity keys (``FeatureLookup``); None: the request
            carries every input.
        input_profile: The training data's reference per input column, for out-of-distribution
            checks (``ood.input_profile`` builds it from the registered ``profile.json``): numeric
            ``{"q01", "q99"}``, string ``{"categories": [...]}``; None: the version is not checked.
        digest: SHA-256 (hex) of the ONNX graph's plaintext bytes as registered (the version's
            ``raymlops.artifact_digests``); every load compares it and refuses other bytes
            (:func:`raymlops.security.integrity.read_artifact`). "": not checked (a version
            registered before digests existed).
        source: The version's model folder in a remote artifact store (``s3://...``,
            ``mlflow-artifacts:/...``) when ``onnx_path`` is the deploying process's downloaded copy;
            a replica that cannot read ``onnx_path`` (another node) serves from its own copy of it
            (:func:`node_local`). "": ``onnx_path`` is on a path every node reads.
        tracking_uri: The tracking server that resolves an ``mlflow-artifacts:`` ``source`` (no
            credentials: MLflow reads those from its environment variables).
        task: The version's task as ``Task.describe()`` records it (the registered version's
            ``raymlops.task`` tag); ``{}``: a version registered before tasks existed, the legacy
            binary task (flights). ``task_obj`` is the ``Task`` it stands for.
    """

    name: str
    version: str
    onnx_path: str
    data_version: str
    input_columns: dict[str, str]
    weight: float = 1.0
    threshold: float = 0.5
    placement: str = "colocated"
    feature_lookup: FeatureLookup | None = None
    input_profile: dict[str, dict[str, Any]] | None = None
    digest: str = ""
    source: str = ""
    tracking_uri: str = ""
    task: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        key = f"serving.models[{self.name!r}]"
        validate_settings(_SpecShape, self._fields(), key)
        safe_name(self.name, "model name")  # names reach log partitions, metrics labels, deployment names
        safe_name(self.version, "model version")
        object.__setattr__(self, "input_columns", dict(self.input_columns))  # plain JSON (frozen dataclass)
        for column, kind in self.input_columns.items():
            if kind not in INPUT_KINDS:
                raise ConfigError(
                    f"{key}.input_columns.{column}", f"kind {kind!r} is not one of {', '.join(INPUT_KINDS)}."
                )
        lookup = self.feature_lookup
        if lookup is not None:
            unknown = sorted(lookup.columns - set(self.input_columns))
            if unknown:
                raise ConfigError(
                    f"{key}.feature_lookup", f"supplies column(s) {unknown} that are not model inputs."
                )
        reference = check_input_profile(f"{key}.input_profile", self.input_profile)
        if reference is not None:
            unknown = sorted(set(reference) - set(self.input_columns))
            if unknown:
                raise ConfigError(
                    f"{key}.input_profile", f"profiles column(s) {unknown} that are not model inputs."
                )
        object.__setattr__(self, "input_profile", reference)  # normalised (frozen dataclass)
        object.__setattr__(self, "task", dict(self.task))
        try:
            if self.task:  # a task that cannot be rebuilt fails here, not on a request
                self.task_obj  # noqa: B018
        except Exception as exc:
            raise ConfigError(
                f"{key}.task", f"{self.task!r} does not describe a task: {exc}. Register the version again."
            ) from None

    @cached_property
    def task_obj(self) -> Task:
        """The version's ``Task``: what its graph outputs and how its answers read."""
        from raymlops.tasks.codec import task_from_dict

        return task_from_dict(self.task)  # {}: the legacy binary task

    @cached_property
    def request_columns(self) -> dict[str, str]:
        """What a request carries: every input, or with a feature lookup the inputs the store does not
        supply plus the entity keys (and event time) the lookup needs."""
        if self.feature_lookup is None:
            return self.input_columns
        return self.feature_lookup.request_columns(self.input_columns)

    def _fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (Serve's ``user_config`` must be JSON-serialisable)."""
        data = _SpecShape.model_construct(**self._fields()).model_dump()
        # absent when unset: configs without views, a training profile or a task stay as they were
        for name in ("feature_lookup", "input_profile", "task"):
            if data[name] is None or data[name] == {}:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Inverse of ``to_dict``; unknown keys are an error, so a typo does not pass silently."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                "serving.models", f"each version must be a mapping of ModelSpec fields, got {data!r}."
            )
        values = dict(data)
        if isinstance(values.get("input_columns"), Mapping):
            values["input_columns"] = dict(values["input_columns"])
        if values.get("feature_lookup") is not None:
            values["feature_lookup"] = FeatureLookup.from_dict(values["feature_lookup"])
        shape = validate_settings(_SpecShape, values, f"serving.models[{data.get('name')!r}]")
        return cls(**{name: getattr(shape, name) for name in _SpecShape.model_fields})


@dataclass(frozen=True)
class PredictionLogSettings:
    """Where and how often the router writes its prediction and feedback logs (``raymlops.monitoring``).

    Attributes:
        root: Directory or filesystem URI (``s3://bucket/prefix``) every replica can write; the
            logs go to ``<root>/predictions/`` and ``<root>/feedback/``.
        flush_rows: A replica writes a file once this many rows are buffered ...
        flush_interval_s: ... or once this long has passed since its last write.
        pii: ``{"columns": [...], "action": "hash" | "drop", "key_id": ID}``: the PII columns to hash
            or drop before a row is written (:mod:`raymlops.security.pii`); the key itself is not
            here but in the cluster's key-value store under ``key_id``. None: log every column as sent.
        wal: Append each answered row to a write-ahead file before the answer leaves (local roots;
            :mod:`raymlops.monitoring.wal`): a killed replica loses no row, the next start recovers them.
        fsync_interval_ms: fsync the write-ahead file this often; 0: before every answer. Bounds
            what power loss may take; a killed process loses nothing either way.
        fsync_rows: Also fsync once this many rows are unsynced (0: by time only).
    """

    root: str
    flush_rows: int = 1000
    flush_interval_s: float = 2.0
    pii: dict[str, Any] | None = field(default=None, hash=False)
    wal: bool = True
    fsync_interval_ms: float = 100.0
    fsync_rows: int = 0

    def __post_init__(self) -> None:
        key = "serving.prediction_log"
        validate_settings(_LogShape, self._fields(), key)
        object.__setattr__(self, "pii", check_pii_settings(self.pii, f"{key}.pii"))
        from raymlops.monitoring.wal import check_fsync

        check_fsync(self.fsync_interval_ms, self.fsync_rows, key)

    def _fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        data = _LogShape.model_construct(**self._fields()).model_dump()
        data["flush_interval_s"] = float(data["flush_interval_s"])
        data["fsync_interval_ms"] = float(data["fsync_interval_ms"])
        if not data["pii"]:  # absent when off: logs without PII settings stay as they were
            del data["pii"]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> PredictionLogSettings:
        """From ``{"root": ..., "flush_rows": ..., "flush_interval_s": ...}``; unknown keys are errors."""
        if isinstance(data, PredictionLogSettings):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(
                "serving.prediction_log",
                f'must be {{"root": PATH, "flush_rows": N, "flush_interval_s": S}} or null, got {data!r}.',
            )
        if "root" not in data:
            raise ConfigError(
                "serving.prediction_log.root", "is missing: name the directory or URI to log to."
            )
        shape = validate_settings(_LogShape, data, "serving.prediction_log")
        return cls(**{name: getattr(shape, name) for name in _LogShape.model_fields})


@dataclass(frozen=True)
class RoutingConfig:
    """The router's whole state from ``user_config``: specs and policy per name plus request limits.

    Attributes:
        models: Name -> its versions, in config order (the order sticky keys are laid out in).
        policies: Name -> sticky / shadow policy; names without one are plain weighted splits.
        use_gpu: Run onnxruntime with the CUDA provider.
        max_rows_per_request: Larger requests are refused with 422.
        max_body_bytes: Larger request bodies are refused with 413 before they are parsed.
        shadow_max_in_flight: Shadow calls running or queued at once per replica; beyond it a
            sampled shadow call is dropped (and counted) rather than queued behind a slow model.
        stats_window: Requests per (model, version, route) kept for ``/v1/models/{name}/stats``.
        max_explain_rows: Larger ``/v1/models/{name}/explain`` requests are refused with 422
            (explaining costs about 0.2 s per 100 rows).
        model_batch_size, model_batch_wait_us: ``@serve.batch`` of versions placed in their own
            deployment: most requests per onnxruntime run, longest wait for a batch to fill.
        prediction_log: Log every scored row and accept ``/v1/feedback``; None: neither.
        online_store: Where versions with a ``feature_lookup`` fetch their features; None: no store
            (then no version may have a lookup).
        auth: API keys (hashed) and whether they are required (``auth.ApiKeyMiddleware``).
        rate_limit: Requests per second and burst per client and replica (``rate_limit``).
        ood: Out-of-distribution checks of versions with an ``input_profile`` (``ood``).
    """

    models: dict[str, tuple[ModelSpec, ...]]
    policies: dict[str, RoutePolicy] = field(default_factory=dict)
    use_gpu: bool = False
    max_rows_per_request: int = _SETTINGS["max_rows_per_request"]
    max_body_bytes: int = _SETTINGS["max_body_bytes"]
    shadow_max_in_flight: int = _SETTINGS["shadow_max_in_flight"]
    stats_window: int = _SETTINGS["stats_window"]
    max_explain_rows: int = _SETTINGS["max_explain_rows"]
    model_batch_size: int = _SETTINGS["model_batch_size"]
    model_batch_wait_us: int = _SETTINGS["model_batch_wait_us"]
    prediction_log: PredictionLogSettings | None = None
    auth: AuthTable = field(default_factory=AuthTable)
    online_store: OnlineStoreSettings | None = None
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    ood: OODSettings = field(default_factory=OODSettings)


def _check_routing(models: Mapping[str, tuple[ModelSpec, ...]]) -> None:
    for name, specs in models.items():
        if not specs:
            raise ConfigError(f"serving.models[{name!r}]", "has no version: drop the name or add a version.")
        versions = [s.version for s in specs]
        duplicates = sorted({v for v in versions if versions.count(v) > 1})
        if duplicates:
            raise ConfigError(
                f"serving.models[{name!r}]", f"version(s) listed twice: {', '.join(duplicates)}."
            )
        if any(s.name != name for s in specs):
            raise ConfigError(f"serving.models[{name!r}]", "holds a spec whose name differs from its key.")
        if sum(s.weight for s in specs) <= 0:
            raise ConfigError(
                f"serving.models[{name!r}].weight",
                "all versions have weight 0: at least one must take traffic.",
            )


def _check_store(models: Mapping[str, tuple[ModelSpec, ...]], store: OnlineStoreSettings | None) -> None:
    if store is not None:
        return
    for specs in models.values():
        for spec in specs:
            if spec.feature_lookup is not None:
                raise ConfigError(
                    "serving.online_store",
                    f"is not set, but model {spec.name!r} version {spec.version!r} takes features from "
                    f"view(s) {', '.join(v.view for v in spec.feature_lookup.views)}: deploy with "
                    "online_store={'kind': 'sqlite', 'path': ...} (features.online_store in the job).",
                )


def build_user_config(
    models: Iterable[ModelSpec],
    *,
    policies: Mapping[str, RoutePolicy] | None = None,
    use_gpu: bool = False,
    max_rows_per_request: int = _SETTINGS["max_rows_per_request"],
    max_body_bytes: int = _SETTINGS["max_body_bytes"],
    shadow_max_in_flight: int = _SETTINGS["shadow_max_in_flight"],
    stats_window: int = _SETTINGS["stats_window"],
    auth: Mapping[str, Any] | None = None,
    max_explain_rows: int = _SETTINGS["max_explain_rows"],
    prediction_log: PredictionLogSettings | Mapping[str, Any] | None = None,
    model_batch_size: int = _SETTINGS["model_batch_size"],
    model_batch_wait_us: int = _SETTINGS["model_batch_wait_us"],
    env: str | None = None,
    online_store: OnlineStoreSettings | Mapping[str, Any] | None = None,
    rate_limit: RateLimitSettings | Mapping[str, Any] | None = None,
    ood: OODSettings | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The router's ``user_config``; the same checks as ``parse_user_config``, on the driver side.

    Its shape (JSON)::

        {
          "models": {"flights": [{"name": "flights", "version": "1", "onnx_path": "...",
                                  "data_version": "...", "input_columns": {"distance": "float", ...},
                                  "weight": 0.95, "threshold": 0.5, "placement": "colocated"},
                                 {..., "version": "2", "weight": 0.05}, ...]},
          "policies": {"flights": {"sticky": {"header": "x-user-id"},       # or {"field": "user_id"}
                                   "shadow": {"version": "3", "fraction": 0.2}}},
          "use_gpu": false, "max_rows_per_request": 10000, "max_body_bytes": 16777216,
          "shadow_max_in_flight": 4, "stats_window": 1000, "max_explain_rows": 100,
          "model_batch_size": 32, "model_batch_wait_us": 1000,
          "env": "dev",                                                      # optional: who deployed
          "prediction_log": {"root": "/data/predlog", "flush_rows": 1000,
                             "flush_interval_s": 2.0},                       # optional
          "online_store": {"kind": "sqlite", "path": "...", "url": "...",
                           "key_prefix": "...", "timeout_s": 0.5},           # optional
          "auth": {"enabled": true, "keys": {"<key_id>": {"role": "predictor", "salt": "...",
                                                          "hash": "...", "name": "..."}}}, # optional
          "rate_limit": {"requests_per_s": 20.0, "burst": 50},                # optional; 0: off
          "ood": {"enabled": true, "action": "flag", "range_margin": 1.0}     # optional
        }

    A spec may carry ``"input_profile": {"distance": {"q01": 80, "q99": 2900},
    "origin": {"categories": ["EWR", "JFK", "LGA"]}}`` (``ood.input_profile``).
    """
    grouped: dict[str, list[ModelSpec]] = {}
    for spec in models:
        grouped.setdefault(spec.name, []).append(spec)
    settings = {
        "max_rows_per_request": max_rows_per_request,
        "max_body_bytes": max_body_bytes,
        "shadow_max_in_flight": shadow_max_in_flight,
        "stats_window": stats_window,
        "max_explain_rows": max_explain_rows,
        "model_batch_size": model_batch_size,
        "model_batch_wait_us": model_batch_wait_us,
    }
    validate_settings(_RouterShape, settings, "serving")
    routing = {name: tuple(specs) for name, specs in grouped.items()}
    _check_routing(routing)
    store = None if online_store is None else OnlineStoreSettings.from_dict(online_store)
    _check_store(routing, store)
    policies = dict(policies or {})
    for name, policy in policies.items():
        if name not in routing:
            raise ConfigError(f"serving.policies.{name}", "names no served model.", routing)
        if not isinstance(policy, RoutePolicy):
            raise ConfigError(f"serving.policies[{name!r}]", f"must be a RoutePolicy, got {policy!r}.")
        check_policy(name, policy, routing[name])
    return {
        "models": {name: [s.to_dict() for s in specs] for name, specs in grouped.items()},
        "policies": {name: p.to_dict() for name, p in policies.items() if p.to_dict()},
        "use_gpu": bool(use_gpu),
        **settings,
        **({"env": env} if env is not None else {}),
        **({"auth": AuthTable.from_dict(auth).to_dict()} if auth is not None else {}),
        **(
            {"prediction_log": PredictionLogSettings.from_dict(prediction_log).to_dict()}
            if prediction_log is not None
            else {}
        ),
        **({"online_store": store.to_dict()} if store is not None else {}),
        **(
            {"rate_limit": RateLimitSettings.from_dict(rate_limit).to_dict()}
            if rate_limit is not None
            else {}
        ),
        **({"ood": OODSettings.from_dict(ood).to_dict()} if ood is not None else {}),
    }


def parse_user_config(user_config: Mapping[str, Any]) -> RoutingConfig:
    """Validate a ``user_config`` dict (as ``build_user_config`` makes) into a ``RoutingConfig``."""
    shape = validate_settings(_RouterShape, user_config, "serving", extra_prefix="serving.user_config")
    raw_models = user_config.get("models", {})
    if not isinstance(raw_models, Mapping):
        raise ConfigError("serving.user_config.models", f"must map name -> [spec, ...], got {raw_models!r}.")
    models = {}
    for name, specs in raw_models.items():
        if not isinstance(specs, list | tuple):
            raise ConfigError(f"serving.models[{name!r}]", f"must be a list of specs, got {specs!r}.")
        models[name] = tuple(ModelSpec.from_dict(s) for s in specs)
    _check_routing(models)
    policies = parse_policies(user_config.get("policies"), models)
    settings = {key: getattr(shape, key) for key in _SETTINGS}
    raw_store = user_config.get("online_store")
    store = None if raw_store is None else OnlineStoreSettings.from_dict(raw_store)
    _check_store(models, store)
    return RoutingConfig(
        models=models,
        policies=policies,
        use_gpu=shape.use_gpu,
        auth=AuthTable.from_dict(user_config.get("auth")),
        prediction_log=None
        if user_config.get("prediction_log") is None
        else PredictionLogSettings.from_dict(user_config["prediction_log"]),
        online_store=store,
        rate_limit=RateLimitSettings.from_dict(user_config.get("rate_limit")),
        ood=OODSettings.from_dict(user_config.get("ood")),
        **settings,
    )


def task_description(tag: str | None, model: str) -> dict[str, Any]:
    """A registered version's task (its ``raymlops.task`` tag) as ``Task.describe()`` gives it; {}
    for a version registered before tasks (the legacy binary task)."""
    from raymlops.registry.tags import TASK_TAG
    from raymlops.tasks.codec import task_from_json

    try:
        return task_from_json(tag).describe() if tag else {}
    except ConfigError as exc:
        raise ConfigError(
            "model", f"{model}: its {TASK_TAG} tag {tag!r} is not a task ({exc}); register it again."
        ) from None


def node_local(spec: ModelSpec) -> ModelSpec:
    """``spec`` with an ``onnx_path`` this process can read: as given when it exists (a shared path,
    or this is the node that deployed), else the same file in this node's own download of ``source``."""
    from pathlib import Path

    if not spec.source or Path(spec.onnx_path).exists():
        return spec
    from raymlops.registry.downloads import model_folder

    folder = model_folder(spec.source, spec.tracking_uri)
    return dataclasses.replace(spec, onnx_path=str(folder / Path(spec.onnx_path).name))
