"""The `guardian` command: every subcommand, grouped by what the user does (see main.py)."""

from node.cli.main import main

__all__ = ["main"]
