"""How often gRPC aborts a client made in a forked child, by gRPC environment setting.

    .venv/bin/python bench/fork_safety.py [--runs 40] [--parent sync|async|both]

For each setting (none, ``GRPC_ENABLE_FORK_SUPPORT=0`` or ``=1``,
``GRPC_POLL_STRATEGY=poll``, both) and each start method, a fresh parent process
opens a client with live streams - a watch and a kept-alive lease, so that gRPC
threads sit inside calls - and then starts ``--runs`` children one after the other.
Each child makes a NEW client, writes a key and reads it back through a watch, and
exits.  A child killed by a signal (gRPC's poller aborts with SIGABRT: "Check
failed: ... g_active_poller") is counted as an abort; the figures go into
recipes_docs/connection.md.  Not part of the test suite: report the numbers, never
assert them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections import Counter

SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "GRPC_ENABLE_FORK_SUPPORT=0": {"GRPC_ENABLE_FORK_SUPPORT": "0"},
    "GRPC_ENABLE_FORK_SUPPORT=1": {"GRPC_ENABLE_FORK_SUPPORT": "1"},
    "GRPC_POLL_STRATEGY=poll": {"GRPC_POLL_STRATEGY": "poll"},
    "both": {"GRPC_ENABLE_FORK_SUPPORT": "1", "GRPC_POLL_STRATEGY": "poll"},
}


def _child(endpoint: str, key: str) -> None:
    from etcdsync import Client

    with Client(endpoint, timeout=5) as etcd:
        watcher = etcd.watch(key)
        etcd.put(key, str(os.getpid()))
        watcher.get(timeout=5)
        watcher.cancel()


def _sync_parent(endpoint: str, runs: int, method: str) -> Counter[str]:
    from etcdsync import Client

    outcomes: Counter[str] = Counter()
    with Client(endpoint, timeout=5) as etcd:
        watcher = etcd.watch("fork-safety/parent")  # a reader thread blocked in gRPC
        listener = etcd.keep_alive(etcd.grant(30))  # the keepalive threads too
        listener.next_result(timeout=5)
        outcomes.update(_fork_children(endpoint, runs, method))
        listener.close()
        watcher.cancel()
    return outcomes


def _async_parent(endpoint: str, runs: int, method: str) -> Counter[str]:
    import asyncio
    import threading

    from etcdsync import AsyncClient

    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop = asyncio.new_event_loop()

    async def hold() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with AsyncClient(endpoint, timeout=5) as etcd:
            watcher = await etcd.watch("fork-safety/parent")
            listener = etcd.keep_alive(await etcd.grant(30))
            await listener.next_result(timeout=5)
            ready.set()
            await stop.wait()
            listener.close()
            await watcher.cancel()

    thread = threading.Thread(target=loop.run_until_complete, args=(hold(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        return _fork_children(endpoint, runs, method)
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def _fork_children(endpoint: str, runs: int, method: str) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    context = multiprocessing.get_context(method)
    for run in range(runs):
        process = context.Process(target=_child, args=(endpoint, f"fork-safety/{run}"))
        process.start()
        process.join(30)
        if process.exitcode is None:
            process.kill()
            process.join()
            outcomes["hung"] += 1
        elif process.exitcode < 0:
            outcomes[f"killed by signal {-process.exitcode}"] += 1
        else:
            outcomes["ok" if process.exitcode == 0 else f"exit {process.exitcode}"] += 1
    return outcomes


def _parent_main(endpoint: str, runs: int, parent: str, method: str) -> None:
    run = _sync_parent if parent == "sync" else _async_parent
    print(json.dumps(dict(run(endpoint, runs, method))), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--parent", choices=["sync", "async", "both"], default="both")
    parser.add_argument("--methods", default="fork,forkserver")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="which of: %(default)s")
    parser.add_argument("--endpoint", help="an etcd to use (default: start one)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        endpoint, runs, parent, method = args.worker
        _parent_main(endpoint, int(runs), parent, method)
        return
    from etcdsync.testing import endpoint_or_embedded

    parents = ["sync", "async"] if args.parent == "both" else [args.parent]
    with endpoint_or_embedded([args.endpoint] if args.endpoint else []) as endpoint:
        for parent in parents:
            for method in args.methods.split(","):
                for name in args.settings.split(","):
                    env = SETTINGS[name]
                    if method != "fork" and name != "default":
                        continue  # a fresh interpreter: nothing inherited to protect
                    started = time.monotonic()
                    output = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--worker",
                            endpoint,
                            str(args.runs),
                            parent,
                            method,
                        ],
                        env={**os.environ, **env},
                        capture_output=True,
                        text=True,
                        timeout=30 * args.runs + 60,
                    )
                    lines = [line for line in output.stdout.splitlines() if line.startswith("{")]
                    result = (
                        json.loads(lines[-1]) if lines else {"parent failed": output.returncode}
                    )
                    per_child = (time.monotonic() - started) / args.runs
                    print(
                        f"parent {parent:5} start {method:10} {name:28} {result} "
                        f"({per_child:.2f} s per child)",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
