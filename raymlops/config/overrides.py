"""What a bad ``key=value`` override could have meant: Hydra's error names the key, not the choices."""

from __future__ import annotations

__all__ = ["misspelt_key_message"]


def misspelt_key_message(argv: list[str]) -> str | None:
    """For a ``key=value`` override naming no config key: a message with the close and valid keys.

    Hydra's own error names the key but not what it could have been; this dry compose adds that.
    Anything else (a bad group option, a wrong type) is left to Hydra's message, which is clear.
    """
    from hydra.errors import ConfigCompositionException
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    from raymlops.config import compose
    from raymlops.errors import ConfigError

    overrides = [a for a in argv if "=" in a and not a.startswith(("-", "hydra.", "~"))]
    try:
        compose(overrides)
        return None
    except ConfigCompositionException as exc:
        cause = exc.__cause__
        if not isinstance(cause, ConfigKeyError | ConfigAttributeError) or not cause.full_key:
            return None
        bad = cause.full_key
    parent, _, _ = bad.rpartition(".")
    try:
        cfg = compose([o for o in overrides if o.split("=", 1)[0].lstrip("+") != bad])
    except ConfigCompositionException:
        return None
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):
        return None
    return str(ConfigError(bad, "is not a config key.", [str(k) for k in node]))
