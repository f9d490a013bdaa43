"""Submit ``python -m raymlops.job <overrides>`` to a Ray cluster and follow it.

    RAY_ADDRESS=http://127.0.0.1:8265 python jobs/submit.py +experiment=quickstart [overrides ...]

A thin entry point for ``ray job submit -- python jobs/submit.py ...``: the command is
``raymlops job submit`` (``raymlops job submit --help`` lists its options; :mod:`raymlops.cli`).
"""

from __future__ import annotations

import sys

from raymlops.cli import main as raymlops

PROG = "submit.py"  # the prefix of its messages


def main(argv: list[str] | None = None) -> int:
    return raymlops(["job", "submit", *(sys.argv[1:] if argv is None else argv)], prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
