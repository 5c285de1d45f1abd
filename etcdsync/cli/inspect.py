"""``etcdsync inspect [PREFIX]``: who holds what, who waits, which session is behind it.

Reads every key under PREFIX (all keys when omitted) at one revision, recognises the
recipes by their key layouts (:mod:`.inspect_layout`: locks and elections in Go's
layout - so ``etcdctl lock`` and ``etcdctl elect`` show up too - readers-writer
locks, semaphores, queues, double barriers, run-once leases) and prints one table per
kind, then the sessions (leases) behind those keys with their TTL left and every key
each keeps alive.  ``--watch`` redraws whenever the watch on PREFIX delivers a change
(and once a second, for lease TTLs and clocks); ``--json`` prints the document of
``docs/inspect.md`` (one line per change with ``--watch``).  Tables use ``rich`` when
installed (``pip install 'etcdsync[cli]'``), plain text otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .. import Client
from ._common import (
    EXIT_OK,
    Interrupted,
    add_connection_options,
    emit,
    interrupts_raise,
    open_client,
    seconds,
)
from .inspect_layout import Report, SeenBook, analyse
from .inspect_read import LiveView, read_snapshot
from .inspect_render import render_plain, render_rich, rich_available, to_json

__all__ = ["register", "run"]

DEFAULT_TICK = 1.0
_CLEAR = "\x1b[H\x1b[2J"
_ALT_SCREEN_ON = "\x1b[?1049h"
_ALT_SCREEN_OFF = "\x1b[?1049l"


def _semaphore_limit(text: str) -> tuple[str, int]:
    name, sep, limit = text.rpartition("=")
    if not sep or not name or not limit.isdigit() or int(limit) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=LIMIT (LIMIT >= 1)")
    return name, int(limit)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "inspect",
        help="show the locks, elections, semaphores, queues and sessions under a prefix",
        description="Find the recipes under PREFIX by their key layouts and show who "
        "holds each, who waits (in order, and for how long), who leads each election, "
        "and the sessions (leases) behind their keys.  Ages are measured in revisions "
        "(writes to the store since a key was created) and, with --watch, in seconds "
        "since inspect first saw the key: etcd keeps no timestamps.",
    )
    sub.add_argument(
        "prefix", metavar="PREFIX", nargs="?", default="", help="key prefix (default: all keys)"
    )
    sub.add_argument(
        "-w", "--watch", action="store_true", help="redraw live as the keys under PREFIX change"
    )
    sub.add_argument(
        "--json",
        action="store_true",
        help="print a JSON document (one line per change with --watch)",
    )
    sub.add_argument("--plain", action="store_true", help="plain text even when rich is installed")
    sub.add_argument(
        "--semaphore",
        dest="semaphore_limits",
        metavar="NAME=LIMIT",
        type=_semaphore_limit,
        action="append",
        default=[],
        help="the limit of semaphore NAME, for semaphores that record none (repeatable)",
    )
    sub.add_argument(
        "--tick",
        type=seconds,
        default=DEFAULT_TICK,
        metavar="S",
        help="--watch: redraw at least this often, for lease TTLs and ages "
        f"(default {DEFAULT_TICK:g})",
    )
    add_connection_options(sub)
    sub.set_defaults(run=run, subparser=sub)


class _Screen:
    """Where frames go: rich or plain text, redrawn in place on a terminal."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = args.json
        self.watching = args.watch
        self.tty = sys.stdout.isatty()
        # rich for a terminal; aligned plain text for a pipe or a file (and without rich).
        self.use_rich = self.tty and not args.json and not args.plain and rich_available()
        self.console: Any = None
        self.last: Report | None = None
        if self.use_rich:
            from rich.console import Console

            self.console = Console(highlight=False)

    def text(self, report: Report) -> str:
        if self.json:
            return json.dumps(to_json(report, watching=self.watching), ensure_ascii=False)
        if self.use_rich:
            with self.console.capture() as captured:
                self.console.print(render_rich(report, watching=self.watching))
            return str(captured.get()).rstrip("\n")
        return render_plain(report, watching=self.watching)

    def live(self) -> bool:
        return self.watching and self.tty and not self.json

    def start(self) -> None:
        if self.live():
            sys.stdout.write(_ALT_SCREEN_ON)

    def frame(self, report: Report) -> None:
        self.last = report
        text = self.text(report)
        if self.live():
            sys.stdout.write(_CLEAR + text + "\n")
            sys.stdout.flush()
        elif self.watching and not self.json:
            emit(text + "\n")
        else:
            emit(text)

    def stop(self) -> None:
        if self.live():
            sys.stdout.write(_ALT_SCREEN_OFF)
            if self.last is not None:
                sys.stdout.write(self.text(self.last) + "\n")  # the last frame stays on screen
            sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    limits = dict(args.semaphore_limits)
    screen = _Screen(args)
    if not args.watch:
        with open_client(args) as client:
            report = analyse(
                read_snapshot(client, args.prefix), wall_now=time.time(), semaphore_limits=limits
            )
        screen.frame(report)
        return EXIT_OK
    restore = interrupts_raise()
    screen.start()
    try:
        with open_client(args) as client:
            _watch(args, client, screen, limits)
    except Interrupted:
        pass  # how watching normally ends
    finally:
        screen.stop()
        restore()
    return EXIT_OK


def _watch(
    args: argparse.Namespace, client: Client, screen: _Screen, limits: dict[str, int]
) -> None:
    book = SeenBook()
    view = LiveView(client, args.prefix, book)
    try:
        while True:
            report = analyse(
                view.snapshot(),
                book=book,
                now=time.monotonic(),
                wall_now=time.time(),
                semaphore_limits=limits,
            )
            screen.frame(report)
            changed = view.wait(args.tick)
            while changed and view.wait(0):  # apply whatever else already arrived
                pass
            while not changed and not screen.live():  # a pipe gets one per change, not per tick
                changed = view.wait(args.tick)
    finally:
        view.close()
