"""``etcdsync demo``: worker processes coordinating through etcd, a failover, a self-check.

The demo starts an embedded etcd (unless ``--endpoints`` is given) and N worker
processes (``etcdsync demo-worker``, see ``_demo_worker``).  They join a group, elect
a leader, take turns incrementing a shared counter under a lock (each write guarded by
the fencing token), and follow a config prefix that the demo changes while they run.  A third of
the way in, the demo SIGKILLs the leader - preferably while it holds the lock - and
the others take over once its session lease expires - which also takes it out of
the group.

Every second a status line shows who leads, who holds the lock and how many wait,
the counter, the group's size, and the config version each worker runs.  At the end the demo checks
itself against etcd's own history (see ``_demo_check``) and exits 0 only if every
check passes.

This module is the command (options, the embedded etcd, the exit code); the run
itself is in ``_demo_run`` (the scenario), ``_demo_processes`` (the worker processes),
``_demo_mirror`` (etcd's keys, followed with a watch) and ``_demo_report`` (the status
line and the summary).
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack

from .._embedded import EtcdNotFound, EtcdProcess, EtcdStartError
from . import _demo_worker
from ._common import (
    EXIT_ERROR,
    EXIT_OK,
    CliError,
    Interrupted,
    UsageError,
    add_connection_options,
    emit,
    interrupts_raise,
    one_line,
    open_client,
    positive_int,
    seconds,
)
from ._demo_run import DemoRun

__all__ = ["register", "register_worker", "run"]

DEFAULT_WORKERS = 4
MAX_WORKERS = 16
DEFAULT_DURATION = 20.0
MIN_DURATION = 8.0
DEFAULT_TTL = 2
CONFIG_VERSIONS = 4


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "demo",
        help="see workers share a lock, elect a leader, join a group and follow config, "
        "with a failover",
        description="Start an embedded etcd (unless --endpoints is given) and worker "
        "processes that join a group, elect a leader, increment a shared counter under "
        "a fenced lock and follow a config that changes while they run; kill the leader mid-run; "
        "show it live; check the outcome against etcd's history (exit 0 if it holds).",
    )
    sub.add_argument(
        "--workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"worker processes, 2 to {MAX_WORKERS} (default {DEFAULT_WORKERS})",
    )
    sub.add_argument(
        "--duration",
        type=seconds,
        default=DEFAULT_DURATION,
        metavar="S",
        help=f"seconds the workers run, at least {MIN_DURATION:g} (default {DEFAULT_DURATION:g})",
    )
    sub.add_argument(
        "--ttl",
        type=positive_int,
        default=DEFAULT_TTL,
        metavar="S",
        help=f"the workers' session TTL: how long a dead leader keeps its place "
        f"(default {DEFAULT_TTL})",
    )
    add_connection_options(sub)
    sub.set_defaults(run=run, subparser=sub)


def register_worker(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _demo_worker.register(commands)


def run(args: argparse.Namespace) -> int:
    if not 2 <= args.workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be between 2 and {MAX_WORKERS}")
    if args.duration < MIN_DURATION:
        raise UsageError(f"--duration must be at least {MIN_DURATION:g} s")
    restore = interrupts_raise()
    demo: DemoRun | None = None
    try:
        with ExitStack() as stack:
            emit(
                f"etcdsync demo: {args.workers} worker processes join a group, elect a "
                "leader, share a counter under a fenced lock and follow a live config; the "
                "leader is killed mid-run."
            )
            if args.endpoints_given:
                endpoints = args.endpoints
                emit(f"etcd at {endpoints}")
            else:
                server = _embedded(stack)
                endpoints = server.endpoint
                emit(f"embedded etcd {server.version} at {endpoints} (stopped at the end)")
            args.endpoints = endpoints
            client = stack.enter_context(open_client(args))
            demo = DemoRun(args, client, endpoints)
            try:
                checks = demo.run()
            finally:
                demo.shutdown()
            return EXIT_OK if demo.summary(checks) else EXIT_ERROR
    except Interrupted as exc:
        emit("demo: interrupted")
        return 128 + exc.signum
    finally:
        restore()


def _embedded(stack: ExitStack) -> EtcdProcess:
    try:
        return stack.enter_context(EtcdProcess())  # stopped, data deleted, when the demo ends
    except EtcdNotFound as exc:
        raise CliError(f"no etcd to embed: {exc}") from None
    except EtcdStartError as exc:
        raise CliError(f"the embedded etcd did not start: {one_line(exc)}") from None
