"""Locks across real processes (sync client): exclusion, fencing after a pause, etcdctl.

* four processes x 200 lock / read / guarded write / unlock cycles on one counter key
  end at exactly 800 (with a plain mutex, and with a re-entrant one taken twice per
  hold), and the fencing tokens grow with the counter value each holder
  read (the counter orders the holds in time, across processes);
* a holder frozen with SIGSTOP past its TTL loses the lock to the next waiter, and
  once resumed its guarded write is rejected by etcd and it learns of the loss;
* ``etcdctl lock NAME`` and our lock exclude each other (same key layout as Go).

The worker processes run this very file: ``python test_lock_processes.py MODE ...``.
"""

from __future__ import annotations

import itertools
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

from etcdsync import Client, Op, errors
from etcdsync.watch_types import EventType

THIS = str(Path(__file__).resolve())


# --- the worker side (runs in the child processes) ------------------------------------------


def _count_worker(endpoint: str, name: str, counter: str, cycles: int) -> int:
    """Increment ``counter`` ``cycles`` times under the lock; print "value token" per hold."""
    with Client(endpoint) as etcd:
        for _ in range(cycles):
            with etcd.lock(name, ttl=5, timeout=30) as lock:
                value = int(etcd.get(counter).value or b"0")
                done = lock.guarded_txn([Op.put(counter, str(value + 1))])
                if not done.succeeded:
                    print("guarded write failed", flush=True)
                    return 1
                print(f"{value} {lock.fencing_token}", flush=True)
    return 0


def _reentrant_count_worker(endpoint: str, name: str, counter: str, cycles: int) -> int:
    """Like ``_count_worker`` through a re-entrant lock taken twice per hold (outer
    acquire, nested read-and-write); print "value token" per hold."""
    with Client(endpoint) as etcd:
        lock = etcd.reentrant_lock(name, ttl=5, timeout=30)
        for _ in range(cycles):
            with lock:
                with lock:
                    value = int(etcd.get(counter).value or b"0")
                    done = lock.guarded_txn([Op.put(counter, str(value + 1))])
                if lock.hold_count != 1 or not done.succeeded:
                    print("nesting or guarded write failed", flush=True)
                    return 1
                print(f"{value} {lock.fencing_token}", flush=True)
    return 0


def _frozen_holder(endpoint: str, name: str, data: str) -> int:
    """Hold the lock (ttl=2), wait for the parent's word, then try to write."""
    with Client(endpoint) as etcd:
        lock = etcd.lock(name, ttl=2).acquire(timeout=10)
        session = lock.session
        assert session is not None
        print(f"holding {lock.fencing_token} {session.ttl}", flush=True)
        sys.stdin.readline()  # the parent froze and resumed us meanwhile
        raw = etcd.txn([lock.is_owner()], [Op.put(data, "stale")])
        print(f"raw-write-succeeded {raw.succeeded}", flush=True)
        print(f"lost {lock.wait_lost(10)} {session.is_done}", flush=True)
        try:
            lock.guarded_txn([Op.put(data, "stale")])
            print("guarded-write done", flush=True)
        except errors.LockLostError:
            print("guarded-write refused", flush=True)
        lock.release()
    return 0


def _main(argv: Sequence[str]) -> int:
    mode, *args = argv
    if mode == "count":
        return _count_worker(args[0], args[1], args[2], int(args[3]))
    if mode == "reentrant-count":
        return _reentrant_count_worker(args[0], args[1], args[2], int(args[3]))
    if mode == "hold":
        return _frozen_holder(args[0], args[1], args[2])
    raise SystemExit(f"unknown mode {mode!r}")


# --- the test side ----------------------------------------------------------------------


