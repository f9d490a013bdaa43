"""A multi-node Ray cluster on this machine, for the job API tests (``ray.cluster_utils.Cluster``).

    python -m tests.e2e.ray_cluster run --port P --dashboard-port D [--agent-port A]
        A head with no CPUs (it schedules, runs job drivers and Serve's controller, like a cluster's head
        pod) and two worker nodes with two CPUs each. Prints one JSON line with the node ids once every
        node is up; runs until SIGTERM, then shuts the cluster down.

    python -m tests.e2e.ray_cluster placement DASHBOARD_URL
        Where the work ran, from Ray's state API: node ids of Ray Data tasks, Ray Train workers and
        live Serve replicas, as one JSON line.

Token auth comes from the environment (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN_PATH``) for both.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

WORKERS = 2
WORKER_CPUS = 2
OBJECT_STORE = 200 * 1024**2
# The remote functions Ray Data's operators run blocks through (map, shuffle, split), Ray 2.60.
DATA_TASKS = {"_map_task", "_shuffle_map_task", "_shuffle_reduce_task", "_split_single_block"}


def run(port: int, dashboard_port: int, agent_port: int) -> None:
    from ray.cluster_utils import Cluster

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "gcs_server_port": port,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dashboard_port,
            "dashboard_agent_listen_port": agent_port,
            "object_store_memory": OBJECT_STORE,
        },
    )
    workers = [
        cluster.add_node(num_cpus=WORKER_CPUS, object_store_memory=OBJECT_STORE, resources={f"worker{i}": 1})
        for i in range(WORKERS)
    ]
    cluster.wait_for_nodes()
    nodes = {"head": cluster.head_node.node_id, "workers": [w.node_id for w in workers]}
    print(json.dumps(nodes), flush=True)
    try:
        stop.wait()
    finally:
        cluster.shutdown()


def placement(address: str) -> dict[str, Any]:
    from ray.util.state import list_actors, list_tasks

    tasks = list_tasks(address=address, detail=True, limit=10_000, raise_on_missing_output=False)
    actors = list_actors(address=address, detail=True, limit=10_000, raise_on_missing_output=False)
    # The work: tasks that reserve a CPU. Ray Train's dataset split coordinator also starts zero-CPU
    # ``_split_single_block`` tasks to even out its shards' blocks; those may run on any node, the head too.
    data = [
        t
        for t in tasks
        if t.func_or_class_name in DATA_TASKS and t.node_id and (t.required_resources or {}).get("CPU", 0) > 0
    ]
    return {
        "data": sorted({t.node_id for t in data}),
        "train": sorted({a.node_id for a in actors if a.class_name == "RayTrainWorker"}),
        "serve": sorted(
            {
                a.node_id
                for a in actors
                if (a.class_name or "").startswith("ServeReplica:") and a.state == "ALIVE"
            }
        ),
        # What ran where, for a failure's message: node id -> "name (job id, state)" of those tasks.
        "data_tasks_by_node": {
            node: sorted(
                {f"{t.func_or_class_name} ({t.job_id}, {t.state})" for t in data if t.node_id == node}
            )
            for node in {t.node_id for t in data}
        },
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.ray_cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("run")
    start.add_argument("--port", type=int, required=True)
    start.add_argument("--dashboard-port", type=int, required=True)
    start.add_argument("--agent-port", type=int, required=True)
    where = sub.add_parser("placement")
    where.add_argument("address")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.port, args.dashboard_port, args.agent_port)
    else:
        print(json.dumps(placement(args.address)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
