"""Leader-only work across real processes: ``kill -9`` handovers, guarded writes, signals.

* Four candidate processes - sync and asyncio clients, ``leadership()`` blocks and
  ``run()`` - share one election (session TTL 2 s).  The leader's work writes a data
  key in a loop, every write guarded by its term's fencing compare.  The leader is
  killed with SIGKILL twice: the next candidate must lead within TTL + 1 s, and the
  history of the data key (read back from etcd) must show at most one work at a time:
  the terms' writes form contiguous runs, in the order of the terms' fencing tokens.
* ``run(..., forever=True, install_signal_handlers=True)`` resigns on SIGTERM and on
  SIGINT (both flavours): the leader key is gone at once, not after the TTL, and
  ``run()`` returns.

The worker processes run this very file: ``python test_leadership_processes.py MODE ...``.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from etcdsync import AsyncClient, AsyncTerm, Client, Op, Term, errors
from etcdsync.watch_types import EventType

THIS = str(Path(__file__).resolve())
TTL = 2
WRITE_EVERY = 0.05


# --- the worker side (runs in the child processes) ------------------------------------------


def _say(*words: object) -> None:
    print(*words, flush=True)


def _sync_candidate(api: str, endpoint: str, name: str, data: str, ident: str) -> None:
    def work(term: Term) -> None:
        _say("LEADER", ident, term.revision)
        i = 0
        while not term.lost.is_set():
            term.guarded_txn([Op.put(data, f"{ident} {term.revision} {i}")])
            i += 1
            term.lost.wait(WRITE_EVERY)

    with Client(endpoint) as etcd:
        election = etcd.election(name, ttl=TTL)
        if api == "run":
            election.run(work, ident)
        else:
            with election.leadership(ident) as term:
                work(term)


async def _async_candidate(api: str, endpoint: str, name: str, data: str, ident: str) -> None:
    async def work(term: AsyncTerm) -> None:
        _say("LEADER", ident, term.revision)
        i = 0
        while not term.lost.is_set():
            await term.guarded_txn([Op.put(data, f"{ident} {term.revision} {i}")])
            i += 1
            await term.wait_lost(WRITE_EVERY)

    async with AsyncClient(endpoint) as etcd:
        election = etcd.election(name, ttl=TTL)
        if api == "run":
            await election.run(work, ident)
        else:
            async with election.leadership(ident) as term:
                await work(term)


def _sync_stoppable(endpoint: str, name: str, ident: str) -> None:
    with Client(endpoint) as etcd:
        election = etcd.election(name, ttl=30)

        def work(term: Term) -> None:
            # Inside the try: the signal may interrupt the work right after the print.
            try:
                _say("LEADER", ident, term.revision)
                term.lost.wait()
            finally:
                _say("INTERRUPTED")

        result = election.run(work, ident, forever=True, install_signal_handlers=True)
        _say("STOPPED", result, etcd.get(f"{name}/", prefix=True, count_only=True).count)
        sys.stdin.readline()  # the parent has looked at the election meanwhile


async def _async_stoppable(endpoint: str, name: str, ident: str) -> None:
    async with AsyncClient(endpoint) as etcd:
        election = etcd.election(name, ttl=30)

        async def work(term: AsyncTerm) -> None:
            try:
                _say("LEADER", ident, term.revision)
                await term.wait_lost()
            finally:
                _say("INTERRUPTED")

        result = await election.run(work, ident, forever=True, install_signal_handlers=True)
        count = (await etcd.get(f"{name}/", prefix=True, count_only=True)).count
        _say("STOPPED", result, count)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def _main(argv: Sequence[str]) -> int:
    mode, *args = argv
    if mode == "candidate":
        flavour, api, endpoint, name, data, ident = args
        if flavour == "sync":
            _sync_candidate(api, endpoint, name, data, ident)
        else:
            asyncio.run(_async_candidate(api, endpoint, name, data, ident))
    elif mode == "stoppable":
        flavour, endpoint, name, ident = args
        if flavour == "sync":
            _sync_stoppable(endpoint, name, ident)
        else:
            asyncio.run(_async_stoppable(endpoint, name, ident))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


# --- the test side ----------------------------------------------------------------------


class _Worker:
    """A worker process whose stdout lines are queued by a thread (reads time out)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, THIS, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.rstrip("\n")))
        self.lines.put(None)

    def line(self, timeout: float) -> tuple[float, str]:
        try:
            item = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output within {timeout} s; so far: {self.seen[-10:]}")
        if item is None:
            self.lines.put(None)
            pytest.fail(f"the worker ended (rc={self.proc.wait()}); output: {self.seen[-10:]}")
        self.seen.append(item[1])
        return item

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def kill(self) -> float:
        if self.proc.poll() is None:
            self.proc.kill()
        killed = time.monotonic()
        self.proc.wait(10)
        return killed


def _wait_for_keys(etcd: Client, prefix: str, count: int, timeout: float = 30) -> None:
    """Wait on a watch until ``prefix`` holds ``count`` keys (the queue order is set)."""
    deadline = time.monotonic() + timeout
    with etcd.watch(prefix, prefix=True) as watcher:
        while etcd.get(prefix, prefix=True, count_only=True).count < count:
            left = deadline - time.monotonic()
            assert left > 0, f"fewer than {count} candidates under {prefix}"
            try:
                watcher.get(timeout=left)
            except TimeoutError:
                pass