class _Child:
    """A child process whose stdout lines are read by a thread (so reads can time out)."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float) -> str:
        """The next line of output; fails the test if none comes in time."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output within {timeout} s; so far: {self.seen}")
        if line is None:
            pytest.fail(f"the process ended (rc={self.proc.wait()}); output: {self.seen}")
        self.seen.append(line)
        return line

    def rest(self, timeout: float) -> list[str]:
        """All remaining output once the process has exited."""
        self.proc.wait(timeout)
        out = []
        while (line := self.lines.get(timeout=timeout)) is not None:
            out.append(line)
        self.seen += out
        return out

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def kill(self) -> None:
        """End the process (resumed first, in case it is stopped)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)


def _etcdctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


def _wait_count(etcd: Client, prefix: str, want: int, timeout: float = 10.0) -> None:
    """Wait on a watch until ``prefix`` holds ``want`` keys."""
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


@pytest.mark.parametrize("mode", ["count", "reentrant-count"], ids=["mutex", "reentrant"])
def test_four_processes_count_exactly_with_increasing_fencing_tokens(
    etcd_endpoint: str, prefix: str, mode: str
) -> None:
    name, counter = f"{prefix}lock", f"{prefix}counter"
    workers, cycles = 4, 200
    children = [
        _Child([sys.executable, THIS, mode, etcd_endpoint, name, counter, str(cycles)])
        for _ in range(workers)
    ]
    try:
        holds: list[tuple[int, int]] = []
        for child in children:
            lines = child.rest(timeout=50)
            assert child.proc.returncode == 0, lines
            holds += [(int(v), int(t)) for v, t in (line.split() for line in lines)]
    finally:
        for child in children:
            child.kill()
    with Client(etcd_endpoint) as etcd:
        assert etcd.get(counter).value == str(workers * cycles).encode()
        assert etcd.get(f"{name}/", prefix=True, count_only=True).count == 0
    # Each value was read by exactly one holder, and the value read orders the holds
    # in time: the fencing tokens must grow strictly along it, across processes.
    holds.sort()
    assert [value for value, _ in holds] == list(range(workers * cycles))
    tokens = [token for _, token in holds]
    assert all(a < b for a, b in itertools.pairwise(tokens))


def test_frozen_holder_is_fenced_off_and_learns_it_lost_the_lock(
    etcd_endpoint: str, prefix: str
) -> None:
    name, data = f"{prefix}lock", f"{prefix}data"
    child = _Child([sys.executable, THIS, "hold", etcd_endpoint, name, data])
    try:
        word, token, ttl = child.line(timeout=20).split()
        assert word == "holding"
        with Client(etcd_endpoint) as etcd:
            waiter = etcd.lock(name, ttl=5)
            assert waiter.try_acquire() is False
            os.kill(child.proc.pid, signal.SIGSTOP)
            frozen_at = time.monotonic()
            waiter.acquire(timeout=int(ttl) + 10)
            waited = time.monotonic() - frozen_at
            # etcd expires the lease at most TTL after its last renewal (sent before
            # the freeze) and checks for expired leases every 0.5 s; the watch then
            # hands the lock over at once.  1.5 s covers the check and a busy machine.
            assert waited < int(ttl) + 1.5, waited
            assert waiter.fencing_token > int(token)
            os.kill(child.proc.pid, signal.SIGCONT)
            child.send("go\n")
            assert child.line(timeout=10) == "raw-write-succeeded False"  # etcd said no
            assert child.line(timeout=15) == "lost True True"
            assert child.line(timeout=10) == "guarded-write refused"
            assert waiter.guarded_txn([Op.put(data, "fresh")]).succeeded
            assert etcd.get(data).value == b"fresh"
            waiter.release()
        assert child.rest(timeout=10) == [] and child.proc.returncode == 0
    finally:
        child.kill()


def test_etcdctl_lock_excludes_us(etcd_server: Any, prefix: str) -> None:
    name = f"{prefix}lock"
    ctl = _Child([*etcd_server.etcdctl_args(), "lock", name, "--ttl=2"], env=_etcdctl_env())
    try:
        ctl_key = ctl.line(timeout=10)
        assert ctl_key.startswith(f"{name}/")  # etcdctl prints the key it holds
        with Client(etcd_server.endpoint) as etcd:
            lock = etcd.lock(name, ttl=5)
            assert lock.try_acquire() is False
            with pytest.raises(errors.LockTimeout):
                lock.acquire(timeout=0.5)
            ctl_rev = etcd.get(ctl_key).kv
            assert ctl_rev is not None
            # Killed without a chance to unlock: its lease (ttl 2) has to expire.
            ctl.proc.kill()
            killed_at = time.monotonic()
            lock.acquire(timeout=10)
            assert time.monotonic() - killed_at < 2 + 1.5
            assert lock.key != ctl_key and lock.fencing_token > ctl_rev.create_revision
            lock.release()
    finally:
        ctl.kill()


def test_we_exclude_etcdctl_lock(etcd_server: Any, prefix: str) -> None:
    name = f"{prefix}lock"
    with Client(etcd_server.endpoint) as etcd:
        lock = etcd.lock(name, ttl=5).acquire()
        session = lock.session
        assert session is not None and lock.key == f"{name}/{session.lease_id:x}"
        ctl = _Child(
            [
                *etcd_server.etcdctl_args(),
                "lock",
                name,
                "--ttl=5",
                "--",
                "sh",
                "-c",
                "echo got $ETCD_LOCK_KEY $ETCD_LOCK_REV",
            ],
            env=_etcdctl_env(),
        )
        try:
            try:
                _wait_count(etcd, f"{name}/", 2)  # etcdctl queued its key behind ours
            except TimeoutError:
                ctl.kill()
                pytest.fail(f"etcdctl did not queue; its output: {ctl.rest(timeout=5)}")
            with pytest.raises(subprocess.TimeoutExpired):
                ctl.proc.wait(0.5)  # ...and waits while we hold the lock
            token = lock.fencing_token
            lock.release()
            out = ctl.rest(timeout=10)
            assert ctl.proc.returncode == 0, out
            word, key, rev = out[-1].split()
            assert word == "got" and key.startswith(f"{name}/") and int(rev) > token
        finally:
            ctl.kill()
        assert etcd.get(f"{name}/", prefix=True, count_only=True).count == 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
