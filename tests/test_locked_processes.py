"""``@locked`` functions across real processes: four processes (two on the sync client,
two on the asyncio one) call a locked function 100 times each; every call reads a
counter and increments it with a write guarded by the lock's fencing compare.  The
counter ends at exactly 400, each value was read by exactly one call, and the fencing
tokens grow with the values read (the counter orders the holds in time).

The worker processes run this very file: ``python test_locked_processes.py MODE ...``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from pathlib import Path

from etcdsync import AsyncClient, Client, Op, current_lock

THIS = str(Path(__file__).resolve())
WORKERS, CALLS = 4, 100


# --- the worker side (runs in the child processes) ------------------------------------------


def _sync_worker(endpoint: str, name: str, counter: str, calls: int) -> None:
    with Client(endpoint) as etcd:

        @etcd.locked(name, ttl=5, timeout=60)
        def increment() -> str:
            lock = current_lock()
            assert lock is not None
            value = int(etcd.get(counter).value or b"0")
            if not lock.guarded_txn([Op.put(counter, str(value + 1))]).succeeded:
                raise SystemExit("guarded write failed")
            return f"{value} {lock.fencing_token}"

        for _ in range(calls):
            print(increment(), flush=True)


async def _async_worker(endpoint: str, name: str, counter: str, calls: int) -> None:
    async with AsyncClient(endpoint) as etcd:

        @etcd.locked(name, ttl=5, timeout=60)
        async def increment() -> str:
            lock = current_lock()
            assert lock is not None
            value = int((await etcd.get(counter)).value or b"0")
            if not (await lock.guarded_txn([Op.put(counter, str(value + 1))])).succeeded:
                raise SystemExit("guarded write failed")
            return f"{value} {lock.fencing_token}"

        for _ in range(calls):
            print(await increment(), flush=True)


def _main(argv: list[str]) -> int:
    flavour, endpoint, name, counter, calls = argv
    if flavour == "sync":
        _sync_worker(endpoint, name, counter, int(calls))
    else:
        asyncio.run(_async_worker(endpoint, name, counter, int(calls)))
    return 0


# --- the test side ----------------------------------------------------------------------


def test_four_processes_count_exactly_through_locked_functions(
    etcd_endpoint: str, prefix: str
) -> None:
    name, counter = f"{prefix}lock", f"{prefix}counter"
    flavours = ["sync", "async"] * (WORKERS // 2)
    children = [
        subprocess.Popen(
            [sys.executable, THIS, flavour, etcd_endpoint, name, counter, str(CALLS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for flavour in flavours
    ]
    holds: list[tuple[int, int]] = []
    try:
        for child, flavour in zip(children, flavours, strict=True):
            out, _ = child.communicate(timeout=100)
            assert child.returncode == 0, f"{flavour} worker failed:\n{out}"
            lines = out.splitlines()
            assert len(lines) == CALLS, out
            holds += [(int(v), int(t)) for v, t in (line.split() for line in lines)]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    with Client(etcd_endpoint) as etcd:
        assert etcd.get(counter).value == str(WORKERS * CALLS).encode()
        assert etcd.get(f"{name}/", prefix=True, count_only=True).count == 0
    holds.sort()
    assert [value for value, _ in holds] == list(range(WORKERS * CALLS))
    tokens = [token for _, token in holds]
    assert all(a < b for a, b in itertools.pairwise(tokens))


def test_cli_lock_timeout_zero_is_the_shell_form(
    etcd_endpoint: str, prefix: str, tmp_path: Path
) -> None:
    """``etcdsync lock --timeout 0 NAME -- COMMAND``: run COMMAND only if the lock is free
    now; exit 4 without running it when another holder has the lock."""
    name, marker = f"{prefix}job", tmp_path / "ran"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDSYNC_")}
    env["ETCDSYNC_ENDPOINTS"] = etcd_endpoint
    command = [sys.executable, "-m", "etcdsync", "lock", "--timeout", "0", name, "--"]
    script = ["sh", "-c", f'echo "$ETCDSYNC_LOCK_REV" > {marker}']
    with Client(etcd_endpoint) as etcd:
        with etcd.lock(name, ttl=5) as held:
            busy = subprocess.run(
                [*command, *script], env=env, capture_output=True, text=True, timeout=30
            )
            assert busy.returncode == 4, busy.stderr
            assert not marker.exists()  # the command never ran
            token = held.fencing_token
        free = subprocess.run(
            [*command, *script], env=env, capture_output=True, text=True, timeout=30
        )
        assert free.returncode == 0, free.stderr
        assert int(marker.read_text()) > token  # the fencing token reached the command
        assert etcd.get(f"{name}/", prefix=True, count_only=True).count == 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
