"""What every subcommand shares: connection options, exit codes, errors and output.

The CLI uses only the public API (``etcdsync.Client`` and friends) and, to run a local
etcd, ``etcdsync._embedded`` (never the test harness, ``etcdsync.testing``); nothing in
the library imports it.
"""

from __future__ import annotations

import argparse
import getpass
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn, overload

from .. import Client, TLSConfig, errors

__all__ = [
    "ENV_ENDPOINTS",
    "ENV_PASSWORD",
    "EXIT_ERROR",
    "EXIT_LOST",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "CliError",
    "Interrupted",
    "UsageError",
    "add_connection_options",
    "emit",
    "fail",
    "info",
    "interrupts_raise",
    "one_line",
    "open_client",
]

ENV_ENDPOINTS = "ETCDSYNC_ENDPOINTS"
ENV_PASSWORD = "ETCDSYNC_PASSWORD"
DEFAULT_ENDPOINT = "127.0.0.1:2379"
DEFAULT_TIMEOUT = 5.0

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_LOST = 3
EXIT_TIMEOUT = 4

EXIT_CODES_HELP = """\
exit codes:
  0      success (commands that hold something end normally when interrupted)
  1      etcd or connection error; a server that failed to start; a failed demo check
  2      usage error
  3      a lock or leadership was lost while held (lock: COMMAND was terminated)
  4      lock: not acquired within --timeout
  126    lock: COMMAND is not executable       127  lock: COMMAND not found
  128+N  interrupted by signal N while waiting, or COMMAND was killed by signal N
"""


class CliError(Exception):
    """A failure to report on one line of stderr, exiting with ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    """Arguments that make no sense together; reported with a usage line (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def positive_int(text: str) -> int:
    """argparse type: a positive whole number."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


class _EndpointsAction(argparse.Action):
    """Stores ``--endpoints`` and notes that it was given (the demo then uses it
    instead of starting its own etcd)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        namespace.endpoints_given = True


def add_connection_options(
    parser: argparse.ArgumentParser, *, timeout: bool = True, top_level: bool = False
) -> None:
    """The options that say how to reach etcd.

    The top-level parser holds the defaults; each subcommand accepts the same options
    again (so they may follow the subcommand) with suppressed defaults, so that a value
    given before the subcommand is not reset by the subparser.
    """

    def default(value: Any) -> Any:
        return value if top_level else argparse.SUPPRESS

    group = parser.add_argument_group("connection")
    if top_level:
        parser.set_defaults(endpoints_given=False)
    group.add_argument(
        "--endpoints",
        action=_EndpointsAction,
        metavar="HOST:PORT,...",
        default=default(os.environ.get(ENV_ENDPOINTS) or DEFAULT_ENDPOINT),
        help=f"etcd endpoints, comma-separated (env {ENV_ENDPOINTS}; default {DEFAULT_ENDPOINT})",
    )
    group.add_argument(
        "--cacert", metavar="FILE", default=default(None), help="CA bundle verifying the server"
    )
    group.add_argument(
        "--cert", metavar="FILE", default=default(None), help="client certificate (mutual TLS)"
    )
    group.add_argument(
        "--key", metavar="FILE", default=default(None), help="client certificate's key"
    )
    group.add_argument(
        "--server-name",
        metavar="NAME",
        default=default(None),
        help="name to check the server certificate against (when dialling by IP)",
    )
    group.add_argument("--user", metavar="NAME", default=default(None), help="etcd user")
    group.add_argument(
        "--password",
        metavar="PASSWORD",
        default=default(None),
        help=f"etcd password (better: env {ENV_PASSWORD}; prompted for on a terminal)",
    )
    if timeout:
        group.add_argument(
            "--timeout",
            dest="request_timeout",
            metavar="S",
            type=seconds,
            default=default(DEFAULT_TIMEOUT),
            help=f"deadline of each etcd request in seconds (default {DEFAULT_TIMEOUT:g})",
        )


def open_client(args: argparse.Namespace) -> Client:
    """A client for the connection options in ``args`` (it connects lazily)."""
    tls: TLSConfig | None = None
    if args.cacert or args.cert or args.key or args.server_name:
        if bool(args.cert) != bool(args.key):
            raise UsageError("--cert and --key go together")
        tls = TLSConfig(
            ca_file=args.cacert,
            cert_file=args.cert,
            key_file=args.key,
            server_name=args.server_name,
        )
    user: str | None = _text(args.user, "--user")
    password: str | None = _text(args.password, "--password") or _text(
        os.environ.get(ENV_PASSWORD), f"env {ENV_PASSWORD}"
    )
    if user and password is None and ":" in user:
        user, password = user.split(":", 1)  # etcdctl's --user NAME:PASSWORD form
    if password is not None and not user:
        raise UsageError("--password needs --user")
    if user and password is None:
        if not sys.stdin.isatty():
            raise UsageError(f"--user needs a password: --password or env {ENV_PASSWORD}")
        password = getpass.getpass(f"password for etcd user {user}: ")
    try:
        endpoints: str = args.endpoints
        return Client(
            _text(endpoints, f"--endpoints (or env {ENV_ENDPOINTS})"),
            timeout=args.request_timeout,
            tls=tls,
            user=user,
            password=password,
        )
    except errors.InvalidRequest as exc:
        raise UsageError(str(exc)) from None


@overload
def _text(value: str, where: str) -> str: ...
@overload
def _text(value: str | None, where: str) -> str | None: ...
def _text(value: str | None, where: str) -> str | None:
    """``value`` when it is UTF-8 text; else a usage error naming ``where`` it came from.

    Python hands undecodable bytes of the environment and the command line over as
    lone surrogates; etcd takes UTF-8 only.  The value itself is never quoted: it may
    be a password.
    """
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"{where} is not valid UTF-8 text") from None
    return value


def one_line(exc: BaseException | str) -> str:
    """An error message squeezed onto one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def emit(line: str) -> None:
    """A line of output for the user or a script (stdout), flushed at once."""
    print(line, flush=True)


def info(line: str) -> None:
    """A progress or status note (stderr), kept apart from the output proper."""
    print(line, file=sys.stderr, flush=True)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    raise CliError(message, code)


_INTERRUPTS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def interrupts_raise() -> Callable[[], None]:
    """Make the first SIGINT, SIGTERM or SIGHUP raise :class:`Interrupted` in the main
    thread, so that ``finally`` blocks release what is held; later ones are ignored so
    that they cannot cut that cleanup short (it is bounded by the request deadline).
    Returns a function restoring the previous handlers."""
    raised = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in _INTERRUPTS}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
