"""The router's routing table: what one reconfigure produced, swapped in whole (``Routes``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raymlops.errors import ModelNotFoundError, RequestError, did_you_mean
from raymlops.serving.spec import ModelSpec, RoutingConfig

if TYPE_CHECKING:
    from raymlops.serving.model_server import RemoteModel
    from raymlops.serving.onnx_model import LoadedModel
    from raymlops.serving.ood import OODCheck

    # Where a version runs: in this replica, or in its own deployment behind a handle (``model_server``).
    ServedModel = LoadedModel | RemoteModel

__all__ = ["Routes"]


@dataclass(frozen=True)
class Routes:
    """What one reconfigure produced; swapped in whole so a request never sees half a table.

    A request reads ``Router._routes`` once and uses that table throughout, even if a reconfigure
    lands meanwhile.
    """

    config: RoutingConfig = field(default_factory=lambda: RoutingConfig(models={}))
    models: dict[tuple[str, str], ServedModel] = field(default_factory=dict)
    # Out-of-distribution bounds of the versions checked (an input_profile, serve.ood.enabled).
    ood: dict[tuple[str, str], OODCheck] = field(default_factory=dict)

    def specs(self, name: str) -> tuple[ModelSpec, ...]:
        specs = self.config.models.get(name)
        if specs is None:
            raise ModelNotFoundError(name, self.config.models)
        return specs

    def spec(self, name: str, version: str) -> ModelSpec:
        specs = self.specs(name)
        for spec in specs:
            if spec.version == version:
                return spec
        raise RequestError(
            f"Unknown version {version!r} of model {name!r}."
            + did_you_mean(version, [s.version for s in specs]),
            status=404,
        )
