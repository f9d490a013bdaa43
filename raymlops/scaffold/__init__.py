"""Configs for a new table: profile it with the project's own statistics, write commented config files.

``raymlops init`` (``raymlops.cli.init``) is the command; this package is the library behind it and
imports no command: :func:`profile_data` reads and profiles, :func:`plan_columns` decides what each
column is for, :func:`write_configs` writes ``data/``, ``validate/``, ``features/`` and ``experiment/``.
"""

from __future__ import annotations

from raymlops.scaffold.columns import ColumnPlan, plan_columns
from raymlops.scaffold.profile import TableProfile, profile_data, profile_table
from raymlops.scaffold.writer import run_command, write_configs

__all__ = [
    "ColumnPlan",
    "TableProfile",
    "plan_columns",
    "profile_data",
    "profile_table",
    "run_command",
    "write_configs",
]
