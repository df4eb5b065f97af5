"""The `guardian` command. Each subcommand exits 0 on success and non-zero with one readable line on failure.

Features register their own subcommands: each module in FEATURES has
`register(subparsers) -> dict[name, handler]`, where a handler takes the parsed
arguments and returns an exit status. Handlers raise GuardianError for refusals.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from node import __version__
from node.crypto.errors import GuardianError

FEATURES = ["node.cli.demo", "node.cli.node", "node.cli.decrypt", "node.cli.record", "node.cli.custody",
            "node.cli.simulate"]


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="guardian",
        description="Guardian node for ElectionGuard 2.1 elections: key ceremony, key custody, "
                    "threshold decryption and verification.")
    parser.add_argument("--version", action="version", version=f"guardian-node {__version__}",
                        help="print the version and exit")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict = {}
    for name in FEATURES:
        handlers.update(importlib.import_module(name).register(sub))
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:     # the simulator parses its own options (argparse cannot pass "--x" through)
        from node.cli.simulate import simulate

        try:
            return simulate(argv[1:])
        except BrokenPipeError:      # output piped into `head` and the like
            sys.stderr.close()
            return 0
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = handlers[args.command]
    if isinstance(handler, dict):   # a command with sub-commands: guardian ballots submit ...
        handler = handler.get(getattr(args, "action", None))
        if handler is None:
            parser.parse_args([args.command, "--help"])
            return 2
    try:
        return handler(args)
    except GuardianError as e:
        if args.verbose:
            raise
        print(f"guardian {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:   # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"guardian {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
