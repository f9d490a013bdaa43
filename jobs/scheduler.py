"""Check the retrain triggers on an interval and retrain when one fires.

    python jobs/scheduler.py [--max-checks N] [overrides ...]

A thin entry point for ``ray job submit -- python jobs/scheduler.py ...``: the command is
``raymlops scheduler`` (``raymlops scheduler --help`` lists its options; :mod:`raymlops.cli`).
"""

from __future__ import annotations

import sys

from raymlops.cli import main as raymlops

PROG = "scheduler.py"  # the prefix of its messages


def main(argv: list[str] | None = None) -> int:
    return raymlops(["scheduler", *(sys.argv[1:] if argv is None else argv)], prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
