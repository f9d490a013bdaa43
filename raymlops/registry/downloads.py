"""A registered version's model folder on this machine, downloaded once per process when it lives in a
remote artifact store (``s3://``, ``gs://``, a tracking server's ``mlflow-artifacts:/``).

The deploying process and every serving replica use it: a replica on another node cannot read the
folder its deployer downloaded into its own temporary directory, so it fetches its own copy from the
same URI (:func:`raymlops.serving.spec.node_local`).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

__all__ = ["is_local_source", "model_folder"]

logger = logging.getLogger(__name__)
_CACHE: dict[tuple[str, str], Path] = {}
_LOCK = threading.Lock()


def is_local_source(source: str) -> bool:
    """True for a ``file:`` URI or a plain path: every node reads it where it lies (a shared path)."""
    return source.startswith("file:") or ("://" not in source and not source.startswith("mlflow-artifacts:"))


def model_folder(source: str, tracking_uri: str) -> Path:
    """The local copy of the model folder at ``source`` (downloaded on first use in this process).

    ``tracking_uri`` resolves ``mlflow-artifacts:/`` URIs (the server that proxies the artifacts).
    """
    from mlflow.artifacts import download_artifacts

    key = (source, tracking_uri)
    with _LOCK:  # replicas load versions from several threads; one download per folder
        if key not in _CACHE:
            folder = tempfile.mkdtemp(prefix="raymlops-model-")
            _CACHE[key] = Path(download_artifacts(source, dst_path=folder, tracking_uri=tracking_uri or None))
            logger.info("downloaded model folder source=%s path=%s", source, _CACHE[key])
        return _CACHE[key]
