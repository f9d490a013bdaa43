"""Validate manifests offline: KubeRay kinds against their CRD schemas, core kinds and every embedded pod
template against Kubernetes' own schemas (``kubernetes-validate``), ``ray up`` configs against the schema
in the ray wheel.

Like ``kubectl apply --validate=strict``, a field a schema does not define is an error: CRD schemas leave
``additionalProperties`` open (the API server prunes unknown fields silently), so a misspelt field such
as ``workerGroupSpec`` would otherwise pass and be dropped on the cluster.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from raymlops.errors import MissingDependencyError

__all__ = ["KUBERNETES_VERSION", "crd_schema", "validate_core", "validate_kuberay", "validate_ray_up"]

KUBERNETES_VERSION = "1.33.0"  # the core schemas kubernetes-validate checks against
_CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
    "RayCronJob": "ray.io_raycronjobs.yaml",
}


def _strict(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema with unknown fields forbidden and defaulted fields optional.

    The API server fills ``default`` values before it validates, so a field with a default is never
    missing there; plain JSON-schema validation would report it (the schemas README's caveat).
    """
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    props = out.get("properties")
    if isinstance(props, dict):
        if "required" in out:
            out["required"] = [r for r in out["required"] if "default" not in props.get(r, {})]
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


# controller-gen writes each version as an item of spec.versions at this indent, its name at the next.
_VERSION_ITEM = re.compile(r"^  - ", re.MULTILINE)
_VERSION_NAME = re.compile(r"^    name: (\S+)$", re.MULTILINE)
_GROUP = re.compile(r"^  group: (\S+)$", re.MULTILINE)


def _load_yaml(text: str) -> Any:
    import yaml

    # libyaml's parser: the pure-Python one takes ~5 s for one of these 1 MB files.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)


@cache
def _crd_schema(schema_dir: str, kind: str, api_version: str) -> dict[str, Any]:
    """The strict schema of one version, parsing only that version's part of the CRD file.

    Building Python objects for a whole 1.4 MB CRD takes seconds; a test validates one version of each
    kind. The slice is checked (its name, the group) and the whole file parsed if the layout differs.
    """
    text = (Path(schema_dir) / _CRD_FILES[kind]).read_text()
    group, _, name = api_version.partition("/")
    starts = [m.start() for m in _VERSION_ITEM.finditer(text)]
    header = _GROUP.search(text[: starts[0]] if starts else "")
    for start, end in zip(starts, [*starts[1:], len(text)], strict=True):
        found = _VERSION_NAME.search(text, start, end)
        if header and header.group(1) == group and found and found.group(1) == name:
            item = _load_yaml("    " + text[start + 4 : end])  # the item's mapping, without "- "
            if isinstance(item, dict) and item.get("name") == name:
                return dict(_strict(item["schema"]["openAPIV3Schema"]))
    crd = _load_yaml(text)
    served = {f"{crd['spec']['group']}/{v['name']}": v for v in crd["spec"]["versions"]}
    if api_version not in served:
        raise ValueError(f"{kind} has no version {api_version!r}; the CRD serves {', '.join(served)}.")
    return dict(_strict(served[api_version]["schema"]["openAPIV3Schema"]))


def crd_schema(schema_dir: Path, kind: str, api_version: str) -> dict[str, Any]:
    """The strict schema of ``kind`` at ``api_version`` (e.g. ``ray.io/v1``) from KubeRay's CRD files.

    Raises:
        ValueError: No CRD for the kind, or the CRD has no such version (the message lists the ones it has).
    """
    if kind not in _CRD_FILES:
        raise ValueError(f"{kind!r} is no KubeRay kind; known: {', '.join(_CRD_FILES)}.")
    return copy.deepcopy(_crd_schema(str(schema_dir), kind, api_version))


def _errors(schema: Mapping[str, Any], document: Any) -> list[str]:
    try:
        import jsonschema
    except ImportError:
        raise MissingDependencyError("jsonschema", "Validating manifests") from None
    validator = jsonschema.Draft7Validator(schema)
    return sorted(
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    )


def validate_kuberay(manifest: Mapping[str, Any], schema_dir: Path) -> list[str]:
    """Problems of a KubeRay resource against its CRD schema; empty when it is valid."""
    return _errors(
        crd_schema(schema_dir, str(manifest.get("kind")), str(manifest.get("apiVersion"))), manifest
    )


def _pod_templates(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``template`` holding a pod spec (``{metadata, spec: {containers}}``) inside ``node``."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "template" and isinstance(value, Mapping) and "containers" in value.get("spec", {}):
                yield where, value
            else:
                yield from _pod_templates(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _pod_templates(value, f"{path}[{i}]")


def validate_core(manifest: Mapping[str, Any], version: str = KUBERNETES_VERSION) -> list[str]:
    """Problems of a core resource, or of each pod template a custom resource embeds, in strict mode.

    Each embedded template is checked as a core ``PodTemplate``: kubernetes-validate knows no custom kind.
    """
    try:
        import kubernetes_validate
    except ImportError:
        raise MissingDependencyError("kubernetes-validate", "Validating manifests") from None
    if "." in str(manifest.get("apiVersion", "")).split("/")[0]:  # a custom group (ray.io/v1)
        documents = [
            (
                where,
                {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template},
            )
            for where, template in _pod_templates(manifest)
        ]
    else:
        documents = [("<root>", dict(manifest))]
    problems = []
    for where, document in documents:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{where}: {path}: {exc.message}")
    return problems


def validate_ray_up(config: Mapping[str, Any]) -> list[str]:
    """Problems of a ``ray up`` cluster config against ``ray/autoscaler/ray-schema.json``."""
    from importlib.util import find_spec

    # Located without importing ray (seconds of start-up for one JSON file).
    spec = find_spec("ray")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("ray", "Validating a ray up config")
    schema_path = Path(spec.origin).parent / "autoscaler" / "ray-schema.json"
    return _errors(json.loads(schema_path.read_text()), config)
