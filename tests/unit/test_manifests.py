"""The checked-in KubeRay manifests and ``ray up`` config: generated from config, valid against the real
schemas (KubeRay's CRDs, core Kubernetes, Ray's cluster launcher), and the validators reject bad ones."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from raymlops.cli import main
from raymlops.deploy.manifests import (
    DEFAULT_OUT,
    DEFAULT_VALUES,
    DeploySettings,
    job_config,
    load_settings,
    render,
    resources,
    stale,
)
from raymlops.deploy.serve_app import parse_args
from raymlops.deploy.validate import validate_core, validate_kuberay, validate_ray_up
from raymlops.errors import ConfigError

# KubeRay's CRDs (Apache-2.0, LICENSE beside them) live in the repository: a fresh clone never skips.
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "kuberay"
KUBERAY = sorted((DEFAULT_OUT / "kuberay").glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    return {p.stem: _load(p) for p in KUBERAY}


@pytest.fixture(scope="module")
def settings() -> DeploySettings:
    return load_settings(DEFAULT_VALUES)


@pytest.fixture(scope="module")
def job_cfg(settings: DeploySettings) -> Any:  # the one compose of this module (a second per test is ~1 s)
    return job_config(settings, settings.job_overrides)


def test_checked_in_manifests_are_what_the_generator_writes(
    settings: DeploySettings, job_cfg: Any, tmp_path: Path
) -> None:
    texts = render(resources(settings, job_cfg, settings.job_overrides))
    on_disk = [*(DEFAULT_OUT / "kuberay").glob("*.yaml"), *(DEFAULT_OUT / "cluster").glob("*.yaml")]
    assert sorted(texts) == sorted(str(p.relative_to(DEFAULT_OUT)) for p in on_disk)  # none left over
    assert stale(texts, DEFAULT_OUT) == [], "run: raymlops deploy manifests"
    # ... and a hand edit is noticed (the assertion above would pass on a check that compares nothing).
    shutil.copytree(DEFAULT_OUT, tmp_path / "deploy")
    edited = tmp_path / "deploy" / "kuberay" / "rayjob.yaml"
    edited.write_text(edited.read_text().replace("backoffLimit: 0", "backoffLimit: 3"))
    (tmp_path / "deploy" / "cluster" / "ray-up.yaml").unlink()
    assert stale(texts, tmp_path / "deploy") == ["kuberay/rayjob.yaml", "cluster/ray-up.yaml"]


def test_cli_refuses_an_unknown_option(capsys: Any) -> None:
    with pytest.raises(SystemExit) as info:
        main(["deploy", "manifests", "--chekc"])
    assert info.value.code == 2 and "--chekc" in capsys.readouterr().err


def test_every_kuberay_kind_is_there(manifests: dict[str, dict[str, Any]]) -> None:
    kinds = {m["kind"] for m in manifests.values()}
    assert kinds == {"RayCluster", "RayJob", "RayService", "RayCronJob", "PersistentVolumeClaim"}


@pytest.mark.parametrize("path", [p for p in KUBERAY if p.stem.startswith("ray")], ids=lambda p: p.stem)
def test_manifest_validates_against_its_kuberay_crd(path: Path) -> None:
    assert validate_kuberay(_load(path), SCHEMAS) == []


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.stem)
def test_manifest_validates_against_core_kubernetes_schemas(path: Path) -> None:
    # Custom kinds: every pod template they embed, checked as a core PodTemplate in strict mode.
    assert validate_core(_load(path)) == []


def test_ray_up_config_validates_against_the_ray_wheel_schema() -> None:
    assert validate_ray_up(_load(DEFAULT_OUT / "cluster" / "ray-up.yaml")) == []


def test_kuberay_validator_rejects_a_misspelt_field_a_wrong_type_and_a_missing_one(
    manifests: dict[str, dict[str, Any]],
) -> None:
    cluster = manifests["raycluster"]
    misspelt = copy.deepcopy(cluster)
    misspelt["spec"]["workerGroupSpec"] = misspelt["spec"].pop("workerGroupSpecs")
    wrong_type = copy.deepcopy(cluster)
    wrong_type["spec"]["workerGroupSpecs"][0]["minReplicas"] = "one"
    missing = copy.deepcopy(cluster)
    del missing["spec"]["headGroupSpec"]
    assert any("workerGroupSpec" in e for e in validate_kuberay(misspelt, SCHEMAS))
    assert any("minReplicas" in e and "integer" in e for e in validate_kuberay(wrong_type, SCHEMAS))
    assert any("headGroupSpec" in e for e in validate_kuberay(missing, SCHEMAS))
    job = copy.deepcopy(manifests["rayjob"])
    job["spec"]["shutdownAfterJobFinish"] = True  # one letter short: the API server would drop it
    assert any("shutdownAfterJobFinish" in e for e in validate_kuberay(job, SCHEMAS))


def test_core_validator_rejects_a_bad_pod_template_and_a_bad_claim(
    manifests: dict[str, dict[str, Any]],
) -> None:
    service = copy.deepcopy(manifests["rayservice"])
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["imagePullPolicyy"] = "Always"
    assert any("imagePullPolicyy" in e for e in validate_core(service))
    claim = copy.deepcopy(manifests["pvc"])
    claim["spec"]["accessModes"] = "ReadWriteMany"  # a string, not a list
    assert validate_core(claim)


def test_ray_up_validator_rejects_a_bad_config() -> None:
    config = _load(DEFAULT_OUT / "cluster" / "ray-up.yaml")
    config["max_workers"] = "many"
    del config["provider"]
    problems = validate_ray_up(config)
    assert any("max_workers" in p for p in problems) and any("provider" in p for p in problems)


def test_shared_values_come_from_the_job_config(
    manifests: dict[str, dict[str, Any]], settings: DeploySettings
) -> None:
    overrides = " ".join(settings.job_overrides[:2])
    job, cron, service = manifests["rayjob"]["spec"], manifests["raycronjob"]["spec"], manifests["rayservice"]
    assert job["entrypoint"].startswith(f"python -m raymlops.job {overrides}")
    assert f"jobs/retrain.py {overrides}" in cron["jobTemplate"]["entrypoint"]
    assert cron["schedule"] == "0 3 * * 1"  # retrain.schedule in deploy/values.yaml's overrides
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    [app] = serve["applications"]
    assert (app["name"], app["route_prefix"], serve["http_options"]["port"]) == (
        "raymlops-prod",
        "/prod",
        8000,
    )
    assert app["args"]["model"] == "flights-delay-prod@champion"
    # Every pod of every resource mounts the same claim as state_dir and runs as the image's user.
    clusters = [manifests["raycluster"]["spec"], job["rayClusterSpec"], cron["jobTemplate"]["rayClusterSpec"]]
    clusters.append(service["spec"]["rayClusterConfig"])
    for cluster in clusters:
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            pod = group["template"]["spec"]
            [container] = pod["containers"]
            assert {"name": "RAYMLOPS_HOME", "value": settings.state_volume.mount_path} in container["env"]
            assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == settings.state_volume.claim
            assert pod["securityContext"]["runAsNonRoot"] is True
            gpu = "nvidia.com/gpu" in container["resources"]["limits"]
            assert container["image"].endswith("-cuda" if gpu else "-cpu")
            assert gpu == (group.get("groupName") == "gpu")


def test_bad_settings_name_the_key(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("imagee: x\n")
    with pytest.raises(ConfigError, match=r"imagee.*image"):
        load_settings(values)
    values.write_text("cpu_workers: {min: 3, replicas: 1}\n")
    with pytest.raises(ConfigError, match=r"cpu_workers.*min <= replicas"):
        load_settings(values)


def test_a_cluster_too_small_for_the_trainer_and_a_missing_schedule_are_refused(job_cfg: Any) -> None:
    small = load_settings(DEFAULT_VALUES)
    small.cpu_workers.max, small.gpu_workers.max = 0, 0
    with pytest.raises(ConfigError, match=r"cpu_workers\.max.*trainer\.scaling"):
        resources(small, job_cfg, small.job_overrides)
    unscheduled = job_cfg.copy()
    unscheduled.retrain.schedule = None
    with pytest.raises(ConfigError, match=r"retrain\.schedule"):
        resources(load_settings(DEFAULT_VALUES), unscheduled, ["+experiment=quickstart"])


def test_serve_app_args_are_checked() -> None:
    assert parse_args({"overrides": ["env=prod"], "model": "m@champion"}) == (["env=prod"], "m@champion")
    with pytest.raises(ConfigError, match=r"args\.overide.*overrides"):
        parse_args({"overide": []})
    with pytest.raises(ConfigError, match=r"args\.overrides"):
        parse_args({"overrides": "env=prod"})
