"""Names that become paths: traversal, absolute paths, NUL bytes and Unicode look-alikes are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raymlops.data.refs import parse_ref
from raymlops.errors import UnsafeNameError
from raymlops.registry.mlflow_registry import ModelRegistry, RegisteredVersion
from raymlops.security.names import check_ref_path, safe_join, safe_name
from raymlops.serving.spec import ModelSpec

HOSTILE = [
    "../etc",
    "..",
    ".",
    "a/../../b",
    "/etc/passwd",
    "C:\\Windows",
    "a\\b",
    "name\x00.onnx",
    "line\nbreak",
    "\uff0e\uff0e\uff0fetc",  # fullwidth "../": NFKC folds it to ASCII
    "m\u0430del",  # Cyrillic 'a'
    "model\u202egnp.exe",  # right-to-left override
    "ﬁle",  # the "fi" ligature
    "",
    "-starts-with-dash",
    "x" * 129,
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_names_are_refused_with_the_reason(value: str) -> None:
    with pytest.raises(UnsafeNameError, match="model name") as info:
        safe_name(value, "model name")
    assert info.value.value == value


@pytest.mark.parametrize("value", ["flights-delay", "v1.2_rc", "20260101-120000-abc123", "3", "a" * 128])
def test_plain_names_pass(value: str) -> None:
    assert safe_name(value, "name") == value


def test_safe_join_stays_under_the_root_even_through_a_planted_symlink(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    root.mkdir()
    assert safe_join(root, "model", "model.onnx") == root.resolve() / "model" / "model.onnx"
    with pytest.raises(UnsafeNameError):
        safe_join(root, "..", "secret")
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", root / "link")
    with pytest.raises(UnsafeNameError, match="resolves outside"):
        safe_join(root, "link", "model.onnx")


@pytest.mark.parametrize(
    "ref",
    [
        "delta:/data/../etc/flights",
        "lakefs://repo/main/../../other",
        "files:/data/x\x00.parquet",
        "delta:/data/\uff0e\uff0e/flights",
    ],
)
def test_data_refs_with_traversal_nul_or_lookalikes_are_refused(ref: str) -> None:
    with pytest.raises(UnsafeNameError):
        parse_ref(ref)


def test_ordinary_data_refs_still_parse() -> None:
    assert parse_ref("delta:/data/flights@3").pin == "3"
    assert parse_ref("lakefs://repo/main/tables/flights").backend == "lakefs"
    assert check_ref_path("/srv/données/flights.parquet")  # NFC accents are not look-alikes


def test_registry_and_serving_refuse_unsafe_names_before_touching_anything(tmp_path: Path) -> None:
    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"), "e")
    with pytest.raises(UnsafeNameError, match="model name"):
        registry.versions("x' OR name LIKE '%")  # would also be an MLflow filter injection
    with pytest.raises(UnsafeNameError, match="model name"):
        registry.register_version(model_name="../evil", run_id="r", model_files=[], tags={})
    assert not (tmp_path / "mlflow.db").exists()  # refused before the registry was even opened
    with pytest.raises(UnsafeNameError, match="model version"):
        ModelSpec("flights", "../1", "/m.onnx", "3", {"distance": "float"})
    version = RegisteredVersion("m", "1", "run", "file:///srv/artifacts/1/model", {})
    for bad in ("../../api_keys.json", "explainer/../../api_keys.json", "/etc/passwd", "explainer//x"):
        with pytest.raises(UnsafeNameError, match="artifact file name"):
            registry.local_artifact(version, bad)
    # A file in a sub-folder of the model folder is a path of safe names.
    assert registry.local_artifact(version, "explainer/explainer.json") == Path(
        "/srv/artifacts/1/model/explainer/explainer.json"
    )
