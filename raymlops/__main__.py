"""``python -m raymlops``: the operator CLI (:mod:`raymlops.cli`), as the ``raymlops`` script runs it."""

from __future__ import annotations

import sys

from raymlops.cli import main

if __name__ == "__main__":
    sys.exit(main())
