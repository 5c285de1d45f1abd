"""The partitioner across real processes (sync client): 100 items over 3 processes, one
killed with SIGKILL and one added during the run.

Each worker runs a partitioner (TTL 2 s) and, round after round, makes a guarded write
for every item it owns: it reads the item's record ``<records>/<item>`` (``count:member:
token``) and writes ``count + 1`` in a txn guarded only by ``is_owner(item)``.  Two
owners at once would lose increments.  Afterwards the store's own history (a watch
replay) must show, for every item:

* owner keys that never coexist (created, deleted, created, ...);
* record counts that grow by exactly one per write, every write made by the member
  whose owner key existed (created at the write's fencing token, not yet deleted) at
  the write's revision;
* every acknowledged write present;

and the processes' own logs must show ownership intervals (ACQUIRED .. RELEASED, in
``time.monotonic()``, which is one clock for every process on the machine) that never
overlap across members, the killed member's ending at its death.  After the kill
every item is owned again within TTL + 2 s.

The worker processes run this very file: ``python test_partitioner_processes.py ...``.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers.partitions import check_history, replay, wait_for_assignment

from etcdsync import Client, Op, errors
from etcdsync.group_types import OwnershipChange

THIS = str(Path(__file__).resolve())
TTL = 2
ITEMS = [f"item-{i:03d}" for i in range(100)]


# --- the worker side (runs in the child processes) ------------------------------------------


_OUT = threading.Lock()  # the callbacks' thread and the main thread both write lines


def _emit(**fields: Any) -> None:
    line = json.dumps(fields) + "\n"
    with _OUT:
        sys.stdout.write(line)
        sys.stdout.flush()


def _worker(endpoint: str, name: str, records: str) -> int:
    stop = threading.Event()

    def listen() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=listen, daemon=True).start()
    with Client(endpoint, timeout=2.0) as etcd:
        part = etcd.partitioner(name, ITEMS, ttl=TTL)

        def on_change(change: OwnershipChange) -> None:
            _emit(ev=change.type.value, item=change.item, token=change.token, t=time.monotonic())

        part.add_callback(on_change)
        part.start(timeout=10)
        me = part.member_id
        _emit(ev="started", member=me, pid=os.getpid())
        while not stop.is_set():
            for item in sorted(part.owned()):
                key = records + item
                try:
                    guard = part.is_owner(item)  # the compare carries the token
                    token = part.fencing_token(item)
                except errors.NotOwnerError:
                    continue  # handed over since owned() was read
                current = etcd.get(key).value
                count = int(current.split(b":")[0]) if current else 0
                value = f"{count + 1}:{me}:{token}"
                try:
                    done = etcd.txn([guard], [Op.put(key, value)])
                except errors.EtcdError as exc:
                    _emit(ev="write-unknown", item=item, value=value, error=repr(exc))
                    continue
                if done.succeeded:
                    _emit(ev="write", item=item, value=value, rev=done.revision)
            stop.wait(0.1)  # pacing: one round of writes every ~0.1 s
        part.stop()
        _emit(ev="stopped")
    return 0


# --- the test side ----------------------------------------------------------------------


class _Worker:
    """A worker process; a thread collects its JSON lines (with the time they arrived)."""

    def __init__(self, endpoint: str, name: str, records: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, THIS, endpoint, name, records],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self.other: list[str] = []
        self.new: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.killed_at: float | None = None
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            if line.startswith("{"):
                record = json.loads(line)
                self.lines.append(record)
                self.new.put(record)
            else:
                self.other.append(line)
        self.new.put(None)

    def expect(self, ev: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                record = self.new.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"no {ev!r} within {timeout} s; output: {self.other[-20:]}")
            if record is None:
                pytest.fail(f"worker ended (rc={self.proc.wait()}): {self.other[-20:]}")
            if record["ev"] == ev:
                return record

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.killed_at = time.monotonic()
        self.proc.wait(10)
        self._pump_thread.join(10)

    def stop(self, timeout: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        assert self.proc.wait(timeout) == 0, self.other[-20:]
        self._pump_thread.join(10)  # every line is read once this returns


def test_hundred_items_three_processes_kill_one_add_one(etcd_endpoint: str, prefix: str) -> None:
    name, records = f"{prefix}part", f"{prefix}records/"
    with Client(etcd_endpoint) as etcd:
        start = etcd.get(prefix).revision + 1
        workers = [_Worker(etcd_endpoint, name, records) for _ in range(3)]
        try:
            ids = [w.expect("started", 20)["member"] for w in workers]
            wait_for_assignment(etcd, name, set(ids), ITEMS, 20)
            # Guarded writes by everyone before the kill.
            for w in workers:
                w.expect("write", 10)
            victim = workers[1]
            victim.kill()
            killed_at = victim.killed_at
            assert killed_at is not None
            survivors = {ids[0], ids[2]}
            owned_again, _ = wait_for_assignment(etcd, name, survivors, ITEMS, TTL + 10)
            recovery = owned_again - killed_at
            assert recovery <= TTL + 2, f"items owned again {recovery:.2f} s after the kill"
            # A fourth member joins and takes its share.
            late = _Worker(etcd_endpoint, name, records)
            workers.append(late)
            ids.append(late.expect("started", 20)["member"])
            wait_for_assignment(etcd, name, survivors | {ids[3]}, ITEMS, 20)
            late.expect("write", 10)
            for w in (workers[0], workers[2], late):
                w.stop(30)
        finally:
            for w in workers:
                w.kill()
        assert etcd.get(f"{name}/", prefix=True, count_only=True).count == 0
        owner_events = replay(etcd, f"{name}/owners/", start)
        record_events = replay(etcd, records, start)

    # 1-2. From the store: owner keys never coexist; every write is count + 1, made by
    # the owner of the time under that owner's token.
    history = check_history(owner_events, record_events, records)
    assert set(history.tenure) == set(ITEMS)
    assert all(deleted < 1 << 62 for spans in history.tenure.values() for _, deleted, _ in spans)

    # 3. Every acknowledged write is in the store.
    acked = [
        (r["item"], r["value"], r["rev"]) for w in workers for r in w.lines if r["ev"] == "write"
    ]
    assert acked and set(acked) <= history.stored

    # 4. In real time, ownership intervals of different members never overlap.
    intervals: dict[str, list[tuple[float, float, int]]] = {}
    for index, w in enumerate(workers):
        start_of: dict[str, float] = {}
        for r in w.lines:
            if r["ev"] == "acquired":
                start_of[r["item"]] = r["t"]
            elif r["ev"] in ("released", "lost"):
                intervals.setdefault(r["item"], []).append((start_of.pop(r["item"]), r["t"], index))
        end_of_life = w.killed_at if w is victim else None
        for item, began in start_of.items():
            assert end_of_life is not None, f"worker {index} never released {item}"
            intervals.setdefault(item, []).append((began, end_of_life, index))
    for item, spans_t in intervals.items():
        spans_t.sort()
        for (_, end_a, a), (begin_b, _, b) in itertools.pairwise(spans_t):
            assert end_a < begin_b, f"{item}: the ownerships of workers {a} and {b} overlap"
    assert not any(r["ev"] == "lost" for w in workers if w is not victim for r in w.lines)

    print(
        f"\npartitioner, 100 items, TTL {TTL} s: {history.writes} guarded writes, "
        f"{history.ownerships} ownerships, 0 overlaps; "
        f"every item owned again {recovery:.2f} s after the SIGKILL"
    )


def _main(argv: Sequence[str]) -> int:
    endpoint, name, records = argv
    return _worker(endpoint, name, records)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
