"""Every raymlops command, one front door: ``raymlops ...`` or ``python -m raymlops ...``.

One module per command group; each adds its parser (``add_*_command(s)``) and runs a parsed command
(``run_*_command``). The library never imports this package: commands call the library.
"""

from __future__ import annotations

from raymlops.cli.access import authorize_command, command_name
from raymlops.cli.main import build_parser, main, parse_command

__all__ = ["authorize_command", "build_parser", "command_name", "main", "parse_command"]
