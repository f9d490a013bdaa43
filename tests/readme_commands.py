"""The commands README.md shows, as argument lists: what tests/unit/test_readme_commands.py runs or checks,
and where the quickstart e2e takes the README's quick run from (so the docs cannot drift from the code).

A command is a line of a fenced ``bash`` block (or the command of a ``cron`` line), joined over ``\\``
continuations and open quotes, comments dropped, split as the shell splits it. What the README writes
for a reader, not for a shell, is expanded into the commands it stands for:

- ``[--json]``, ``[--alias challenger]``: the optional part is kept (its options must exist too);
- ``log|show|diff`` (alternatives inside a word): one command per alternative;
- ``raymlops retrain | raymlops scheduler`` and ``keys add ci-bot --role predictor | list | revoke KEY_ID``
  (alternatives between words): a part starting with a program is a command of its own, one starting
  with an option replaces the first part's last option (``--promote | --stop``), any other part the
  first part's words after ``keys`` (see ``_alternatives``);
- placeholders (``KEY_ID``, ``...``) become sample values (``PLACEHOLDERS``);
- shell around a command (``cd DIR &&``, ``VAR=value`` before it, ``>> log 2>&1`` after it) is dropped,
  and ``.venv/bin/python`` is ``python``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = ["README", "Command", "quick_run_overrides", "readme_commands"]

README = Path(__file__).resolve().parents[1] / "README.md"
QUICK_RUN_COMMENT = "a quick run"  # how the README's comment on the quick-run line starts
# Words the README writes for the reader -> a value a parser accepts.
PLACEHOLDERS = {
    "KEY_ID": "k1a2b3c4",
    "...": "2026-11-26T00:00",  # only in ``[--until ...]``
}
# Bracketed words that name something to fill in rather than an option: dropped.
FILL_IN = {"overrides", "options"}


@dataclass(frozen=True)
class Command:
    line: int  # README.md line where the command starts
    text: str  # as the README writes it (continuations joined, comment dropped)
    argv: tuple[str, ...]  # one expanded command, split as the shell would
    comment: str  # the README's comment on the line, "" if none


def _blocks(text: str) -> list[tuple[int, str, str]]:
    """(first line number, language, body) of every fenced block."""
    out = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        out.append((text[: match.start()].count("\n") + 2, match.group(1), match.group(2)))
    return out


def _statements(start: int, body: str) -> list[tuple[int, str, str]]:
    """(line, command text, comment) per shell statement of a block body."""
    out, pending, first = [], "", start
    for number, line in enumerate(body.splitlines(), start):
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not pending:
            first = number
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the statement goes on
            continue
        command, comment = _split_comment(pending)
        out.append((first, " ".join(command.split()), comment))
        pending = ""
    assert not pending, f"README.md line {first}: an unterminated command: {pending!r}"
    return out


def _split_comment(statement: str) -> tuple[str, str]:
    """(command, comment): the comment starts at a ``#`` that begins a word outside quotes."""
    quote = ""
    for i, char in enumerate(statement):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or statement[i - 1].isspace()):
            return statement[:i].strip(), statement[i + 1 :].strip()
    return statement.strip(), ""


def _optional(words: list[str]) -> list[str]:
    """``[--json]`` -> ``--json``, ``[--alias x]`` -> ``--alias x``; ``[overrides]`` -> nothing. A word
    with ``=`` is an override whose brackets are its value (``hydra.searchpath=[file://...]``)."""
    out = []
    for word in words:
        if "=" in word:
            out.append(word)
            continue
        inner = word.removeprefix("[").removesuffix("]")
        if inner != word and inner in FILL_IN:
            continue
        out.append(PLACEHOLDERS.get(inner, inner))
    return out


def _alternatives(words: list[str]) -> list[list[str]]:
    """Split ``a b c | d e`` into commands (see the module docstring)."""
    parts: list[list[str]] = [[]]
    for word in words:
        if word == "|":
            parts.append([])
        else:
            parts[-1].append(word)
    first, out = parts[0], [parts[0]]
    for part in parts[1:]:
        if part and (part[0] in ("python", "raymlops") or part[0].startswith("python")):
            out.append(part)
            continue
        if part and part[0].startswith("-"):  # "--promote | --stop": the last option replaced
            last = max(i for i, w in enumerate(first) if w.startswith("-"))
            out.append(first[:last] + part)
            continue
        # "keys add ci-bot --role predictor | list | revoke KEY_ID": the part replaces the first part's
        # words from the verb after "keys" on (the one shape of this kind the README has).
        assert "keys" in first, f"no rule for the alternative {part} of {first}"
        verb = first.index("keys") + 1
        out.append(first[:verb] + part)
    return out


def _in_word(words: list[str]) -> list[list[str]]:
    """``data log|show|diff`` -> one command per alternative (words outside quotes only)."""
    for i, word in enumerate(words):
        if "|" in word and not word.startswith(("{", "'", '"')) and "=" not in word and " " not in word:
            return [c for alt in word.split("|") for c in _in_word([*words[:i], alt, *words[i + 1 :]])]
    return [words]


def _simple(words: list[str]) -> list[str]:
    """The command of ``cd DIR && VAR=value .venv/bin/python x.py args >> log 2>&1``: python x.py args."""
    if "&&" in words:
        words = words[len(words) - words[::-1].index("&&") :]
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        words = words[1:]
    for i, word in enumerate(words):
        if word in (">", ">>") or word.startswith(("2>", ">")):
            words = words[:i]
            break
    return ["python" if w.endswith("/bin/python") and i == 0 else w for i, w in enumerate(words)]


def readme_commands(path: Path = README) -> list[Command]:
    """Every command README.md shows, expanded (one entry per command a reader could type)."""
    commands = []
    for start, language, body in _blocks(path.read_text()):
        if language == "cron":  # a crontab line: five schedule fields, then the command
            body = "\n".join(
                " ".join(line.split()[5:]) for line in body.splitlines() if line and not line.startswith("#")
            )
        elif language != "bash":
            continue
        for line, text, comment in _statements(start, body):
            words = _simple(shlex.split(text))
            for alternative in _alternatives(_optional(words)):
                for argv in _in_word(alternative):
                    commands.append(Command(line, text, tuple(argv), comment))
    return commands


def quick_run_overrides(path: Path = README) -> list[str]:
    """The overrides of the README's quick run (``python -m raymlops.job ... # a quick run``)."""
    [quick] = [c for c in readme_commands(path) if c.comment.startswith(QUICK_RUN_COMMENT)]
    assert quick.argv[:3] == ("python", "-m", "raymlops.job"), quick
    return list(quick.argv[3:])
