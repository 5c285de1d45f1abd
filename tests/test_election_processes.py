"""Election acceptance across processes: kill -9 the leader, the next one takes over.

Three candidate processes (sync client, session TTL 2 s) queue in one election.
The leader's process is killed with SIGKILL - no resign, no revoke: only the
lease's expiry on the server can end its leadership.  The next candidate must be
elected within TTL + 1 s of the kill, and an ``observe()`` consumer in this
process must see every leader exactly once, in order.

Why TTL + 1 s holds: the killed process last renewed at most TTL/3 before dying,
so its lease expires at most TTL after the kill; etcd's leader checks for expired
leases every 500 ms; then one watch event reaches the next candidate, which reads
once more before returning.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from etcdsync import Client, errors

TTL = 2

CANDIDATE = """
import sys
from etcdsync import Client

endpoint, name, ident = sys.argv[1:4]
with Client(endpoint) as etcd:
    election = etcd.election(name, ttl=int(sys.argv[4]))
    election.campaign(ident)
    print("LEADER", ident, election.leader_revision, flush=True)
    election.lost.wait()  # lead until killed
    print("LOST", ident, flush=True)
"""


class _Candidate:
    def __init__(self, endpoint: str, name: str, ident: str, events: queue.Queue[Any]) -> None:
        self.ident = ident
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CANDIDATE, endpoint, name, ident, str(TTL)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, args=(events,), daemon=True)
        self._thread.start()

    def _read(self, events: queue.Queue[Any]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            events.put((time.monotonic(), self.ident, line.split()))

    def kill(self) -> float:
        os.kill(self.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        self.proc.wait(5)
        return killed


def _next_line(events: queue.Queue[Any], timeout: float) -> tuple[float, str, list[str]]:
    try:
        item: tuple[float, str, list[str]] = events.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no candidate reported within {timeout} s") from None
    return item


def _wait_for_candidates(etcd: Client, name: str, count: int) -> None:
    """Wait on a watch until ``count`` candidate keys exist (their queue order is set)."""
    with etcd.watch(name + "/", prefix=True) as watcher:
        deadline = time.monotonic() + 20
        while etcd.get(name + "/", prefix=True, count_only=True).count < count:
            left = deadline - time.monotonic()
            assert left > 0, f"fewer than {count} candidates registered"
            try:
                watcher.get(timeout=left)
            except TimeoutError:
                pass


def test_kill_9_of_the_leader_hands_over_within_ttl(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "workers"
    events: queue.Queue[Any] = queue.Queue()
    observed: queue.Queue[Any] = queue.Queue()
    candidates: list[_Candidate] = []
    with Client(etcd_endpoint) as etcd:
        observer = etcd.election(name).observe()

        def follow() -> None:
            try:
                for kv in observer:
                    observed.put((time.monotonic(), kv))
            except errors.EtcdError as exc:
                observed.put((time.monotonic(), exc))

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        try:
            for i in range(3):
                candidates.append(_Candidate(etcd_endpoint, name, f"c{i}", events))
                _wait_for_candidates(etcd, name, i + 1)  # c0 < c1 < c2 in the queue
            _, ident, words = _next_line(events, 20)
            assert (ident, words[0]) == ("c0", "LEADER")
            handovers = []
            for dead, heir in ((0, 1), (1, 2)):
                killed = candidates[dead].kill()
                at, ident, words = _next_line(events, TTL + 5)
                assert (ident, words[0]) == (f"c{heir}", "LEADER"), (ident, words)
                handovers.append(at - killed)
            print(f"handover after kill -9: {', '.join(f'{h:.2f} s' for h in handovers)}")
            for handover in handovers:
                assert handover <= TTL + 1.0, f"handover took {handover:.2f} s (TTL {TTL} s)"
            # The observer saw c0, c1, c2: each once, in order, and nothing else.
            seen = []
            for _ in range(3):
                _, item = observed.get(timeout=10)
                assert not isinstance(item, Exception), item
                seen.append(item.value.decode())
            assert seen == ["c0", "c1", "c2"]
            assert observed.empty()
            leader = etcd.election(name).leader()
            assert leader is not None and leader.value == b"c2"
        finally:
            for candidate in candidates:
                if candidate.proc.poll() is None:
                    candidate.kill()
            observer.cancel()
            follower.join(5)
        # Stopping the observer ended its iteration cleanly.
        assert not follower.is_alive()
        assert observed.empty()
