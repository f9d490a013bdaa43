"""Config schemas, their ConfigStore registration, and composing the job config."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

__all__ = ["CONFIG_DIR", "compose", "register_configs"]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

if not OmegaConf.has_resolver("abspath"):
    # Resolved against the working directory at start-up: every path the job writes is absolute.
    OmegaConf.register_new_resolver("abspath", lambda p: str(Path(p).expanduser().resolve()))


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from raymlops.config import schema
    from raymlops.models.registry import FAMILIES, family_class

    cs = ConfigStore.instance()
    cs.store(name="job_schema", node=schema.JobConfig)
    for name in FAMILIES:  # each family's schema, for configs/model/<name>.yaml to start from
        if (family_schema := family_class(name).config_schema) is not None:
            cs.store(group="model", name=f"{name}_schema", node=family_schema)
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
