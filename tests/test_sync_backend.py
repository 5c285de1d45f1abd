"""The threaded flavour's backend: close() returns only after its streams' threads
ended; the latch that marks a watcher created.

A thread of a stream (ours, or the ones grpc runs for a call: the request feeder of a
bidirectional stream, the channel's event "spin" thread) still running when the
interpreter exits is cut off holding the call's lock; the call's ``__del__`` then waits
for that lock forever in the final garbage collection.  Seen in CI as an
``etcdsync queue take`` that printed its item and never exited (Python 3.13, grpcio
1.85, about one process in 300 under load).  Exit hangs are too rare to test
directly; what makes them possible - a thread left running when close() returns -
showed in about one close in 50, and 20 rounds here catch it.
"""

from __future__ import annotations

import threading
import time
import uuid

from etcdsync import Client
from etcdsync._backends._sync import Latch, spawn

PREFIX = f"{__name__}/{uuid.uuid4().hex[:8]}/"


def test_close_returns_after_its_streams_threads_ended(etcd_endpoint: str) -> None:
    key = PREFIX + "k"
    # Process-wide gRPC machinery starts on first use; it is not the client's to stop.
    with Client(etcd_endpoint) as warmup:
        warmup.get(key)
    for _ in range(20):
        before = set(threading.enumerate())
        client = Client(etcd_endpoint)
        lease = client.grant(5)
        watcher = client.watch(key)
        with client.keep_alive(lease) as renewals:
            renewals.next_result(timeout=5)  # the keepalive stream is up
            client.put(key, "v", lease=lease)
            for _event in watcher:
                break
            client.close()
        # No grace period: this is the moment a CLI process starts to exit.
        assert set(threading.enumerate()) - before == set()


def test_a_latch_lets_every_waiter_through_once_set_and_times_out_before() -> None:
    latch = Latch()
    assert not latch.is_set()
    started = time.monotonic()
    assert latch.wait(0.05) is False
    assert time.monotonic() - started >= 0.05
    woken: list[bool] = []
    waiters = [spawn(lambda: woken.append(latch.wait(10)), name=f"w{i}") for i in range(5)]
    latch.set()
    latch.set()  # a second set is harmless
    assert all(task.join(5) for task in waiters)
    assert woken == [True] * 5
    assert latch.is_set() and latch.wait(0) and latch.wait(None)
