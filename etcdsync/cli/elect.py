"""``etcdsync elect``: campaign for leadership, or follow who leads.

``etcdsync elect NAME PROPOSAL`` campaigns with PROPOSAL as its value, prints
``elected ...`` once it leads, and leads until interrupted (then it resigns, so the
next candidate takes over at once).  A candidate that dies without resigning is
replaced once its session lease (``--ttl``) expires.  ``etcdsync elect
NAME --listen`` prints the leader, then every change of leader, and ``no leader``
when the election has none (at the start, or when the leader leaves with no
successor).  The key layout is etcdctl's and Go's: ``etcdctl elect`` candidates
take part in the same election.
"""

from __future__ import annotations

import argparse

from .. import Client, Election, KeyValue
from ._common import (
    EXIT_LOST,
    EXIT_OK,
    CliError,
    Interrupted,
    UsageError,
    add_connection_options,
    emit,
    info,
    interrupts_raise,
    one_line,
    open_client,
    positive_int,
)
from ._logging import reported_by_command

__all__ = ["register", "run"]

DEFAULT_TTL = 10
_LOST_POLL = 0.5


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "elect",
        help="campaign for leadership, or --listen to who leads",
        usage="etcdsync elect NAME PROPOSAL [--ttl S] [options]\n"
        "       etcdsync elect NAME --listen [options]",
        description="Campaign in the election NAME with PROPOSAL as value; once elected, "
        "print it and lead until interrupted (then resign).  With --listen, print the "
        "leader and each change of leader instead.",
    )
    sub.add_argument("name", metavar="NAME", help="election name (a key prefix)")
    sub.add_argument("proposal", metavar="PROPOSAL", nargs="?", help="this candidate's value")
    sub.add_argument("-l", "--listen", action="store_true", help="print each leader as it changes")
    sub.add_argument(
        "--ttl",
        type=positive_int,
        default=DEFAULT_TTL,
        metavar="S",
        help=f"session lease TTL: a leader that dies is replaced after this long "
        f"(default {DEFAULT_TTL})",
    )
    add_connection_options(sub)
    sub.set_defaults(run=run, subparser=sub)


def _describe(kv: KeyValue) -> str:
    value = kv.value.decode("utf-8", "replace")
    key = kv.key.decode("utf-8", "replace")
    return f"{value} (key {key}, term {kv.create_revision})"


def run(args: argparse.Namespace) -> int:
    if args.listen == (args.proposal is not None):
        raise UsageError("give either a PROPOSAL to campaign with, or --listen")
    reported_by_command("lost")  # said once, as this command's error (exit 3)
    restore = interrupts_raise()
    try:
        with open_client(args) as client:
            election = client.election(args.name, ttl=args.ttl)
            if args.listen:
                return _listen(election)
            return _campaign(args, client, election)
    except Interrupted as exc:
        # Interrupted while waiting to be elected (the candidacy was withdrawn) or
        # while listening, which is how listening normally ends.
        return EXIT_OK if args.listen else 128 + exc.signum
    finally:
        restore()


def _campaign(args: argparse.Namespace, client: Client, election: Election) -> int:
    # The session the campaign will use, created first: an unreachable etcd is then
    # reported before anything else is said.
    client.shared_session(args.ttl)
    info(f"campaigning in {args.name!r} as {args.proposal!r} (ttl {args.ttl} s)...")
    try:
        election.campaign(args.proposal)
        key = (election.leader_key or b"").decode("utf-8", "replace")
        emit(f"elected {args.proposal} (key {key}, term {election.leader_revision})")
        info("leading; Ctrl-C or SIGTERM resigns")
        while not election.wait_lost(_LOST_POLL):
            pass
    except Interrupted:
        # A campaign that is interrupted withdraws its candidacy itself; one that won
        # resigns here, however soon after winning the signal came.
        if not election.is_leader:
            raise
        election.resign()
        info(f"resigned from {args.name!r}")
        return EXIT_OK
    # The error names the election and says why ("leadership of 'e1' lost: session
    # ended"); the library's own record of the loss is not shown (reported_by_command).
    error = election.lost_error
    raise CliError(
        one_line(error) if error is not None else f"leadership of {args.name!r} lost", EXIT_LOST
    )


def _listen(election: Election) -> int:
    # The observer reports vacancy too: "no leader" first when nobody leads, and
    # each time the leader leaves with no candidate to follow it.
    with election.observe() as observer:
        while True:
            try:
                kv = observer.next_change()
            except StopIteration:
                return EXIT_OK
            emit("no leader" if kv is None else f"leader {_describe(kv)}")
