"""The front door (``raymlops ...`` / ``python -m raymlops ...``): every command listed with its own help,
the README's commands among them, logging set up once (text or JSON lines), one line for an error (the
traceback behind ``--debug``), and the progress the library reports for long work."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from raymlops.cli import build_parser, main
from raymlops.cli.console import progress_bar
from raymlops.state.backup import backup_state
from raymlops.state.restore import restore_state

README = Path(__file__).resolve().parents[2] / "README.md"


def _children(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subs[0].choices) if subs else {}


def _leaves(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    children = _children(parser)
    if not children:
        yield prefix
    for name, child in children.items():
        yield from _leaves(child, (*prefix, name))


def test_help_lists_every_command_and_each_has_generated_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    top = capsys.readouterr().out
    assert info.value.code == 0
    groups = _children(build_parser())
    for group in groups:
        assert f"\n    {group} " in top, group  # listed with its help line
    for overview in ("raymlops data log|show|diff|audit|ingest|erase", "raymlops security rotate-kek|audit"):
        assert overview in top
    leaves = list(_leaves(build_parser()))
    assert len(leaves) >= 41  # 33 commands before the front door, 8 new
    for words in leaves:
        with pytest.raises(SystemExit) as info:
            main([*words, "--help"])
        out = capsys.readouterr().out
        assert info.value.code == 0 and out.startswith(f"usage: raymlops {' '.join(words)} "), words
        assert "--log-format" in out and "--debug" in out  # the console options on every command


def _readme_commands() -> list[list[str]]:
    """The words after ``raymlops`` / ``python -m raymlops`` in the README's code (blocks and spans)."""
    text = README.read_text()
    code = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S) + re.findall(r"`([^`\n]+)`", text)
    found = []
    for snippet in code:
        for match in re.finditer(
            r"(?:python -m raymlops|(?<![\w./-])raymlops)((?: +[^\s#`]+){1,2})", snippet
        ):
            words = match.group(1).split()
            if words[0].startswith(("-", "<", "[")):
                continue  # raymlops --help, raymlops <command>
            found.append(words)
    return found


def test_every_readme_command_is_a_command_of_the_front_door() -> None:
    parser = build_parser()
    commands = _readme_commands()
    assert len(commands) >= 40 and ["batch-score", "--model"] in commands
    for words in commands:
        group = _children(parser).get(words[0])
        assert group is not None, f"README names `raymlops {' '.join(words)}`: no command {words[0]!r}"
        sub = _children(group)
        if sub and len(words) > 1 and not words[1].startswith(("-", "[")):
            for alternative in words[1].split("|"):  # data log|show|diff
                assert alternative in sub, f"README names `raymlops {' '.join(words)}`: no {alternative!r}"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    (root / "runs" / "r1").mkdir(parents=True)
    for n in range(3):
        (root / "runs" / "r1" / f"part-{n}.txt").write_text(f"rows {n}\n")
    return root


def test_logging_is_readable_text_by_default_and_json_lines_on_request(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["state", "backup", str(tmp_path / "a.tar"), f"state_dir={state}"]) == 0
    err = capsys.readouterr().err
    assert re.search(r" INFO raymlops\.state\.backup: state backup archive=.*a\.tar files=\d+ ", err), err
    argv = ["state", "backup", str(tmp_path / "b.tar"), f"state_dir={state}", "--log-format", "json"]
    assert main(argv) == 0
    [line] = [json.loads(x) for x in capsys.readouterr().err.splitlines() if "state backup" in x]
    assert line["level"] == "INFO" and line["logger"] == "raymlops.state.backup"
    assert line["message"].startswith("state backup archive=") and "b.tar" in line["message"]


def test_an_expected_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["state", "restore", str(tmp_path / "nope.tar"), f"state_dir={tmp_path / 's'}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("raymlops: Config 'archive':") and "does not exist" in err[0]


def test_an_unexpected_error_is_one_line_with_a_hint_and_debug_shows_the_traceback(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    argv = ["state", "backup", str(blocker / "backup.tar"), f"state_dir={state}"]  # its folder is a file
    assert main(argv) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"raymlops: unexpected error: FileExistsError: [Errno 17] File exists: '{blocker}'",
        "raymlops: run again with --debug for the traceback",
    ]
    with pytest.raises(FileExistsError):
        main([*argv, "--debug"])


def test_batch_score_reads_flags_and_the_jobs_key_value_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["batch-score", "model=flights-delay", f"state_dir={tmp_path}"]) == 2
    assert "missing key(s) input=, output=" in capsys.readouterr().err
    argv = [
        "batch-score",
        "--model",
        "a",
        "model=b",
        "--input",
        "x",
        "--output",
        "y",
        f"state_dir={tmp_path}",
    ]
    assert main(argv) == 2
    assert "key 'model' is given twice" in capsys.readouterr().err
    argv = ["batch-score", "--model", "a", "--input", "x", "--output", "y", "overwrite=maybe"]
    assert main(argv) == 2
    assert "overwrite='maybe' is not true or false" in capsys.readouterr().err


def test_backup_and_restore_report_progress_and_the_cli_draws_no_bar_off_a_terminal(
    state: Path, tmp_path: Path
) -> None:
    calls: list[tuple[int, int | None]] = []
    result = backup_state(state, tmp_path / "s.tar", progress=lambda done, total: calls.append((done, total)))
    assert [done for done, _ in calls] == list(range(1, result.files + 1)) and result.files >= 3
    calls.clear()
    restored = restore_state(
        tmp_path / "s.tar", tmp_path / "new", progress=lambda done, total: calls.append((done, total))
    )
    assert calls[-1] == (restored.files, restored.files) and len(calls) == restored.files
    with progress_bar("backup") as bar:  # pytest captures stderr: not a terminal
        assert bar is None
