"""Multi-node, multi-GPU scheduling without GPUs: a real two-node Ray cluster (``ray.cluster_utils``) whose
worker nodes declare one logical GPU each; our Ray Train wiring must put one GPU worker on each node.

It runs in a subprocess: a process can be connected to one Ray cluster only, and the rest of the session
shares the ``ray_local`` one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import free_port

_SCRIPT = textwrap.dedent(
    """
    import functools, json, os, sys
    from pathlib import Path

    import ray, ray.data, ray.train
    from omegaconf import OmegaConf
    from ray.cluster_utils import Cluster
    from ray.train.torch import TorchConfig, TorchTrainer

    from raymlops.training.ray_train import fit_with_ray_train

    out, port = Path(sys.argv[1]), int(sys.argv[2])
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "gcs_server_port": port, "include_dashboard": False},  # no GPU
    )
    workers = [cluster.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)

    def loop(config):
        context = ray.train.get_context()
        record = {
            "rank": context.get_world_rank(),
            "node": ray.get_runtime_context().get_node_id(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        (Path(config["out"]) / f"rank{record['rank']}.json").write_text(json.dumps(record))
        ray.train.report({"rank": record["rank"]})

    trainer_cfg = OmegaConf.create(
        {
            "scaling": {"num_workers": 2, "use_gpu": True, "cpus_per_worker": 1.0},
            "max_failures": 0,
            "checkpoints_to_keep": 1,
        }
    )
    # gloo: the logical GPUs have no CUDA behind them, so NCCL cannot start; placement is what is tested.
    trainer_cls = functools.partial(TorchTrainer, torch_config=TorchConfig(backend="gloo"))
    datasets = {"train": ray.data.range(8)}
    fit_with_ray_train(trainer_cls, loop, {"out": str(out)}, datasets, trainer_cfg, str(out / "runs"), "gpus")
    nodes = {"head": cluster.head_node.node_id, "workers": [n.node_id for n in workers]}
    (out / "nodes.json").write_text(json.dumps(nodes))
    # No cluster.shutdown(): it drains each node for up to 30 s. The test kills this process group.
    os._exit(0)
    """
)


def test_gpu_workers_spread_over_two_nodes_with_one_gpu_each(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    script = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, str(tmp_path), str(free_port())],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the cluster's processes are in its group: stopped together below
    )
    try:
        _, stderr = script.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGKILL)
    assert script.returncode == 0, stderr[-3000:]
    nodes = json.loads((tmp_path / "nodes.json").read_text())
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    placed = {r["node"] for r in ranks}
    assert placed == set(nodes["workers"])  # one worker per GPU node, none on the GPU-less head
    for record in ranks:
        assert len(record["gpu_ids"]) == 1  # each worker holds exactly the one GPU it asked for
        assert record["cuda_visible_devices"] == record["gpu_ids"][0]
