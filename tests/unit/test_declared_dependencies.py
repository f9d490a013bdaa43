"""Every third-party package raymlops imports is declared in pyproject.toml's dependencies.

A package that only arrives through another one (scipy via shap, PyYAML via ray) breaks the day that
other package drops it; this reads every ``import`` line of the library and maps it to its distribution.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]

# Imported inside a function that raises MissingDependencyError when absent: declared in the dev extra.
OPTIONAL = {"jsonschema", "kubernetes_validate"}


def _top_level_imports() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "raymlops").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"raymlops", "__future__"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_imported_package_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _names(project["dependencies"])
    dev = _names(project["optional-dependencies"]["dev"])
    distributions = packages_distributions()
    missing = []
    for module in sorted(_top_level_imports()):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        allowed = declared | (dev if module in OPTIONAL else set())
        if not names & allowed:
            missing.append(f"{module} (distribution {', '.join(sorted(names))})")
    assert not missing, f"imported by raymlops but not in pyproject's dependencies: {missing}"
    assert _top_level_imports() >= OPTIONAL, "an OPTIONAL entry is no longer imported: drop it"
