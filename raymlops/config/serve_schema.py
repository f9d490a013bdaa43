"""Structured-config schemas of the ``serve`` group: deployment, rollout, auth, TLS, rate limit, OOD.

Split from :mod:`raymlops.config.schema` (which re-exports every name here) to keep each module small.
OmegaConf reads these annotations at run time, so this module does not use
``from __future__ import annotations``.
"""

from dataclasses import dataclass, field
from enum import Enum


@dataclass
class RolloutConfig:  # raymlops.serving.rollout.RolloutPolicy
    steps: list[float] = field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0])  # candidate's % of traffic
    min_requests: int = 100  # candidate requests at a step before it is judged
    min_step_s: float = 30.0
    max_error_rate_increase: float = 0.02  # candidate error rate minus the champion's
    max_p99_ratio: float = 2.0  # candidate p99 <= champion p99 * ratio + slack
    p99_slack_ms: float = 5.0
    max_mean_shift: float = 0.1  # |mean predicted probability, candidate - champion|
    max_value_shift_std: float = 0.5  # regression: |mean value shift| in champion value stds
    max_class_share_shift: float = 0.15  # multiclass: total variation of the answered classes' shares
    step_timeout_s: float = 600.0  # no evidence in this time: roll back
    poll_s: float = 2.0


class DeployStrategy(Enum):
    replace = "replace"  # the new version takes all traffic at once
    rollout = "rollout"  # progressive rollout against the version the app serves (needs live traffic)
    # the new version scores serve.shadow_fraction of the live app's requests beside the champion, which
    # keeps answering; it gets the `shadow` alias (`serve shadow NAME --promote` rolls it out later)
    shadow = "shadow"


class Placement(Enum):
    colocated = "colocated"  # the ONNX session inside every router replica: no hop (small models)
    deployment = "deployment"  # its own Serve deployment behind a handle, @serve.batch (large models)


@dataclass
class AuthConfig:
    enabled: bool = False  # true: every route but /v2/health/* needs an API key with a high enough role
    keys_file: str = "${security.keys_file}"  # hashed keys (mode 0600): `python -m raymlops serve keys`


@dataclass
class TLSConfig:
    certfile: str | None = None  # PEM certificate (chain); with keyfile set the endpoint speaks HTTPS only
    keyfile: str | None = None  # PEM private key (mode 0600)
    keyfile_password_env: str | None = None  # an environment variable holding the key's password, if any


@dataclass
class RateLimitConfig:
    requests_per_s: float = 0.0  # per API key (client address with auth off) and replica; 0: no limit
    burst: int = 50  # requests a key may send at once before the rate applies


class OODAction(Enum):
    flag = "flag"  # answer, marking the rows in the response and counting them in metrics
    reject = "reject"  # refuse the request with 422


@dataclass
class OODConfig:
    enabled: bool = True  # compare inputs with the training profile registered with the model
    action: OODAction = OODAction.flag
    # A numeric value is out of distribution when it lies further than this many inter-quantile ranges
    # (q99 - q01 of the training data) outside [q01, q99]; a category never seen in training is too.
    range_margin: float = 1.0


@dataclass
class ServeConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    app_name: str = "raymlops-${env.name}"
    route_prefix: str = "/"
    num_replicas: int = 1
    replica_cpus: float = 0.25
    # Requests a router (or model) replica takes at once; Serve's default 5 halves throughput at 16 in flight
    max_ongoing_requests: int = 64
    use_gpu: bool = False  # CUDA execution provider in onnxruntime
    max_rows_per_request: int = 10000
    sample_requests: int = 3  # rows of the test split sent over HTTP after deploy, answers printed
    block: bool = False  # keep the job (and an embedded Ray) alive serving until Ctrl-C
    auth: AuthConfig = field(default_factory=AuthConfig)  # API keys mapped to roles
    tls: TLSConfig = field(default_factory=TLSConfig)
    max_body_bytes: int = 4_194_304  # larger requests are refused with 413 before they are read
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    ood: OODConfig = field(default_factory=OODConfig)
    prediction_log: bool = True  # log every served row to monitor.log_root (feedback and monitoring need it)
    prediction_log_wal: bool = True  # rows in a write-ahead file before the answer: a kill loses none
    prediction_log_fsync_interval_ms: float = 100.0  # 0: fsync before every answer (power-loss bound)
    prediction_log_fsync_rows: int = 0  # also fsync once this many rows are unsynced; 0: by time only
    strategy: DeployStrategy = DeployStrategy.replace  # how the deploy stage puts a new version live
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    shadow_fraction: float = 0.1  # strategy=shadow, `serve shadow` without --fraction: share mirrored, (0, 1]
    placement: Placement = Placement.colocated  # where versions the job or `serve` CLI deploys run
    model_batch_size: int = 32  # placement=deployment: most requests per onnxruntime run (@serve.batch)
    model_batch_wait_us: int = 1000  # ... and the longest wait for a batch to fill
