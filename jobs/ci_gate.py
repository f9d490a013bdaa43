"""Gate a change to data or model config in CI: validate -> train -> evaluate vs the champion.

    python jobs/ci_gate.py [--out FILE.md] [--max-regression METRIC=DROP ...] [--dry-run] [overrides ...]

A thin entry point for ``ray job submit -- python jobs/ci_gate.py ...``: the command is
``raymlops ci-gate`` (``raymlops ci-gate --help`` lists its options; :mod:`raymlops.cli`).
"""

from __future__ import annotations

import argparse
import sys

from raymlops.cli import main as raymlops
from raymlops.cli import parse_command

PROG = "ci_gate.py"  # the prefix of its messages


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The command line as the gate reads it: its options, and the overrides (SystemExit when bad)."""
    args = parse_command(["ci-gate", *argv], prog=PROG)
    return args, list(args.overrides)


def main(argv: list[str] | None = None) -> int:
    return raymlops(["ci-gate", *(sys.argv[1:] if argv is None else argv)], prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