def _wait_for_write(etcd: Client, key: str, ident: str, timeout: float = 10) -> None:
    """Wait on a watch until ``ident``'s work has written ``key``."""
    deadline = time.monotonic() + timeout
    current = etcd.get(key)
    if (current.value or b"").startswith(f"{ident} ".encode()):
        return
    with etcd.watch(key, start_revision=current.revision + 1) as watcher:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"{ident} never wrote {key}"
            for event in watcher.get(timeout=left).events:
                if event.kv.value.startswith(f"{ident} ".encode()):
                    return


def _history(etcd: Client, key: str, after: int) -> list[tuple[int, str]]:
    """Every value written to ``key`` after revision ``after``: (revision, value)."""
    last = etcd.get(key).kv
    assert last is not None, "nothing was written"
    out: list[tuple[int, str]] = []
    with etcd.watch(key, start_revision=after + 1) as watcher:
        while not out or out[-1][0] < last.mod_revision:
            for event in watcher.get(timeout=10).events:
                assert event.type is EventType.PUT
                out.append((event.revision, event.kv.value.decode()))
    return out


ORDERS = {
    "sync-leadership,async-run,sync-run,async-leadership": [
        ("sync", "leadership"),
        ("async", "run"),
        ("sync", "run"),
        ("async", "leadership"),
    ],
    "async-leadership,sync-run,async-run,sync-leadership": [
        ("async", "leadership"),
        ("sync", "run"),
        ("async", "run"),
        ("sync", "leadership"),
    ],
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_kill_9_twice_hands_over_within_ttl_one_work_at_a_time(
    etcd_endpoint: str, prefix: str, order: str
) -> None:
    name, data = f"{prefix}election", f"{prefix}data"
    workers: list[_Worker] = []
    with Client(etcd_endpoint) as etcd:
        start = etcd.get(data).revision
        try:
            for i, (flavour, api) in enumerate(ORDERS[order]):
                workers.append(
                    _Worker("candidate", flavour, api, etcd_endpoint, name, data, f"c{i}")
                )
                _wait_for_keys(etcd, f"{name}/", i + 1)  # c0 < c1 < c2 < c3 in the queue
            terms: dict[str, int] = {}
            _, line = workers[0].line(timeout=20)
            word, ident, revision = line.split()
            assert (word, ident) == ("LEADER", "c0")
            terms[ident] = int(revision)
            handovers = []
            for dead, heir in ((0, 1), (1, 2)):
                _wait_for_write(etcd, data, f"c{dead}")
                killed = workers[dead].kill()
                at, line = workers[heir].line(timeout=TTL + 10)
                word, ident, revision = line.split()
                assert (word, ident) == ("LEADER", f"c{heir}")
                terms[ident] = int(revision)
                handovers.append(at - killed)
            _wait_for_write(etcd, data, "c2")
        finally:
            for worker in workers:
                worker.kill()
        history = _history(etcd, data, start)
    print(f"{order}: handover after kill -9: {', '.join(f'{h:.2f} s' for h in handovers)}; "
          f"{len(history)} guarded writes")  # fmt: skip
    for handover in handovers:
        assert handover <= TTL + 1.0, f"handover took {handover:.2f} s (TTL {TTL} s)"
    # At most one work at a time: each term's guarded writes form one contiguous run,
    # the runs come in the order of the fencing tokens, and each run is its leader's
    # own, numbered without a gap.
    runs: list[tuple[str, int, list[int]]] = []
    for _, value in history:
        ident, revision, index = value.split()
        if not runs or runs[-1][:2] != (ident, int(revision)):
            runs.append((ident, int(revision), []))
        runs[-1][2].append(int(index))
    assert [(ident, rev) for ident, rev, _ in runs] == sorted(terms.items()), runs
    assert [ident for ident, _, _ in runs] == ["c0", "c1", "c2"]
    for _, _, indexes in runs:
        assert indexes == list(range(len(indexes)))
    assert terms["c0"] < terms["c1"] < terms["c2"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_signal_resigns_at_once_and_run_returns(
    etcd_endpoint: str, prefix: str, flavour: str, signum: int
) -> None:
    name = f"{prefix}election"
    worker = _Worker("stoppable", flavour, etcd_endpoint, name, "me")
    try:
        _, line = worker.line(timeout=20)
        assert line.split()[:2] == ["LEADER", "me"]
        os.kill(worker.proc.pid, signum)
        assert worker.line(timeout=10)[1] == "INTERRUPTED"
        # run() returned None after the resign: the key was gone before the client closed
        # (the session TTL is 30 s, so nothing else could have removed it).
        assert worker.line(timeout=10)[1] == "STOPPED None 0"
        with Client(etcd_endpoint) as etcd:
            assert etcd.get(f"{name}/", prefix=True, count_only=True).count == 0
        worker.send("bye\n")
        assert worker.proc.wait(10) == 0
    finally:
        worker.kill()


def test_signal_handlers_need_the_main_thread(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}election"
    outcome: list[BaseException] = []
    with Client(etcd_endpoint) as etcd:

        def in_a_thread() -> None:
            try:
                etcd.election(name, ttl=5).run(
                    lambda term: None, "me", install_signal_handlers=True
                )
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=in_a_thread)
        thread.start()
        thread.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], errors.InvalidRequest)
        assert "main thread" in str(outcome[0])
        # Refused before campaigning: nothing was written.
        assert etcd.get(f"{name}/", prefix=True, count_only=True).count == 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
