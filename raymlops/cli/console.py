"""What every command shows on the terminal besides its answer: logs, progress bars and errors.

Logging is configured once, by the front door (:func:`configure_logging`): readable lines by default, JSON
lines with ``--log-format json`` (for a log shipper), more detail with ``-v``. Library code reports the
progress of long work through a plain callback, ``progress(done, total)``; :func:`progress_bar` makes one
that draws a bar on stderr when stderr is a terminal, and nothing otherwise (CI logs, pipes, tests).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["LOG_FORMATS", "configure_logging", "progress_bar", "report_unexpected"]

LOG_FORMATS = ("text", "json")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLineFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and the traceback, when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(log_format: str = "text", verbose: int = 0) -> None:
    """Log handlers for a command, replacing any a previous command in this process installed.

    raymlops' own loggers report at INFO (``-v``: DEBUG); other libraries only warn (``-vv``: INFO), so
    Ray's and MLflow's start-up chatter stays out of a command's output.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_raymlops_cli", False)]:
        root.removeHandler(old)
    handler._raymlops_cli = True  # type: ignore[attr-defined]  # ours to replace on the next call
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose >= 2 else logging.WARNING)
    logging.getLogger("raymlops").setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)


def _draws_bars() -> bool:
    # RAYMLOPS_PROGRESS=0 turns Ray Data's bars off for the job; the command's bars follow it.
    return sys.stderr.isatty() and os.environ.get("RAYMLOPS_PROGRESS", "1") != "0"


@contextmanager
def progress_bar(what: str, unit: str = "file") -> Iterator[Callable[[int, int | None], None] | None]:
    """A ``progress(done, total)`` callback drawing a bar on stderr, or None where no bar is drawn.

    The library functions take ``progress=None`` as "report nothing", so passing this through costs
    nothing when stderr is not a terminal.
    """
    if not _draws_bars():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(desc=what, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def report_unexpected(prog: str, exc: BaseException) -> None:
    """One line for an error raymlops did not anticipate: its type, its message and how to see more."""
    cause = f"{type(exc).__name__}: {exc}".rstrip(": ")
    print(f"{prog}: unexpected error: {cause}", file=sys.stderr)
    print(f"{prog}: run again with --debug for the traceback", file=sys.stderr)
