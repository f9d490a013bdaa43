"""A stage's class from what a config names: a registered stage or a class path.

``stages=[...]`` holds names of the production registry (:data:`raymlops.config.stages.STAGES`) or, for a
stage of one's own, its class path ``package.module:ClassName`` (a :class:`~raymlops.pipeline.stage.Stage`
subclass), so a project adds a stage without editing the package; the closed-loop demo names its stages
this way.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from raymlops.config.stages import STAGES
from raymlops.errors import ConfigError
from raymlops.pipeline.stage import Stage

__all__ = ["class_path", "stage_class", "stage_name", "stages_from_config"]


def stage_class(entry: str) -> type[Stage]:
    """The :class:`Stage` subclass ``entry`` names: a registered name or ``package.module:ClassName``.

    Raises:
        ConfigError: Naming ``stages.<entry>`` and the registered stages when ``entry`` is neither; naming
            the class path when its module does not import or it is no ``Stage`` subclass with a ``name``.
    """
    entry = str(entry)
    if entry in STAGES:
        path = STAGES[entry]
    elif ":" in entry:
        path = entry
    else:
        raise ConfigError(
            f"stages.{entry}",
            "is not a stage: name a registered stage, or a Stage subclass of your own by its class path "
            "(package.module:ClassName).",
            STAGES,
        )
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            "stages", f"{entry!r}: module {module_name!r} cannot be imported ({exc}); check the class path."
        ) from exc
    cls = getattr(module, attribute, None)
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        found = "nothing" if cls is None else repr(cls)
        raise ConfigError(
            "stages",
            f"{entry!r} names {found} in {module_name}, not a subclass of raymlops.pipeline.stage.Stage.",
        )
    if not isinstance(getattr(cls, "name", None), str):
        raise ConfigError("stages", f"{entry!r}: the class sets no `name = '<stage name>'`.")
    return cls


def stage_name(entry: str) -> str:
    """The name the stage ``entry`` names runs as (in logs, lineage, figures and the job's actions)."""
    return str(entry) if str(entry) in STAGES else stage_class(entry).name


def class_path(cls: type[Stage]) -> str:
    """The ``package.module:ClassName`` a config names ``cls`` by."""
    return f"{cls.__module__}:{cls.__qualname__}"


def stages_from_config(entries: Iterable[str]) -> list[Stage]:
    """One instance of every stage ``entries`` names, in order."""
    return [stage_class(entry)() for entry in entries]
