"""The names of every MLflow tag raymlops writes, in one place.

Runs, registered versions and registered models carry these tags; the register stage writes them, the
registry, monitoring, serving and the CLI read them back. A tag's name is stored in the registry and
outlives the code, so a name here never changes: add a new one instead.
"""

from __future__ import annotations

__all__ = [
    "AUDIT_PREFIX",
    "BEST_TRIAL_TAG",
    "CONFIG_DIGEST_TAG",
    "DATA_VERSION_TAG",
    "DEPLOYED_TAG",
    "DIGESTS_TAG",
    "ENV_TAG",
    "EVALUATION_REPORT_TAG",
    "FEATURE_EVENT_TIME_TAG",
    "FEATURE_LOOKUP_TAG",
    "FEATURE_VIEWS_TAG",
    "FEEDBACK_VERSION_TAG",
    "GATES_TAG",
    "GIT_DIRTY_TAG",
    "GIT_SHA_TAG",
    "INPUT_COLUMNS_TAG",
    "LIFECYCLE_TAG",
    "MODEL_NAME_TAG",
    "MODEL_VERSION_TAG",
    "PARENT_TAG",
    "RUN_ID_TAG",
    "RUN_NAME_TAG",
    "SEED_TAG",
    "SIGNATURE_TAG",
    "TAG_PREFIX",
    "TASK_TAG",
    "TRIAL_TAG",
    "VALIDATION_REPORT_TAG",
]

TAG_PREFIX = "raymlops."  # every tag below starts with it; a lineage key without it gets it

# Runs and registered versions: where a model comes from.
RUN_ID_TAG = "raymlops.run_id"  # the job's run id (not MLflow's)
RUN_NAME_TAG = "raymlops.run_name"
ENV_TAG = "raymlops.env"  # also on a registered model: the env (dev/staging/prod) that owns it
GIT_SHA_TAG = "raymlops.git_sha"
GIT_DIRTY_TAG = "raymlops.git_dirty"  # "true" | "false"
DATA_VERSION_TAG = "raymlops.data_version"  # str(DataVersion): reads back exactly the training rows
# A retrain that learnt from feedback (retrain.include_feedback / feedback_only): that table's version.
FEEDBACK_VERSION_TAG = "raymlops.feedback_version"
SEED_TAG = "raymlops.seed"
CONFIG_DIGEST_TAG = "raymlops.config_digest"  # SHA-256 of the run's logged config.yaml
PARENT_TAG = "raymlops.parent"  # the version a retrain started from
VALIDATION_REPORT_TAG = "raymlops.validation_report"  # artifact URI
EVALUATION_REPORT_TAG = "raymlops.evaluation_report"  # artifact URI
MODEL_NAME_TAG = "raymlops.model_name"  # on a run: the version it registered
MODEL_VERSION_TAG = "raymlops.model_version"
TRIAL_TAG = "raymlops.trial"  # on a Tune trial's child run: the trial's name
BEST_TRIAL_TAG = "raymlops.best_trial"  # "true" | "false"

# Registered versions: what serving and governance need.
TASK_TAG = "raymlops.task"  # tasks.codec.task_to_json: the problem shape (absent: flights binary)
INPUT_COLUMNS_TAG = "raymlops.input_columns"  # "col:float,col2:string", the ONNX graph's raw inputs
GATES_TAG = "raymlops.gates"  # "passed" | "failed"
LIFECYCLE_TAG = "raymlops.lifecycle"  # candidate | staging | production | archived | rejected
DEPLOYED_TAG = "raymlops.deployed_apps"  # comma-separated Serve applications serving the version
FEATURE_VIEWS_TAG = "raymlops.feature_views"  # "view=data version;..." joined at training time
FEATURE_EVENT_TIME_TAG = "raymlops.feature_event_time"  # the row column the views were joined as of
FEATURE_LOOKUP_TAG = "raymlops.feature_lookup"  # FeatureLookup.to_json(): what serving looks up online
DIGESTS_TAG = "raymlops.artifact_digests"  # canonical JSON {file: sha256} of the model folder
SIGNATURE_TAG = "raymlops.artifact_signature"  # signature over DIGESTS_TAG's value

# Registered models: one tag per governance audit record, ``raymlops.audit.<ns>.<id>``.
AUDIT_PREFIX = "raymlops.audit."
