"""The Serve logging settings every raymlops deployment (router, model servers) runs with."""

from ray.serve.schema import LoggingConfig

__all__ = ["LOGGING_CONFIG"]

# Per-request INFO access logs cost about 10% of throughput and flood the job's logs.
LOGGING_CONFIG = LoggingConfig(enable_access_log=False, log_level="WARNING")
