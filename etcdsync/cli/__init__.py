"""The ``etcdsync`` command: a local etcd, locks and elections for shell scripts,
live config, and a demo of all of it.

::

    etcdsync server                                  # a local etcd on 127.0.0.1:2379
    etcdsync lock backups -- ./backup.sh             # run a command under a lock
    etcdsync elect cron-leader "$(hostname)"         # lead until interrupted
    etcdsync config watch services/api/              # follow a config prefix
    etcdsync queue put jobs "resize 42.png"          # queues, barriers, counters
    etcdsync demo                                    # see it all work together

``main(argv)`` returns the exit code (see ``etcdsync --help``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__, errors
from ._common import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_USAGE,
    CliError,
    Interrupted,
    UsageError,
    add_connection_options,
    one_line,
)
from ._logging import setup_logging
from .config import register as _register_config
from .demo import register as _register_demo
from .demo import register_worker as _register_demo_worker
from .elect import register as _register_elect
from .inspect import register as _register_inspect
from .lock import register as _register_lock
from .recipes import register as _register_recipes
from .server import register as _register_server
from .services import register as _register_services

__all__ = ["build_parser", "main"]

_PROG = "etcdsync"
# Top-level options that take a value as the next argument (to find the subcommand).
_VALUE_OPTIONS = frozenset(
    ["--endpoints", "--cacert", "--cert", "--key", "--server-name", "--user", "--password",
     "--timeout"]
)  # fmt: skip
_HINT = "is etcd running? `etcdsync server` starts one, --endpoints points elsewhere"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="etcd for Python programs and shell scripts: a local server, locks, "
        "leader elections, live config, and a demo of all of them.",
        epilog=EXIT_CODES_HELP + "\nRun `etcdsync COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_connection_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)
    for register in (
        _register_server,
        _register_lock,
        _register_elect,
        _register_config,
        _register_recipes,
        _register_services,
        _register_inspect,
        _register_demo,
        _register_demo_worker,
    ):
        register(commands)
    return parser


def _subcommand(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (skipping top-level options and their values)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


_LOCK_COMMAND_HINT = "a command to run goes after `--`: etcdsync lock NAME [options] -- COMMAND"


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    if _subcommand(argv) != "lock":
        return parser.parse_args(argv)
    # ``lock NAME [options] -- COMMAND ARGS...``: argparse cannot take a free-form
    # command line after its own positionals, so the tail is split off first.
    if "--" in argv:
        cut = argv.index("--")
        args = parser.parse_args(argv[:cut])
        args.command = argv[cut + 1 :]
        if not args.command:
            # Holding the lock silently until interrupted is not what `--` asked for.
            args.subparser.error(
                "nothing after `--`: give the COMMAND to run, or leave `--` out to "
                "hold the lock until interrupted"
            )
        return args
    # Without `--`, words after NAME are most likely a command that forgot it
    # (`etcdsync lock backups ./backup.sh`): say so, under the lock's own usage.
    args, extra = parser.parse_known_args(argv)
    if extra:
        hint = "" if all(word.startswith("-") for word in extra) else f" ({_LOCK_COMMAND_HINT})"
        args.subparser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``etcdsync`` command line; returns the exit code."""
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    try:
        args = _parse(parser, arguments)
    except SystemExit as exc:  # argparse: --help, --version, or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    subparser: argparse.ArgumentParser = args.subparser
    try:
        code: int = args.run(args)
        return code
    except UsageError as exc:
        subparser.print_usage(sys.stderr)
        print(f"{subparser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"{_PROG}: error: {one_line(exc)}", file=sys.stderr)
        return exc.code
    except errors.InvalidRequest as exc:
        subparser.print_usage(sys.stderr)
        print(f"{subparser.prog}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except errors.TLSError as exc:  # etcd answered, but not to this TLS setup
        print(f"{_PROG}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except errors.ConnectionError_ as exc:
        print(f"{_PROG}: error: {one_line(exc)} ({_HINT})", file=sys.stderr)
        return EXIT_ERROR
    except errors.EtcdError as exc:
        print(f"{_PROG}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except Interrupted as exc:
        return 128 + exc.signum
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``etcdsync config watch ... | head``): end quietly.
        # stdout is pointed at /dev/null so that the interpreter's final flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
