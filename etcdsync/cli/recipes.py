"""``etcdsync queue|barrier|counter``: the recipe book for shell scripts.

::

    etcdsync queue put jobs "resize 42.png"          # FIFO (Go's recipe.Queue layout)
    etcdsync queue put jobs urgent --priority 0      # priority queue (0 is served first)
    etcdsync queue take jobs --timeout 30            # print one item, or exit 4
    etcdsync barrier hold deploy                     # raise a barrier (until released)
    etcdsync barrier wait deploy --timeout 600       # block until it is released
    etcdsync barrier release deploy
    etcdsync counter add visits 5                    # print the new value
    etcdsync counter get visits

A queue given ``--priority`` on put is a priority queue: take it with ``--priority``
too (the two layouts differ).  A barrier raised here is persistent (it does not go
with this short-lived process's lease); release it explicitly.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .. import Client, errors
from ._common import (
    EXIT_OK,
    EXIT_TIMEOUT,
    CliError,
    add_connection_options,
    emit,
    one_line,
    open_client,
    seconds,
)

__all__ = ["register"]

_Run = Callable[[argparse.Namespace], int]


def _action(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    run: _Run,
    text: str,
    *,
    waits: bool = False,
) -> argparse.ArgumentParser:
    action = actions.add_parser(name, help=text, description=text + ".")
    action.add_argument("name", metavar="NAME", help="the recipe's name (its key prefix)")
    if waits:
        # As for `lock`: here --timeout bounds the wait; the request deadline is the
        # global --timeout, given before the command.
        action.add_argument(
            "--timeout", type=seconds, help="give up (exit 4) after this many seconds"
        )
    add_connection_options(action, timeout=not waits)
    action.set_defaults(run=run, subparser=action)
    return action


def _with_client(args: argparse.Namespace, work: Callable[[Client], int]) -> int:
    with open_client(args) as etcd:
        try:
            return work(etcd)
        except errors.Timeout as exc:
            raise CliError(one_line(exc), EXIT_TIMEOUT) from exc


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queue = commands.add_parser(
        "queue",
        help="put items on a distributed FIFO or priority queue, take them off",
        description="A queue every item of which is taken by exactly one consumer.",
    )
    actions = queue.add_subparsers(dest="action", metavar="ACTION", required=True)
    put = _action(actions, "put", _queue_put, "add VALUE to the queue NAME")
    put.add_argument("value", metavar="VALUE")
    put.add_argument("--priority", type=int, help="use the priority queue (0 is served first)")
    take = _action(
        actions, "take", _queue_take, "take the oldest item off NAME and print it", waits=True
    )
    take.add_argument("--priority", action="store_true", help="take from the priority queue")
    size = _action(actions, "size", _queue_size, "print how many items NAME holds")
    size.add_argument("--priority", action="store_true", help="count the priority queue")
    queue.set_defaults(subparser=queue)

    barrier = commands.add_parser(
        "barrier",
        help="hold processes at a barrier until it is released",
        description="A barrier: `wait` blocks while someone holds it.",
    )
    actions = barrier.add_subparsers(dest="action", metavar="ACTION", required=True)
    _action(actions, "hold", _barrier_hold, "raise the barrier NAME (persistent)")
    _action(actions, "release", _barrier_release, "lower the barrier NAME")
    _action(actions, "wait", _barrier_wait, "block until the barrier NAME is down", waits=True)
    barrier.set_defaults(subparser=barrier)

    counter = commands.add_parser(
        "counter",
        help="an atomic integer: add to it, read it",
        description="An integer in one key, changed atomically (compare-and-swap).",
    )
    actions = counter.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = _action(actions, "add", _counter_add, "add N (may be negative) and print the result")
    add.add_argument("amount", metavar="N", type=int)
    _action(actions, "get", _counter_get, "print the value")
    counter.set_defaults(subparser=counter)


def _queue_put(args: argparse.Namespace) -> int:
    def work(etcd: Client) -> int:
        if args.priority is None:
            revision = etcd.queue(args.name).put(args.value)
        else:
            revision = etcd.priority_queue(args.name).put(args.value, args.priority)
        emit(str(revision))
        return EXIT_OK

    return _with_client(args, work)


def _queue_take(args: argparse.Namespace) -> int:
    def work(etcd: Client) -> int:
        queue = etcd.priority_queue(args.name) if args.priority else etcd.queue(args.name)
        emit(queue.get(timeout=args.timeout).value.decode("utf-8", "replace"))
        return EXIT_OK

    return _with_client(args, work)


def _queue_size(args: argparse.Namespace) -> int:
    def work(etcd: Client) -> int:
        queue = etcd.priority_queue(args.name) if args.priority else etcd.queue(args.name)
        emit(str(queue.size()))
        return EXIT_OK

    return _with_client(args, work)


def _barrier_hold(args: argparse.Namespace) -> int:
    def work(etcd: Client) -> int:
        raised = etcd.barrier(args.name, persistent=True).hold()
        emit("held" if raised else "already held")
        return EXIT_OK

    return _with_client(args, work)


def _barrier_release(args: argparse.Namespace) -> int:
    def work(etcd: Client) -> int:
        was_up = etcd.barrier(args.name, persistent=True).release()
        emit("released" if was_up else "was not held")
        return EXIT_OK

    return _with_client(args, work)


def _barrier_wait(args: argparse.Namespace) -> int:
    def work(etcd: Client) -> int:
        revision = etcd.barrier(args.name, persistent=True).wait(timeout=args.timeout)
        emit(f"released at revision {revision}")
        return EXIT_OK

    return _with_client(args, work)


def _counter_add(args: argparse.Namespace) -> int:
    def work(etcd: Client) -> int:
        emit(str(etcd.counter(args.name).add(args.amount)))
        return EXIT_OK

    return _with_client(args, work)


def _counter_get(args: argparse.Namespace) -> int:
    def work(etcd: Client) -> int:
        emit(str(etcd.counter(args.name).value()))
        return EXIT_OK

    return _with_client(args, work)
