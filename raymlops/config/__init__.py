"""Config schemas, their ConfigStore registration, and composing the job config."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

__all__ = ["CONFIG_DIR", "STAGE_NAMES", "compose", "register_configs"]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
STAGE_NAMES = (
    "ingest",
    "validate",
    "features",
    "train",
    "evaluate",
    "export",
    "explain",
    "register",
    "deploy",
)

if not OmegaConf.has_resolver("abspath"):
    # Resolved against the working directory at start-up: every path the job writes is absolute.
    OmegaConf.register_new_resolver("abspath", lambda p: str(Path(p).expanduser().resolve()))


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from raymlops.config import schema

    cs = ConfigStore.instance()
    cs.store(name="job_schema", node=schema.JobConfig)
    cs.store(group="model", name="torch_mlp_schema", node=schema.TorchMLPConfig)
    cs.store(group="model", name="xgboost_schema", node=schema.XGBoostConfig)
    cs.store(group="tune", name="tune_schema", node=schema.TuneConfig)


def compose(
    overrides: list[str] | None = None, config_name: str = "job", config_dir: Path = CONFIG_DIR
):  # -> DictConfig
    """Compose the job config the way ``python -m raymlops.job`` does, for tests and notebooks."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
