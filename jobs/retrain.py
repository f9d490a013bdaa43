"""Retrain when a trigger fires; gate the candidate and roll it out.

    python jobs/retrain.py [--force] [--since ISO] [--until ISO] [overrides ...]

A thin entry point for ``ray job submit -- python jobs/retrain.py ...``: the command is
``raymlops retrain`` (``raymlops retrain --help`` lists its options; :mod:`raymlops.cli`).
"""

from __future__ import annotations

import sys

from raymlops.cli import main as raymlops

PROG = "retrain.py"  # the prefix of its messages


def main(argv: list[str] | None = None) -> int:
    return raymlops(["retrain", *(sys.argv[1:] if argv is None else argv)], prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
