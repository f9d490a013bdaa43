"""Ray Train's dataset config with the valid split sharded over every row: no row dropped, none twice.

``DataConfig`` splits each dataset named in ``datasets_to_split`` with ``streaming_split(equal=True)``:
equal shards, so up to ``workers - 1`` rows are dropped each pass. That is right for training steps and
wrong for a validation figure (a 1,655-row split scored 1,654 rows on two workers). Here ``train`` keeps
Ray's equal split and ``valid`` is split with ``equal=False``: the shards differ by a block at most and
together hold every row once, so the ranks' merged metric partials are the whole split's.
Imported only by ``fit_with_ray_train`` (it imports ``ray.train``).
"""

from __future__ import annotations

from typing import Any

from ray.train import DataConfig

__all__ = ["ShardedValidConfig"]

VALID = "valid"


class ShardedValidConfig(DataConfig):
    """``train`` split equally (Ray's default), ``valid`` split over every row, anything else read whole."""

    def __init__(self) -> None:
        super().__init__(datasets_to_split=["train"])

    def configure(
        self,
        datasets: dict[str, Any],
        world_size: int,
        worker_handles: Any,
        worker_node_ids: Any,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        others = {name: ds for name, ds in datasets.items() if name != VALID}
        output = super().configure(others, world_size, worker_handles, worker_node_ids, **kwargs)
        if VALID in datasets:
            valid = datasets[VALID].copy(datasets[VALID])
            if valid.name is None:
                valid.set_name(VALID)
            valid.context.execution_options = self._resolve_execution_options(VALID)
            for rank, split in enumerate(valid.streaming_split(world_size, equal=False)):
                output[rank][VALID] = split
        return output
