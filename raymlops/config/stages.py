"""The pipeline's stages, in one place: a job's default stage list and the production stage registry.

The schema's default ``stages`` list, the runner's lookup and the config checks all read these. Only
production stages are registered; a stage of one's own (like the closed-loop demo's, see
``configs/experiment/flights_loop.yaml``) is named in ``stages=[...]`` by its class path,
``package.module:ClassName``, without editing the package.
"""

from __future__ import annotations

__all__ = ["DEFAULT_STAGES", "OPTIONAL_STAGES", "STAGES"]

# What a job runs when its config does not say otherwise, in order.
DEFAULT_STAGES = (
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

# Stage name -> class path, imported lazily so that --help and config checks stay fast.
STAGES = {
    "ingest": "raymlops.stages.ingest:IngestStage",
    "validate": "raymlops.stages.validate:ValidateStage",
    "features": "raymlops.stages.features:FeaturesStage",
    "train": "raymlops.stages.train:TrainStage",
    "tune": "raymlops.stages.tune:TuneStage",  # replaces train when the job has +tune=<option>
    "evaluate": "raymlops.stages.evaluate:EvaluateStage",
    "export": "raymlops.stages.export:ExportStage",
    "explain": "raymlops.stages.explain:ExplainStage",
    "register": "raymlops.stages.register:RegisterStage",
    "deploy": "raymlops.stages.deploy:DeployStage",
    "monitor": "raymlops.stages.monitor:MonitorStage",  # the monitor's figures for the deployed version
}

# Registered but not in the default list: named in `stages=[...]` or an experiment's list (tune: by +tune).
OPTIONAL_STAGES = tuple(name for name in STAGES if name not in DEFAULT_STAGES)
