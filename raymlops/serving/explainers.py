"""The router's packaged SHAP explainers: loaded once per version, warmed up off the request path."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raymlops.errors import RequestError

if TYPE_CHECKING:
    from raymlops.serving.spec import ModelSpec, RoutingConfig

__all__ = ["ExplainerCache", "explainer_dir"]

logger = logging.getLogger(__name__)


def explainer_dir(onnx_path: str) -> Path | None:
    """The packaged explainer next to a version's ONNX file (``stages/register``), if there is one."""
    folder = Path(onnx_path).parent / "explainer"
    return folder if (folder / "explainer.json").is_file() else None


class ExplainerCache:
    """Explainers by ONNX path, loaded on first use or by the warm-up thread (thread-safe)."""

    def __init__(self) -> None:
        self._explainers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def prepare(self, config: RoutingConfig) -> None:
        """Forget explainers of versions no longer served; load and warm the new ones in the background.

        shap compiles its kernels on the first explanation in a process (~10 s on 2 cores): doing it
        here, off the request path, keeps the first ``/explain`` fast. A request that comes first
        still gets its answer, later.
        """
        paths = {s.onnx_path for specs in config.models.values() for s in specs}
        with self._lock:
            for path in set(self._explainers) - paths:
                del self._explainers[path]
        packaged = [
            s for specs in config.models.values() for s in specs if explainer_dir(s.onnx_path) is not None
        ]
        if not packaged:
            return  # no shap import in replicas that will never explain

        def warm() -> None:
            from raymlops.evaluation.explain import warm_up

            for spec in packaged:
                try:
                    self.get(spec)
                except Exception as exc:  # answered per request (404/500) when asked for
                    logger.warning(
                        "explainer not loaded name=%s version=%s error=%s", spec.name, spec.version, exc
                    )
            seconds = warm_up()
            logger.info("explainers ready versions=%d shap_compile_s=%.1f", len(packaged), seconds)

        threading.Thread(target=warm, name="raymlops-explainer-warmup", daemon=True).start()

    def get(self, spec: ModelSpec) -> Any:
        """The version's packaged explainer (``<dir of onnx_path>/explainer/``), loaded once.

        Raises:
            RequestError: (404) None is packaged next to the version's ONNX file.
        """
        folder = explainer_dir(spec.onnx_path)
        if folder is None:
            raise RequestError(
                f"model {spec.name!r} version {spec.version!r} has no explainer: none is packaged next to "
                f"its ONNX file ({Path(spec.onnx_path).parent / 'explainer'}/explainer.json); register "
                "the version from a pipeline with the explain stage, or explain another version (?version=).",
                status=404,
            )
        with self._lock:
            explainer = self._explainers.get(spec.onnx_path)
            if explainer is None:
                from raymlops.evaluation.explain import load_explainer
                from raymlops.security.integrity import read_artifact

                # The graph's bytes as served: decrypted, checked against the registered digest.
                graph = read_artifact(
                    spec.onnx_path, digest=spec.digest or None, what=f"{spec.name} v{spec.version}"
                )
                explainer = self._explainers[spec.onnx_path] = load_explainer(folder, graph)
        return explainer
