"""``etcdsync lock NAME [-- COMMAND ...]``: run a command while holding a lock.

COMMAND runs with ``ETCDSYNC_LOCK_KEY`` (the lock key) and ``ETCDSYNC_LOCK_REV`` (its
create revision: the fencing token, increasing with each holder) in its environment,
plus etcdctl's ``ETCD_LOCK_KEY`` / ``ETCD_LOCK_REV``.  The lock is released when
COMMAND exits (its status is ours), when it dies, and after SIGINT/SIGTERM/SIGHUP (which
are forwarded to COMMAND first).  If the lock is lost while COMMAND runs - the session
lease expired because etcd could not be reached in time - COMMAND is terminated
(SIGTERM, SIGKILL after a grace period) and the exit status is 3: something else may
hold the lock by now.  The key layout is etcdctl's and Go's, so ``etcdctl lock NAME``
and Go programs exclude us and we them.

Without COMMAND the key is printed and the lock held until interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time

from .. import Client, Mutex, errors
from ._common import (
    EXIT_LOST,
    EXIT_OK,
    EXIT_TIMEOUT,
    CliError,
    add_connection_options,
    emit,
    info,
    one_line,
    open_client,
    positive_int,
    seconds,
)
from ._logging import reported_by_command
from ._process import Child, Received, SignalRelay

__all__ = ["register", "run"]

DEFAULT_TTL = 10
# How long a terminated COMMAND gets to exit before SIGKILL, once the lock is lost.
KILL_GRACE = 5.0
_IDLE_WAKE = 0.5


def _lock_timeout(text: str) -> float:
    """argparse type: seconds >= 0 (0 takes the lock only if it is free now)."""
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass  # seconds() says what is wrong with it
    return seconds(text)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "lock",
        help="run a command while holding a distributed lock",
        usage="etcdsync lock NAME [--ttl S] [--timeout S] [options] [-- COMMAND [ARGS...]]",
        description="Acquire the lock NAME, run COMMAND with ETCDSYNC_LOCK_KEY and "
        "ETCDSYNC_LOCK_REV (the fencing token) in its environment, and release the lock "
        "when it ends; exit with COMMAND's status.  If the lock is lost while COMMAND "
        "runs, COMMAND is terminated and the exit status is 3.  Without COMMAND, print "
        "the lock key and hold the lock until interrupted.",
    )
    sub.add_argument("name", metavar="NAME", help="lock name (a key prefix)")
    sub.add_argument(
        "--ttl",
        type=positive_int,
        default=DEFAULT_TTL,
        metavar="S",
        help=f"session lease TTL: a crashed holder frees the lock after this long "
        f"(default {DEFAULT_TTL})",
    )
    sub.add_argument(
        "--timeout",
        dest="lock_timeout",
        type=_lock_timeout,
        default=None,
        metavar="S",
        help="give up (exit 4) if the lock is not acquired within S seconds; 0: only "
        "if it is free now, as a cron job on one of N hosts wants "
        "(default: wait as long as it takes)",
    )
    # The request deadline is the global --timeout, given before `lock`.
    add_connection_options(sub, timeout=False)
    sub.set_defaults(run=run, subparser=sub, command=[])


class _State:
    """What the signal relay, the lost callback and the main thread share."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.wake = threading.Event()
        self.signum = 0
        self.client: Client | None = None  # closed by a signal that comes while acquiring
        self.child: Child | None = None
        self.lost: errors.EtcdError | None = None

    def on_signal(self, received: Received) -> None:
        with self.mutex:
            self.signum = received.signum
            child, client = self.child, self.client
        if child is not None:
            # A signal typed at the terminal reached COMMAND already (same process group).
            if not received.from_terminal:
                child.send_signal(received.signum)
        elif client is not None:
            client.close()  # ends the acquire; revoking the session drops our queued key
        self.wake.set()

    def on_lost(self, error: errors.EtcdError) -> None:
        with self.mutex:
            self.lost = error
        self.wake.set()


def run(args: argparse.Namespace) -> int:
    reported_by_command("lost")  # said once, by _run_command or _hold (exit 3)
    state = _State()
    with SignalRelay(state.on_signal):
        client = open_client(args)
        try:
            return _locked(args, client, state)
        finally:
            client.close()


def _locked(args: argparse.Namespace, client: Client, state: _State) -> int:
    mutex = client.lock(args.name, ttl=args.ttl)
    with state.mutex:
        state.client = client
    try:
        mutex.acquire(timeout=args.lock_timeout)
    except errors.LockTimeout:
        raise CliError(
            f"lock {args.name!r} not acquired within {args.lock_timeout:g} s", EXIT_TIMEOUT
        ) from None
    except errors.EtcdError:
        if state.signum:
            info(f"etcdsync: interrupted while waiting for lock {args.name!r}")
            return 128 + state.signum
        raise
    with state.mutex:
        state.client = None
        interrupted = state.signum
    if interrupted:  # the signal came as the acquire succeeded
        mutex.release()
        return 128 + interrupted
    mutex.add_lost_callback(state.on_lost)
    try:
        if args.command:
            return _run_command(args, mutex, state)
        return _hold(args, mutex, state)
    finally:
        mutex.release()


def _environment(mutex: Mutex) -> dict[str, str]:
    env = dict(os.environ)
    key, token = mutex.key, str(mutex.fencing_token)
    env.update(
        ETCDSYNC_LOCK_KEY=key,
        ETCDSYNC_LOCK_REV=token,
        # etcdctl's names, so scripts written for `etcdctl lock` work unchanged.
        ETCD_LOCK_KEY=key,
        ETCD_LOCK_REV=token,
    )
    return env


def _run_command(args: argparse.Namespace, mutex: Mutex, state: _State) -> int:
    command: list[str] = args.command
    try:
        child = Child(command, _environment(mutex), on_exit=state.wake.set)
    except FileNotFoundError:
        raise CliError(f"{command[0]}: command not found", 127) from None
    except PermissionError:
        raise CliError(f"{command[0]}: permission denied", 126) from None
    with state.mutex:
        state.child = child
        pending = state.signum
    if pending:  # arrived between the acquire and the start: COMMAND gets it now
        child.send_signal(pending)
    kill_at: float | None = None
    while child.status is None:
        state.wake.wait(_IDLE_WAKE)
        state.wake.clear()
        if state.lost is not None and kill_at is None:
            info(
                f"etcdsync: error: lock {args.name!r} lost while {command[0]} (pid "
                f"{child.pid}) was running ({one_line(state.lost)}); terminating it"
            )
            child.send_signal(signal.SIGTERM)
            kill_at = time.monotonic() + KILL_GRACE
        elif kill_at is not None and time.monotonic() >= kill_at:
            child.send_signal(signal.SIGKILL)
            kill_at = float("inf")
    status = child.status
    assert status is not None
    if state.lost is not None:
        if kill_at is None:  # lost as it exited: its last moments may not have been covered
            info(
                f"etcdsync: error: lock {args.name!r} lost ({one_line(state.lost)}) as "
                f"{command[0]} exited with status {status}"
            )
        return EXIT_LOST
    return status


def _hold(args: argparse.Namespace, mutex: Mutex, state: _State) -> int:
    emit(mutex.key)
    info(
        f"holding lock {args.name!r} (fencing token {mutex.fencing_token}); "
        "Ctrl-C or SIGTERM releases it"
    )
    while not state.signum and state.lost is None:
        state.wake.wait(_IDLE_WAKE)
        state.wake.clear()
    if state.lost is not None:
        raise CliError(f"lock {args.name!r} lost: {one_line(state.lost)}", EXIT_LOST)
    return EXIT_OK
