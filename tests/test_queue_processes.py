"""Queues across real processes (sync client).

* four producer processes put 1,000 items each into one FIFO queue while four
  consumer processes take them: every item is taken exactly once, and each
  producer's items are taken in the order it put them (take revisions);
* at-least-once queue: a consumer process that claimed an item is killed with
  SIGKILL before consuming it; the item is delivered again, to a consumer in this
  process, within the claimer's TTL + 1 s, and consumed exactly once.

The worker processes run this very file: ``python test_queue_processes.py MODE ...``.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from helpers.children import Child, kill_all

from etcdsync import Client

THIS = str(Path(__file__).resolve())
TTL = 2
STOP = "stop"


# --- the worker side (runs in the child processes) ------------------------------------------


def _produce(endpoint: str, name: str, producer: str, count: str) -> int:
    with Client(endpoint) as etcd:
        queue = etcd.queue(name, ttl=10)
        for i in range(int(count)):
            queue.put(f"{producer}:{i}", timeout=30)
        print("produced", flush=True)
    return 0


def _consume(endpoint: str, name: str) -> int:
    with Client(endpoint) as etcd:
        queue = etcd.queue(name, ttl=10)
        print("ready", flush=True)
        lines = []
        while True:
            item = queue.get(timeout=60)
            if item.value == STOP.encode():
                break
            lines.append(f"{item.text} {item.revision}")
        print("\n".join(lines), flush=True)  # one write: no per-item pipe traffic
        print("stopped", flush=True)
    return 0


def _claim(endpoint: str, name: str, ttl: str) -> int:
    with Client(endpoint) as etcd:
        claim = etcd.locking_queue(name, ttl=int(ttl)).get(timeout=30)
        print(f"claimed {claim.key.decode()} {claim.token}", flush=True)
        sys.stdin.readline()  # "process" the item until killed
        claim.consume()
    return 0


def _main(argv: list[str]) -> int:
    mode, *args = argv
    if mode == "produce":
        return _produce(*args)
    if mode == "consume":
        return _consume(*args)
    if mode == "claim":
        return _claim(*args)
    raise SystemExit(f"unknown mode {mode!r}")


# --- the test side ----------------------------------------------------------------------


def test_four_producers_four_consumers_every_item_once_fifo_per_producer(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}jobs"
    producers, per_producer, consumers = 4, 1000, 4
    readers = [Child(THIS, "consume", etcd_endpoint, name) for _ in range(consumers)]
    writers: list[Child] = []
    try:
        for reader in readers:
            assert reader.line(30) == "ready"
        started = time.monotonic()
        writers = [
            Child(THIS, "produce", etcd_endpoint, name, p, per_producer) for p in range(producers)
        ]
        for writer in writers:
            assert writer.line(120) == "produced"
            assert writer.rest(10) == [] and writer.proc.returncode == 0
        with Client(etcd_endpoint) as etcd:
            queue = etcd.queue(name)
            for _ in range(consumers):
                queue.put(STOP)  # after every item: served last
            outputs = [reader.rest(120) for reader in readers]
            elapsed = time.monotonic() - started
            assert queue.size() == 0
    finally:
        kill_all(readers + writers)
    takes: list[tuple[int, str]] = []
    for reader, output in zip(readers, outputs, strict=True):
        assert reader.proc.returncode == 0 and output[-1] == "stopped", output[-5:]
        takes += [(int(rev), value) for value, rev in (line.split() for line in output[:-1])]
    values = [value for _, value in takes]
    duplicates = [v for v, n in Counter(values).items() if n > 1]
    assert duplicates == [], duplicates[:10]
    expected = {f"{p}:{i}" for p in range(producers) for i in range(per_producer)}
    assert set(values) == expected, f"missing: {sorted(expected - set(values))[:10]}"
    assert len({rev for rev, _ in takes}) == len(takes)  # one take per revision
    takes.sort()
    for p in range(producers):
        sequence = [int(v.split(":")[1]) for _, v in takes if v.startswith(f"{p}:")]
        assert sequence == list(range(per_producer)), f"producer {p} taken out of order"
    per_consumer = [len(output) - 1 for output in outputs]
    assert sum(per_consumer) == producers * per_producer and min(per_consumer) > 0, per_consumer
    print(f"4 x {per_producer} items through 4 consumers in {elapsed:.1f} s: {per_consumer}")
    assert elapsed < 120, elapsed


def test_killed_claimer_item_is_delivered_again(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}work"
    with Client(etcd_endpoint) as etcd:
        queue = etcd.locking_queue(name, ttl=10)
        queue.put(b"the item")
        child = Child(THIS, "claim", etcd_endpoint, name, TTL)
        try:
            word, key, token = child.line(30).split()
            assert word == "claimed"
            assert queue.try_get() is None  # claimed: hidden from other consumers
            assert queue.size() == 1 and queue.claimed() == 1
            child.kill()  # SIGKILL mid-item: no consume, no release, no revoke
            killed_at = time.monotonic()
            again = queue.get(timeout=TTL + 10)
            waited = time.monotonic() - killed_at
        finally:
            child.kill()
        assert again.key.decode() == key and again.value == b"the item"
        assert again.token > int(token)
        again.consume()
        assert queue.size() == 0 and queue.claimed() == 0
    # The claimer's lease expires at most TTL after the kill; etcd checks every 0.5 s;
    # the claim's DELETE wakes the waiting get().
    print(f"claimed item redelivered {waited:.2f} s after its consumer's SIGKILL (TTL {TTL} s)")
    assert waited <= TTL + 1.0, f"redelivered {waited:.2f} s after the kill (TTL {TTL} s)"


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
