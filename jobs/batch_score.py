"""Score a versioned dataset with a registered model.

    python jobs/batch_score.py model=<name>@<alias> input=<data ref> output=<folder> [options] [overrides]

A thin entry point for ``ray job submit -- python jobs/batch_score.py ...``: the command is
``raymlops batch-score`` (``raymlops batch-score --help`` lists its options; :mod:`raymlops.cli`).
"""

from __future__ import annotations

import sys

from raymlops.cli import main as raymlops

PROG = "batch_score.py"  # the prefix of its messages


def main(argv: list[str] | None = None) -> int:
    return raymlops(["batch-score", *(sys.argv[1:] if argv is None else argv)], prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
