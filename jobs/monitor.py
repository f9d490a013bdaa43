"""Monitor a served model from its prediction log: drift, live accuracy, latency.

    python jobs/monitor.py [--since ISO] [--until ISO] [--model NAME[@ALIAS|@VERSION]] [overrides ...]

A thin entry point for ``ray job submit -- python jobs/monitor.py ...``: the command is
``raymlops monitor`` (``raymlops monitor --help`` lists its options; :mod:`raymlops.cli`).
"""

from __future__ import annotations

import sys

from raymlops.cli import main as raymlops

PROG = "monitor.py"  # the prefix of its messages


def main(argv: list[str] | None = None) -> int:
    return raymlops(["monitor", *(sys.argv[1:] if argv is None else argv)], prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
