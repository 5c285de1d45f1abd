"""``etcdsync config get|watch PREFIX``: a prefix's keys as one decoded JSON document.

Each snapshot is printed as one line of JSON, ``{"revision": R, "values": {...}}``,
with the keys relative to PREFIX: ``get`` prints the current one, ``watch`` prints it
and then every change (each applied whole: the keys a transaction changed together
arrive together).  Values are decoded as JSON when they are JSON and as text otherwise
(``--decode`` picks one).  With ``--decode json`` a state holding a value that is not
JSON is rejected: ``get`` fails, ``watch`` reports it on stderr and keeps going.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from .. import Client, ConfigSnapshot, ConfigWatcher, errors
from ._common import (
    EXIT_OK,
    Interrupted,
    add_connection_options,
    emit,
    info,
    interrupts_raise,
    one_line,
    open_client,
)

__all__ = ["register", "run_get", "run_watch"]


def decode_auto(raw: bytes) -> Any:
    """JSON when the value parses as JSON, else UTF-8 text (invalid bytes replaced)."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


_DECODERS: dict[str, str | Callable[[bytes], Any]] = {
    "auto": decode_auto,
    "json": "json",
    "text": _decode_text,
}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "config",
        help="print a config prefix as JSON (get), and follow its changes (watch)",
        description="Read the keys under a prefix as one JSON document, at one revision.",
    )
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, run, text in (
        ("get", run_get, "print the current snapshot of PREFIX"),
        ("watch", run_watch, "print the snapshot of PREFIX, then each change"),
    ):
        action = actions.add_parser(name, help=text, description=text + ", as JSON lines.")
        action.add_argument("prefix", metavar="PREFIX", help="key prefix, e.g. services/api/")
        action.add_argument(
            "--decode",
            choices=sorted(_DECODERS),
            default="auto",
            help="how values are decoded (default auto: JSON if it parses, else text)",
        )
        add_connection_options(action)
        action.set_defaults(run=run, subparser=action)
    sub.set_defaults(subparser=sub)


def _line(snapshot: ConfigSnapshot) -> str:
    return json.dumps(
        {"revision": snapshot.revision, "values": snapshot.to_dict()},
        sort_keys=True,
        ensure_ascii=False,
    )


def _watcher(args: argparse.Namespace, client: Client) -> ConfigWatcher:
    return client.config(args.prefix, decode=_DECODERS[args.decode])


def run_get(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        watcher = _watcher(args, client)
        watcher.start(timeout=args.request_timeout)
        try:
            emit(_line(watcher.snapshot))
        finally:
            watcher.stop()
    return EXIT_OK


def _report(error: errors.EtcdError) -> None:
    info(f"etcdsync: warning: {one_line(error)}")


def run_watch(args: argparse.Namespace) -> int:
    restore = interrupts_raise()
    try:
        with open_client(args) as client:
            watcher = _watcher(args, client)
            watcher.on_error(_report)
            with watcher.start(timeout=args.request_timeout):
                for snapshot in watcher:
                    emit(_line(snapshot))
    except Interrupted:
        pass  # how watching normally ends
    finally:
        restore()
    return EXIT_OK
