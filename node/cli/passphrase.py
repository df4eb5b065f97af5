"""Where a passphrase comes from: a prompt, a file or an environment variable. Never the command line."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from node.crypto.errors import InputError


def read_passphrase(source: str, *, confirm: bool = False, what: str = "passphrase") -> str:
    """source: "prompt", "env:VARIABLE" or "file:PATH" (the file's first line)."""
    if source.startswith("env:"):
        name = source[4:]
        value = os.environ.get(name)
        if not value:
            raise InputError(f"the environment variable {name} holding the {what} is not set")
        return value
    if source.startswith("file:"):
        path = Path(source[5:])
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise InputError(f"cannot read the {what} file {path}: {e.strerror}") from None
        if not lines or not lines[0]:
            raise InputError(f"the {what} file {path} is empty")
        return lines[0]
    if source != "prompt":
        raise InputError(f"unknown {what} source {source!r}: use prompt, env:VARIABLE or file:PATH")
    if not sys.stdin.isatty():
        raise InputError(f"no terminal to ask for the {what}: use --passphrase-file or --passphrase-env")
    first = getpass.getpass(f"{what.capitalize()}: ")
    if confirm and getpass.getpass(f"Repeat the {what}: ") != first:
        raise InputError(f"the two {what}s differ")
    return first


def source_from_args(args, default: str = "prompt") -> str:
    if getattr(args, "passphrase_file", None):
        return "file:" + str(Path(args.passphrase_file).resolve())
    if getattr(args, "passphrase_env", None):
        return "env:" + args.passphrase_env
    return default


def add_passphrase_options(parser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--passphrase-file", metavar="FILE", help="read the passphrase from the first line of FILE")
    group.add_argument("--passphrase-env", metavar="VARIABLE", help="read the passphrase from this environment variable")
