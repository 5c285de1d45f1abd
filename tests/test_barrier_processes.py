"""Barriers across real processes (sync client).

* ten processes wait on a held barrier: none passes before the release, all pass
  after it - each reports the revision at which it saw the barrier down, which
  must be the release's own revision, and the time, which must follow it;
* a holder process killed with SIGKILL (no release, no revoke) lets the waiters
  through within its TTL + 1 s: the barrier is bound to its session's lease;
* four processes in a double barrier of 4: nobody enters before the fourth waiter
  key exists, nobody returns from ``leave()`` before every waiter key is gone
  (revisions from the store's history); a participant killed inside does not
  block the others' ``leave()`` beyond its TTL + 1 s.

The worker processes run this very file: ``python test_barrier_processes.py MODE ...``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from helpers.children import Child, kill_all

from etcdsync import Client
from etcdsync.watch_types import EventType

THIS = str(Path(__file__).resolve())
TTL = 2


# --- the worker side (runs in the child processes) ------------------------------------------


def _waiter(endpoint: str, name: str) -> int:
    with Client(endpoint) as etcd:
        barrier = etcd.barrier(name)
        print(f"up {barrier.is_up()}", flush=True)
        revision = barrier.wait(timeout=60)
        print(f"passed {revision} {time.time()}", flush=True)
    return 0


def _holder(endpoint: str, name: str, ttl: str) -> int:
    with Client(endpoint) as etcd:
        barrier = etcd.barrier(name, ttl=int(ttl))
        print(f"held {barrier.hold()} {barrier.revision}", flush=True)
        sys.stdin.readline()  # hold until killed
    return 0


def _participant(endpoint: str, name: str, count: str, ttl: str) -> int:
    with Client(endpoint) as etcd:
        barrier = etcd.double_barrier(name, int(count), ttl=int(ttl))
        entered = barrier.enter(timeout=60)
        print(f"entered {entered} {barrier.key}", flush=True)
        sys.stdin.readline()  # the parent says when to leave
        print(f"left {barrier.leave(timeout=60)}", flush=True)
    return 0


def _main(argv: list[str]) -> int:
    mode, *args = argv
    if mode == "wait":
        return _waiter(*args)
    if mode == "hold":
        return _holder(*args)
    if mode == "participant":
        return _participant(*args)
    raise SystemExit(f"unknown mode {mode!r}")


# --- the test side ----------------------------------------------------------------------


def _history(etcd: Client, prefix: str, start: int) -> dict[bytes, list[tuple[EventType, int]]]:
    """Every event under ``prefix`` from ``start`` to now, per key."""
    now = etcd.get(prefix, prefix=True, keys_only=True).revision
    out: dict[bytes, list[tuple[EventType, int]]] = {}
    with etcd.watch(prefix, prefix=True, start_revision=start) as watcher:
        seen = start - 1
        while seen < now:
            batch = watcher.get(timeout=10)
            for event in batch.events:
                out.setdefault(event.key, []).append((event.type, event.revision))
            seen = max(seen, batch.revision)
    return out


def _wait_keys(etcd: Client, prefix: str, want: int, timeout: float = 30.0) -> None:
    """Wait on a watch (no polling) until ``prefix`` holds ``want`` keys."""
    response = etcd.get(prefix, prefix=True, count_only=True)
    count = response.count
    deadline = time.monotonic() + timeout
    with etcd.watch(prefix, prefix=True, start_revision=response.revision + 1) as watcher:
        while count != want:
            for event in watcher.get(max(deadline - time.monotonic(), 0.0)).events:
                if event.type is EventType.DELETE:
                    count -= 1
                elif event.kv.version == 1:
                    count += 1


def test_ten_processes_pass_together_only_after_the_release(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}gate"
    with Client(etcd_endpoint) as etcd:
        barrier = etcd.barrier(name, ttl=10)
        assert barrier.hold()
        children = [Child(THIS, "wait", etcd_endpoint, name) for _ in range(10)]
        try:
            for child in children:
                assert child.line(30) == "up True"
            # Every process has seen the barrier up and is waiting: none may pass.
            assert all(child.pending() == [] for child in children)
            with etcd.watch(name, start_revision=barrier.revision + 1) as watcher:
                released_at = time.time()
                assert barrier.release()
                (event,) = watcher.get(timeout=5).events
            assert event.type is EventType.DELETE
            passed = [child.line(20).split() for child in children]
            for child in children:
                assert child.rest(10) == [] and child.proc.returncode == 0
        finally:
            kill_all(children)
    assert all(word == "passed" for word, _, _ in passed)
    # Each waiter was let through by the release itself, and after it.
    assert [int(revision) for _, revision, _ in passed] == [event.revision] * 10
    assert all(float(at) >= released_at for _, _, at in passed)


def test_a_killed_holder_lets_the_waiters_through_within_its_ttl(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}gate"
    holder = Child(THIS, "hold", etcd_endpoint, name, TTL)
    try:
        word, held, _ = holder.line(30).split()
        assert (word, held) == ("held", "True")
        with Client(etcd_endpoint) as etcd:
            barrier = etcd.barrier(name)
            assert barrier.is_up()
            holder.kill()  # SIGKILL: no release, no revoke
            killed_at = time.monotonic()
            barrier.wait(timeout=TTL + 10)
            waited = time.monotonic() - killed_at
    finally:
        holder.kill()
    # The lease expires at most TTL after the kill (its last renewal was earlier),
    # etcd looks for expired leases every 0.5 s, then one watch event arrives.
    print(f"barrier fell {waited:.2f} s after its holder's SIGKILL (TTL {TTL} s)")
    assert waited <= TTL + 1.0, f"the barrier fell {waited:.2f} s after the kill (TTL {TTL} s)"


def test_double_barrier_of_four_processes(etcd_endpoint: str, prefix: str) -> None:
    name, count = f"{prefix}round", 4
    with Client(etcd_endpoint) as etcd:
        start = etcd.get(name).revision + 1
        children = [Child(THIS, "participant", etcd_endpoint, name, count, 10) for _ in range(3)]
        try:
            # Three are waiting inside; wait until their keys exist, then check that
            # none has entered (the fourth is missing).
            _wait_keys(etcd, f"{name}/waiters/", 3)
            assert all(child.pending() == [] for child in children)
            children.append(Child(THIS, "participant", etcd_endpoint, name, count, 10))
            entered = [child.line(30).split() for child in children]
            # Leave one by one: none of the first three may return before the last.
            for child in children[:3]:
                child.send("leave\n")
            assert all(child.pending() == [] for child in children[:3])
            children[3].send("leave\n")
            left = [child.line(30).split() for child in children]
            for child in children:
                assert child.rest(10) == [] and child.proc.returncode == 0
        finally:
            kill_all(children)
        history = _history(etcd, f"{name}/", start)
    waiters = {k: v for k, v in history.items() if k.startswith(f"{name}/waiters/".encode())}
    assert len(waiters) == count
    created = [events[0][1] for events in waiters.values()]
    deleted = [events[-1][1] for events in waiters.values()]
    assert all(
        [e[0] for e in events] == [EventType.PUT, EventType.DELETE] for events in waiters.values()
    )
    enter_revisions = {int(revision) for _, revision, _ in entered}
    assert len(enter_revisions) == 1 and min(enter_revisions) > max(created)
    assert min(int(revision) for _, revision in left) >= max(deleted)
    ready = history[f"{name}/ready".encode()]
    assert ready[0] == (EventType.PUT, min(enter_revisions)) and ready[-1][0] is EventType.DELETE


def test_a_participant_killed_inside_does_not_block_leave(etcd_endpoint: str, prefix: str) -> None:
    name, count = f"{prefix}round", 3
    children = [Child(THIS, "participant", etcd_endpoint, name, count, TTL) for _ in range(count)]
    try:
        for child in children:
            assert child.line(30).startswith("entered ")
        children[0].kill()
        killed_at = time.monotonic()
        for child in children[1:]:
            child.send("leave\n")
        results: list[Any] = [child.line(TTL + 10) for child in children[1:]]
        waited = time.monotonic() - killed_at
        assert all(line.startswith("left ") for line in results), results
    finally:
        kill_all(children)
    print(f"leave() returned {waited:.2f} s after a participant's SIGKILL (TTL {TTL} s)")
    assert waited <= TTL + 1.0, f"leave() returned {waited:.2f} s after the kill (TTL {TTL} s)"


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
