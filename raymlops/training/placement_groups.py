"""Give back the CPUs of Ray Train runs whose controller died: a Tune trial stopped by ASHA, a killed trial.

Ray Train's controller creates its workers' placement group; Ray removes a group when its creator *job*
ends, not when its creator *actor* dies. Train's own ``PlacementGroupCleaner`` asks the state API whether
the controller is alive, and that API is served by the dashboard, which the embedded Ray runs without
(``ray.include_dashboard: false``): the query fails after 40 s and the group keeps its CPUs until the job
ends. Measured: two trials ASHA stopped held 1 of 4 CPUs, and a later Ray Data read in the same Ray
waited for CPUs forever. GCS itself records that a group's creating actor is dead; this reads that record
(``ray._private.state`` and the GCS protobuf, since ``ray.util.placement_group_table`` leaves it out).
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["actor_created_groups", "release_placement_groups"]

logger = logging.getLogger(__name__)

_LIVE = ("PENDING", "PREPARED", "CREATED", "RESCHEDULING")


def actor_created_groups() -> dict[str, bool]:
    """This job's live placement groups made by an actor (never a driver's own, never a detached one:
    those outlive their creator by design), hex id -> whether the creating actor is dead."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    table: Any = gcs_pb2.PlacementGroupTableData  # type: ignore[attr-defined]  # generated, untyped
    job = ray.get_runtime_context().get_job_id()
    groups = {}
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        group = table.FromString(raw)
        made_by_actor = bool(group.creator_actor_id) and set(group.creator_actor_id) != {0xFF}  # nil: driver
        live = table.PlacementGroupState.Name(group.state) in _LIVE
        if made_by_actor and live and not group.is_detached and group.creator_job_id.hex() == job:
            groups[group.placement_group_id.hex()] = bool(group.creator_actor_dead)
    return groups


def release_placement_groups(keep: set[str] | None = None, wait_s: float = 0.0) -> int:
    """Remove this job's placement groups whose creating actor died; returns how many.

    With ``keep`` (the groups that were live before, e.g. before a search began), wait up to ``wait_s``
    for every other actor-made group to go, removing each as its creator dies: a stopped Tune trial's
    actor exits asynchronously, and its Train controller dies with it a moment later.
    """
    from ray import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    removed = 0
    deadline = time.monotonic() + wait_s
    while True:
        groups = actor_created_groups()
        for hex_id, creator_dead in groups.items():
            if creator_dead:
                remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id))))
                removed += 1
        waiting = [g for g, dead in groups.items() if not dead and keep is not None and g not in keep]
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if removed:
        logger.info("placement groups of dead Ray Train controllers removed count=%d", removed)
    if keep is not None and waiting:
        logger.warning("placement groups still held after %.0f s: %s", wait_s, ", ".join(waiting))
    return removed
