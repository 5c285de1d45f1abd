"""Fixtures of the fault-injection suite: 3-member clusters, worker processes, histories.

Each scenario gets a fresh cluster (kills and partitions leave no trace on the next
one): members with the harness's fast raft timings (50 ms heartbeat, 500 ms election)
and ``--grpc-keepalive-min-time=500ms``, so clients may ping every second and notice
a dead connection within about two (:data:`SETTINGS`).

Every scenario records a :class:`~history.History`; it is written to the test's
``tmp_path`` as ``history.jsonl`` (kept by pytest for the last runs) for post-mortems.
Each scenario reports a one-line summary through :func:`report`; the lines are
printed at once (visible with ``-s``) and again in the terminal summary.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers.pings import MEMBER_ARGS, SETTINGS

from etcdsync import Client
from etcdsync.testing import EtcdBinary, EtcdCluster
from etcdsync.watch_types import Event

from .history import History

TTL = 2
"""Session / lock TTL of every scenario (seconds)."""
WORKER = Path(__file__).with_name("worker.py")

_SUMMARIES: list[str] = []


def report(line: str) -> None:
    """Print a scenario's one-line summary now and in the terminal summary."""
    print(f"\n{line}", flush=True)
    _SUMMARIES.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SUMMARIES:
        terminalreporter.section("fault scenarios")
        for line in _SUMMARIES:
            terminalreporter.write_line(line)


# --- clusters --------------------------------------------------------------------------------


def _start_cluster(binary: EtcdBinary, **options: Any) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(3, binary, extra_args=MEMBER_ARGS, **options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(etcd_binary: EtcdBinary) -> Iterator[EtcdCluster]:
    """A fresh 3-member cluster."""
    yield from _start_cluster(etcd_binary)


@pytest.fixture
def proxied_cluster(etcd_binary: EtcdBinary) -> Iterator[EtcdCluster]:
    """A fresh 3-member cluster with a fault proxy in front of every client and peer port."""
    yield from _start_cluster(etcd_binary, client_proxies=True, peer_proxies=True)


def endpoints_first(endpoints: Sequence[str], first: int) -> list[str]:
    """``endpoints`` with the one at index ``first`` moved to the front."""
    return [endpoints[first], *(e for i, e in enumerate(endpoints) if i != first)]


def follower_of(cluster: EtcdCluster) -> int:
    """The index of a member that is not the leader."""
    leader = cluster.wait_for_leader()
    return next(i for i in range(len(cluster)) if i != leader)


def client(endpoints: Sequence[str], **options: Any) -> Client:
    options.setdefault("timeout", 2.0)
    options.setdefault("settings", SETTINGS)
    return Client(list(endpoints), **options)


# --- histories ----------------------------------------------------------------------------------


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    """The scenario's history, dumped to ``tmp_path/history.jsonl`` afterwards."""
    recorded = History()
    yield recorded
    recorded.dump(tmp_path / "history.jsonl")


def replay(
    etcd: Client, key: str, *, start_revision: int, prefix: bool = False, timeout: float = 10.0
) -> list[Event]:
    """Every event of ``key`` (or the prefix) from ``start_revision`` on, from the store's
    own history (a watch replay) - for ranges whose keys are never deleted: the replay
    ends at the newest ``mod_revision`` found in the range now.

    (Not a progress notice: etcd before 3.5.8 may answer a progress request before it
    has sent a catching-up watcher its older events.)
    """
    current = etcd.get(key, prefix=prefix, keys_only=True).kvs
    end = max((kv.mod_revision for kv in current), default=0)
    events: list[Event] = []
    if end < start_revision:
        return events
    deadline = time.monotonic() + timeout
    with etcd.watch(key, prefix=prefix, start_revision=start_revision) as watcher:
        while not (events and events[-1].revision >= end):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"replay of {key!r} did not reach revision {end}")
            events.extend(watcher.get(timeout=left).events)
    return events


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` (for states nothing can be waited on, e.g. a process's
    output or a member's metrics); return the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - started


# --- worker processes -------------------------------------------------------------------------


class Worker:
    """A worker process (``worker.py``); its JSON lines go to the history."""

    def __init__(self, history: History, mode: str, endpoints: Sequence[str], *args: str) -> None:
        self.history = history
        self.notes: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), mode, ",".join(endpoints), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            if not self.history.add_json_line(line):
                self.notes.put(line)
        self.notes.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """Wait for the next note starting with ``prefix`` (other notes are kept)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.notes.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                pytest.fail(f"worker: no {prefix!r} within {timeout} s; notes: {self.seen}")
            if line is None:
                pytest.fail(f"worker ended (rc={self.proc.wait()}) before {prefix!r}: {self.seen}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def wait(self, timeout: float) -> int:
        """Wait for the exit; its status (fails the test on a timeout)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running after {timeout} s; notes: {self.seen}")
        self._pump_thread.join(5)  # every line is in the history once this returns
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)
        self._pump_thread.join(5)


@pytest.fixture
def workers(history: History) -> Iterator[Callable[..., Worker]]:
    """Start worker processes: ``workers(mode, endpoints, *args)``; all are ended after."""
    started: list[Worker] = []

    def start(mode: str, endpoints: Sequence[str], *args: object) -> Worker:
        worker = Worker(history, mode, endpoints, *(str(a) for a in args))
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


# --- the asyncio flavour, next to the threads --------------------------------------------------


class InThread:
    """Runs ``asyncio.run(fn(*args))`` in a thread, so an asyncio actor can run while
    the test thread drives the faults with the sync API."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        import asyncio

        try:
            self._result = asyncio.run(fn(*args))
        except BaseException as exc:  # handed to result()
            self._error = exc

    def result(self, timeout: float) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the asyncio actor did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result


# --- watch logs -------------------------------------------------------------------------------


WatchRecord = tuple[float, int, bytes]
"""(time received, revision, key) of one delivered event."""


class WatchLog:
    """Drains a sync watcher in a thread, logging every event with its arrival time."""

    def __init__(self, watcher: Any) -> None:
        self.watcher = watcher
        self.events: list[WatchRecord] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self.watcher.get(timeout=0.2)
            except TimeoutError:
                continue
            except BaseException as exc:  # kept for the test to assert on
                self.error = exc
                return
            now = time.monotonic()
            self.events.extend((now, e.revision, e.key) for e in batch.events)

    def last_revision(self) -> int:
        return self.events[-1][1] if self.events else 0

    def stop(self) -> list[WatchRecord]:
        self._stop.set()
        self._thread.join(5)
        return self.events


async def async_watch_log(
    endpoints: Sequence[str],
    prefix: str,
    ready: threading.Event,
    stop: threading.Event,
    start_revision: int = 0,
) -> list[WatchRecord]:
    """The asyncio flavour of :class:`WatchLog` (run it with :class:`InThread`)."""
    from etcdsync import AsyncClient

    log: list[WatchRecord] = []
    async with AsyncClient(list(endpoints), timeout=2.0, settings=SETTINGS) as etcd:
        watcher = await etcd.watch(prefix, prefix=True, start_revision=start_revision)
        ready.set()
        while not stop.is_set():
            try:
                batch = await watcher.get(timeout=0.2)
            except TimeoutError:
                continue
            now = time.monotonic()
            log.extend((now, e.revision, e.key) for e in batch.events)
    return log
