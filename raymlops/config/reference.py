"""The config reference, generated from the schemas: ``python -m raymlops.config.reference``.

Every key of ``raymlops.config.schema`` with its type, its default and the comment written next to it
(and the comment lines right above it) in the schema's source, one table per config group. The
schemas are the single source of truth: ``docs/config-reference.md`` is this module's output, and
``tests/unit/test_config_reference.py`` fails when the checked-in file differs from it, so a key
added without regenerating the page (or without a comment) shows up in review.

    python -m raymlops.config.reference > docs/config-reference.md
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import io
import json
import sys
import tokenize
import types
import typing
from collections.abc import Iterator
from functools import cache
from typing import Any

from omegaconf import MISSING

from raymlops.config import schema

__all__ = ["render"]


def _model_options() -> dict[str, type]:
    """The job's ``model: Any`` leaves the group open: each registered family's schema, by option name."""
    from raymlops.models.registry import FAMILIES, family_class

    schemas = {name: family_class(name).config_schema for name in FAMILIES}
    return {name: cls for name, cls in schemas.items() if cls is not None}


@dataclasses.dataclass(frozen=True)
class _Key:
    name: str
    annotation: str  # as written in the schema
    default: str
    comment: str


@cache
def _source_notes(cls: type) -> dict[str, tuple[str, str]]:
    """field -> (annotation as written, its comments): the comment on the field's first line, after the
    comment lines right above it."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    comments: dict[int, str] = {}  # 1-based line -> comment text
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    [class_def] = ast.parse(source).body
    assert isinstance(class_def, ast.ClassDef)
    notes: dict[str, tuple[str, str]] = {}
    for node in class_def.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        line = node.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#"):
            above.insert(0, comments.get(line, ""))
            line -= 1
        trailing = comments.get(node.lineno, "")
        notes[node.target.id] = (ast.unparse(node.annotation), " ".join([*above, trailing]).strip())
    return notes


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass ``tp`` is, or holds as ``X | None``."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return None  # dict[str, X]: a mapping of groups, documented as `<key>.<name>`
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def _enum_in(tp: Any) -> type[enum.Enum] | None:
    candidates = [tp, *typing.get_args(tp)]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, enum.Enum)), None)


def _render_value(value: Any) -> str:
    if value is MISSING:
        return "(required)"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if dataclasses.is_dataclass(value):
        return "(group)"
    if value is None:
        return "`null`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{json.dumps(value)}`"


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING


def _cell(text: str) -> str:
    # `<path>` in a comment would be read as an HTML tag.
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _sections(prefix: str, cls: type) -> Iterator[tuple[str, type, list[_Key]]]:
    """(dotted group, its schema, its keys), then the same for every nested group, depth first."""
    notes = _source_notes(cls)
    hints = typing.get_type_hints(cls)
    keys: list[_Key] = []
    nested: list[tuple[str, type]] = []
    for f in dataclasses.fields(cls):
        annotation, comment = notes.get(f.name, (str(hints[f.name]), ""))
        tp = hints[f.name]
        group = _dataclass_in(tp)
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        if group is not None:
            nested.append((dotted, group))
            default = _default(f)
            shown = "`null`" if default is None else f"[{dotted}](#{_anchor(dotted)})"
            keys.append(_Key(f.name, annotation, shown, comment))
            continue
        if typing.get_origin(tp) is dict and (value_cls := _dataclass_in(typing.get_args(tp)[1])):
            nested.append((f"{dotted}.NAME", value_cls))
        kind = _enum_in(tp)
        if kind is not None:
            choices = ", ".join(f"`{m.value}`" for m in kind)
            annotation = f"{annotation}: {choices}"
        keys.append(_Key(f.name, annotation, _render_value(_default(f)), comment))
    yield prefix, cls, keys
    for dotted, group in nested:
        yield from _sections(dotted, group)


def _anchor(dotted: str) -> str:
    return "".join(c for c in dotted.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def _enum_notes(kind: type[enum.Enum]) -> dict[str, str]:
    source = inspect.getsource(kind)
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    notes = {}
    [class_def] = ast.parse(source).body
    assert isinstance(class_def, ast.ClassDef)
    for node in class_def.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            notes[node.targets[0].id] = comments.get(node.lineno, "")
    return notes


def _table(keys: list[_Key]) -> list[str]:
    out = ["| key | type | default | description |", "|---|---|---|---|"]
    for k in keys:
        out.append(f"| `{k.name}` | {_cell(k.annotation)} | {_cell(k.default)} | {_cell(k.comment)} |")
    return out


def render() -> str:
    """The whole reference as Markdown (what ``docs/config-reference.md`` holds)."""
    out = [
        "# Config reference",
        "",
        "<!-- Generated by `python -m raymlops.config.reference > docs/config-reference.md` from",
        "     raymlops/config/schema.py; do not edit by hand (tests/unit/test_config_reference.py). -->",
        "",
        "Every key of the job config (`configs/job.yaml` and its groups), from the structured-config",
        "schemas in `raymlops/config/schema.py`: type, default, and the comment next to the key in the",
        "schema. Set any of them as a Hydra override (`python -m raymlops.job serve.port=8080`), in an",
        "experiment (`configs/experiment/*.yaml`) or in a group option (`configs/<group>/*.yaml`); a key",
        "that is not listed here fails at compose time. `${state_dir}` is the state root: `RAYMLOPS_HOME`,",
        "else `.raymlops` under the working directory.",
        "",
    ]
    sections = list(_sections("", schema.JobConfig))
    for option, cls in _model_options().items():
        sections.extend((f"model ({option})", c, k) for _, c, k in _sections("", cls))
    out.append("Groups: " + ", ".join(f"[{d or 'job'}](#{_anchor(d or 'job')})" for d, _, _ in sections))
    out.append("")
    enums: dict[str, type[enum.Enum]] = {}
    for dotted, cls, keys in sections:
        title = dotted or "job"
        out += [f"## {title}", "", f"Schema: `{cls.__name__}`.", ""]
        if dotted.startswith("model ("):
            option = dotted[len("model (") : -1]
            out += [f"The `model` group with `model={option}` (`configs/model/{option}.yaml`).", ""]
        out += [*_table(keys), ""]
        for hint in typing.get_type_hints(cls).values():
            if (kind := _enum_in(hint)) is not None:
                enums[kind.__name__] = kind
    out += ["## Choices", "", "What each value of an enumerated key means.", ""]
    for name in sorted(enums):
        notes = _enum_notes(enums[name])
        out += [f"### {name}", "", "| value | meaning |", "|---|---|"]
        out += [f"| `{m.value}` | {_cell(notes.get(m.name, ''))} |" for m in enums[name]]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
