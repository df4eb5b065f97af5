"""Argument types shared by the subcommands: each refuses bad input with a readable message."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def guardian_list(text: str) -> tuple[int, ...]:
    """Guardian numbers like 2,5."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected guardian numbers like 2,5, got {text!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


CONFIG_VARIABLE = "GUARDIAN_CONFIG"


def config_help(extra: str = "") -> str:
    """The help of a --config option: what it is and its default, with the environment variable."""
    now = os.environ.get(CONFIG_VARIABLE)
    text = (f"the node's node.toml (default{extra}: ${CONFIG_VARIABLE} if set"
            + (f", now {now}" if now else "") + ", else ./node.toml)")
    return text.replace("%", "%%")      # argparse formats help texts with %


def default_config() -> Path:
    return Path(os.environ.get(CONFIG_VARIABLE) or "node.toml")


def add_config_option(parser) -> None:
    parser.add_argument("--config", type=Path, default=default_config(), metavar="FILE", help=config_help())


SCHEDULER_HELP = ("the Dask scheduler whose workers do the work, e.g. tcp://10.0.0.5:8786 (default: "
                  "$DASK_SCHEDULER_ADDRESS if set, else every core of this machine); the workers must see the "
                  "record's path and have guardian-node installed (pip install 'guardian-node[cluster]')")


def add_scheduler_option(parser) -> None:
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS", help=SCHEDULER_HELP.replace("%", "%%"))
