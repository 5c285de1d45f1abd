"""``etcdsync inspect`` on real etcd: who holds, who waits, who leads, which session.

* ``inspect --json`` names the exact holder and the waiters in queue order for a lock
  held by etcdsync with ``etcdctl lock`` and etcdsync waiting, and the waiters' ages
  grow between two runs; the leader and candidates of an election run by
  ``etcdctl elect`` and etcdsync; a semaphore's holders and waiter; a readers-writer
  lock's readers and the writer and reader queued behind them; the sessions behind
  each key, with their TTL left and the keys they keep alive;
* ``inspect --watch`` in a pseudo-terminal, while 4 processes pass a lock around,
  shows each new holder on the screen within 1 s of the previous holder's release
  (with a clock tick of 5 s, so only the watch can explain it);
* the detection itself (pure) on hand-made keys: look-alike keys are not contenders.

The worker processes run this very file: ``python test_inspect.py MODE ...``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import queue
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers.children import Child, kill_all

from etcdsync import Client, KeyValue, LeaseTimeToLive, errors
from etcdsync.cli.inspect_layout import SeenBook, Snapshot, analyse
from etcdsync.watch_types import EventType

THIS = str(Path(__file__).resolve())
INSPECT = [sys.executable, "-m", "etcdsync"]


# --- the worker side (runs in the child processes) ------------------------------------------


def _contend(endpoint: str, name: str, rounds: int, hold: float) -> int:
    """Take the lock ``rounds`` times, each with a fresh session (so each hold has its
    own key); print when each hold starts and when its release begins."""
    with Client(endpoint) as etcd:
        for _ in range(rounds):
            with etcd.session(ttl=5) as session:
                lock = etcd.lock(name, session=session).acquire(timeout=60)
                print(json.dumps({"acquired": lock.key, "t": time.time()}), flush=True)
                time.sleep(hold)  # the work done under the lock
                print(json.dumps({"releasing": lock.key, "t": time.time()}), flush=True)
                lock.release()
    return 0


def _main(argv: Sequence[str]) -> int:
    mode, *args = argv
    if mode == "contend":
        return _contend(args[0], args[1], int(args[2]), float(args[3]))
    raise SystemExit(f"unknown mode {mode!r}")


# --- helpers -------------------------------------------------------------------------------


class _Etcdctl(Child):
    """An etcdctl process whose output lines are read with timeouts."""

    def __init__(self, server: Any, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        env["ETCDCTL_API"] = "3"
        self.proc = subprocess.Popen(
            [*server.etcdctl_args(), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._pump, daemon=True).start()


def _wait_keys(etcd: Client, prefix: str, want: int, timeout: float = 10.0) -> list[KeyValue]:
    """Wait on a watch until ``prefix`` holds ``want`` keys; returns them by create revision."""
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
    kvs = etcd.get(prefix, prefix=True).kvs
    return sorted(kvs, key=lambda kv: kv.create_revision)


def _inspect_json(endpoint: str, prefix: str, *extra: str) -> dict[str, Any]:
    out = subprocess.run(
        [*INSPECT, "--endpoints", endpoint, "inspect", prefix, "--json", *extra],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    assert doc["schema"] == "etcdsync.inspect/1" and doc["prefix"] == prefix
    return doc


def _keys(entries: Sequence[dict[str, Any]]) -> list[str]:
    return [e["key"] for e in entries]


def _start(target: Any) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


# --- inspect --json ------------------------------------------------------------------------


def test_json_lock_holder_and_waiters_ours_and_etcdctl_ages_grow(
    etcd_server: Any, prefix: str
) -> None:
    name = f"{prefix}lock"
    with Client(etcd_server.endpoint) as etcd:
        holder_session = etcd.session(ttl=20)
        waiter_session = etcd.session(ttl=15)
        holder = etcd.lock(name, session=holder_session).acquire(timeout=10)
        ctl = _Etcdctl(etcd_server, "lock", name, "--ttl=10")
        waiter = etcd.lock(name, session=waiter_session)
        thread: threading.Thread | None = None
        ctl_kv = _wait_keys(etcd, f"{name}/", 2)[1]
        try:
            thread = _start(lambda: waiter.acquire(timeout=30))
            kvs = _wait_keys(etcd, f"{name}/", 3)
            assert [kv.key.decode() for kv in kvs] == [
                holder.key,
                ctl_kv.key.decode(),
                f"{name}/{waiter_session.lease_id:x}",
            ]

            first = _inspect_json(etcd_server.endpoint, prefix)
            [lock] = first["locks"]
            assert lock["name"] == name and first["elections"] == []
            assert lock["holder"]["key"] == holder.key
            assert lock["holder"]["lease"] == f"{holder_session.lease_id:x}"
            assert lock["holder"]["create_revision"] == holder.fencing_token
            assert 0 < lock["holder"]["ttl"] <= 20 and lock["holder"]["value"] == ""
            assert _keys(lock["waiters"]) == [kv.key.decode() for kv in kvs[1:]]
            assert lock["waiters"][0]["lease"] == f"{ctl_kv.lease:x}"  # etcdctl's session
            assert 0 < lock["waiters"][0]["ttl"] <= 10
            for entry, kv in zip(lock["waiters"], kvs[1:], strict=True):
                assert entry["age"]["revisions"] == first["revision"] - kv.create_revision >= 0
                assert entry["age"]["seconds"] is None  # one-shot: no wall clock to offer
            # The sessions: each lease with its TTL left and the keys it keeps alive.
            sessions = {s["lease_id"]: s for s in first["sessions"]}
            mine = sessions[holder_session.lease_id]
            assert mine["alive"] and mine["granted_ttl"] == 20 and 0 < mine["ttl"] <= 20
            assert mine["keys"] == [holder.key]
            assert mine["roles"] == {holder.key: f"lock {name}: holder"}
            assert sessions[ctl_kv.lease]["roles"] == {
                ctl_kv.key.decode(): f"lock {name}: waiter 1"
            }

            etcd.put(f"{prefix}unrelated", "a write to the store")
            second = _inspect_json(etcd_server.endpoint, prefix)
            [lock2] = second["locks"]
            assert lock2["holder"]["key"] == holder.key
            assert _keys(lock2["waiters"]) == _keys(lock["waiters"])
            for before, after in zip(lock["waiters"], lock2["waiters"], strict=True):
                assert after["age"]["revisions"] > before["age"]["revisions"]
            assert second["other_keys"] == 1

            holder.release()  # etcdctl takes it, we keep waiting
            third = _inspect_json(etcd_server.endpoint, prefix)
            assert third["locks"][0]["holder"]["key"] == ctl_kv.key.decode()
            assert _keys(third["locks"][0]["waiters"]) == [kvs[2].key.decode()]
        finally:
            ctl.kill()
            with contextlib.suppress(errors.LeaseNotFoundError):
                etcd.revoke(ctl_kv.lease)  # etcdctl's key goes at once, the waiter gets in
            if thread is not None:
                thread.join(15)
            if waiter.held:
                waiter.release()
            holder_session.close()
            waiter_session.close()


def test_json_election_leader_and_candidates_etcdctl_and_ours(
    etcd_server: Any, prefix: str
) -> None:
    name = f"{prefix}election"
    with Client(etcd_server.endpoint) as etcd:
        leader = _Etcdctl(etcd_server, "elect", name, "ctl-leader")
        session = etcd.session(ttl=15)
        candidate = etcd.election(name, session=session)
        thread: threading.Thread | None = None
        second_ctl: _Etcdctl | None = None
        try:
            leader_key = leader.line(timeout=10)  # etcdctl prints its key, then its value
            assert leader.line(timeout=5) == "ctl-leader"
            thread = _start(lambda: candidate.campaign(b"py-candidate", timeout=30))
            _wait_keys(etcd, f"{name}/", 2)
            second_ctl = _Etcdctl(etcd_server, "elect", name, "ctl-second")
            kvs = _wait_keys(etcd, f"{name}/", 3)

            doc = _inspect_json(etcd_server.endpoint, prefix)
            assert doc["locks"] == []
            [election] = doc["elections"]
            assert election["name"] == name
            assert election["leader"]["key"] == leader_key == kvs[0].key.decode()
            assert election["leader"]["value"] == "ctl-leader"
            assert election["term"]["revision"] == kvs[0].create_revision
            assert election["term"]["age"]["revisions"] == doc["revision"] - kvs[0].create_revision
            assert [c["value"] for c in election["candidates"]] == ["py-candidate", "ctl-second"]
            assert _keys(election["candidates"]) == [kv.key.decode() for kv in kvs[1:]]
            assert election["candidates"][0]["lease_id"] == session.lease_id

            leader.kill()  # without resigning: its key goes when its lease (60 s) is revoked
            etcd.revoke(kvs[0].lease)
            assert thread is not None
            thread.join(10)
            assert candidate.is_leader
            after = _inspect_json(etcd_server.endpoint, prefix)["elections"][0]
            assert after["leader"]["value"] == "py-candidate"
            assert [c["value"] for c in after["candidates"]] == ["ctl-second"]
            candidate.resign()
        finally:
            leader.kill()
            if second_ctl is not None:
                second_ctl.kill()
            if thread is not None:
                thread.join(10)
            session.close()
        for kv in etcd.get(f"{name}/", prefix=True).kvs:  # etcdctl's leases (ttl 60)
            etcd.revoke(kv.lease)


def test_json_semaphore_rwlock_and_sessions(etcd_endpoint: str, prefix: str) -> None:
    sem_name, rw_name = f"{prefix}sem", f"{prefix}rw"
    with Client(etcd_endpoint) as etcd:
        session = etcd.session(ttl=30)
        slots = [etcd.semaphore(sem_name, 2, session=session) for _ in range(3)]
        slots[0].acquire(timeout=10)
        slots[1].acquire(timeout=10)
        rw = etcd.rwlock(rw_name, session=session)
        readers = [rw.read().acquire(timeout=10), rw.read().acquire(timeout=10)]
        writer, late_reader = rw.write(), rw.read()
        threads = [_start(lambda: slots[2].acquire(timeout=30))]
        _wait_keys(etcd, f"{sem_name}/", 3)
        threads.append(_start(lambda: writer.acquire(timeout=30)))
        _wait_keys(etcd, f"{rw_name}/", 3)
        threads.append(_start(lambda: late_reader.acquire(timeout=30)))
        rw_kvs = _wait_keys(etcd, f"{rw_name}/", 4)
        sem_kvs = _wait_keys(etcd, f"{sem_name}/", 3)
        try:
            doc = _inspect_json(etcd_endpoint, prefix)
            [sem] = doc["semaphores"]
            assert sem["name"] == sem_name
            assert _keys(sem["contenders"]) == [slots[0].key, slots[1].key, sem_kvs[2].key.decode()]
            if sem["limit"] is None:  # the semaphore records no limit: give it
                assert sem["holders"] is None
                sem = _inspect_json(etcd_endpoint, prefix, "--semaphore", f"{sem_name}=2")[
                    "semaphores"
                ][0]
            assert sem["limit"] == 2
            assert _keys(sem["holders"]) == [slots[0].key, slots[1].key]
            assert _keys(sem["waiters"]) == [sem_kvs[2].key.decode()]

            [rwlock] = doc["rwlocks"]
            assert rwlock["name"] == rw_name and rwlock["mode"] == "read"
            assert _keys(rwlock["holders"]) == [r.key for r in readers]
            assert [w["side"] for w in rwlock["waiters"]] == ["write", "read"]
            assert _keys(rwlock["waiters"]) == [kv.key.decode() for kv in rw_kvs[2:]]

            [shared] = [s for s in doc["sessions"] if s["lease_id"] == session.lease_id]
            assert shared["alive"] and 0 < shared["ttl"] <= shared["granted_ttl"] == 30
            every = sorted(kv.key.decode() for kv in [*sem_kvs, *rw_kvs])
            assert shared["keys"] == every  # all seven keys live on this one lease
            assert shared["roles"][slots[0].key] == f"semaphore {sem_name}: " + (
                "holder 1/2" if doc["semaphores"][0]["limit"] else "contender 1"
            )
            assert shared["roles"][rw_kvs[2].key.decode()] == f"rwlock {rw_name}: write waiter 1"
        finally:
            # Each waiter is let in and released in turn (a waiter left to time out
            # would raise in its thread).
            for r in readers:
                r.release()
            slots[0].release()
            for thread, lock in zip(threads, (slots[2], writer, late_reader), strict=True):
                thread.join(15)
                if lock.held:
                    lock.release()
            slots[1].release()
            session.close()


# --- inspect --watch in a pseudo-terminal ---------------------------------------------------

_CLEAR = "\x1b[H\x1b[2J"  # inspect --watch starts each screen with it
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]")


class _Terminal:
    """A process on a pseudo-terminal (200 x 100); its output read with arrival times."""

    def __init__(self, argv: Sequence[str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 100, 200, 0, 0))
        env = dict(os.environ, TERM="xterm-256color", COLUMNS="200", LINES="100")
        self.proc = subprocess.Popen(
            list(argv), stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self._master = master
        self.chunks: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: the terminal's last writer closed it
                return
            if not data:
                return
            with self._lock:
                self.chunks.append((time.time(), data.decode("utf-8", "replace")))

    def frames(self) -> list[tuple[float, str]]:
        """Each complete screen drawn so far (the text between two clears, ANSI codes
        removed) with the time its last byte arrived (the last screen counts once the
        output has been quiet for 0.3 s)."""
        with self._lock:
            chunks = list(self.chunks)
        text, ends = "", []
        for t, chunk in chunks:
            text += chunk
            ends.append((len(text), t))
        out: list[tuple[float, str]] = []
        starts = [m.end() for m in re.finditer(re.escape(_CLEAR), text)]
        quiet = bool(chunks) and time.time() - chunks[-1][0] > 0.3
        for begin, end in zip(starts, [*starts[1:], None], strict=False):
            if end is None and not quiet:
                continue  # the last frame may still be arriving
            stop = len(text) if end is None else end - len(_CLEAR)
            arrived = next(t for offset, t in ends if offset >= stop)
            out.append((arrived, _ANSI.sub("", text[begin:stop])))
        return out

    def text(self) -> str:
        """Everything written so far, ANSI codes removed."""
        with self._lock:
            return _ANSI.sub("", "".join(chunk for _, chunk in self.chunks)).replace("\r", "")

    def wait_for(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, f) for _, f in self.frames()):
                return
            time.sleep(0.05)  # polling our own capture buffer, not etcd
        pytest.fail(f"no frame matched {pattern!r}; last: {self.frames()[-1:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        if self._master >= 0:
            os.close(self._master)
            self._master = -1


@pytest.fixture
def terminals() -> Iterator[list[_Terminal]]:
    started: list[_Terminal] = []
    yield started
    for terminal in started:
        terminal.stop()


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "without-rich"])
def test_tables_in_a_terminal_with_rich_and_plain_without(
    etcd_endpoint: str, prefix: str, rich: bool
) -> None:
    name = f"{prefix}lock"
    # Without rich: as if the cli extra were not installed.
    block = "" if rich else "sys.modules['rich'] = None; "
    code = f"import sys; {block}from etcdsync.cli import main; sys.exit(main(sys.argv[1:]))"
    with Client(etcd_endpoint) as etcd, etcd.lock(name, ttl=10, timeout=10) as lock:
        leaf = lock.key.rpartition("/")[2]
        terminal = _Terminal(
            [sys.executable, "-c", code, "--endpoints", etcd_endpoint, "inspect", prefix]
        )
        assert terminal.proc.wait(30) == 0
        terminal.stop()
    text = terminal.text()
    [row] = [line for line in text.splitlines() if re.search(r" holder +[0-9a-f]+ ", line)]
    assert re.search(rf" holder +{leaf} ", row)
    header = (
        r" role +key under name/ +lease +ttl left"
        if rich
        else r"^  LOCK +ROLE +KEY UNDER NAME/ +LEASE +TTL LEFT"
    )
    assert re.search(header, text, re.M), text
    assert ("\u2500" in text) is rich  # rich draws its header rule; plain text does not


def test_watch_in_a_terminal_shows_each_handover_within_a_second(
    etcd_endpoint: str, prefix: str, terminals: list[_Terminal]
) -> None:
    name = f"{prefix}lock"
    argv = [*INSPECT, "--endpoints", etcd_endpoint, "inspect", prefix, "--watch", "--tick", "5"]
    screen = _Terminal(argv)
    terminals.append(screen)
    screen.wait_for(r"etcdsync inspect", timeout=15)
    workers = [Child(THIS, "contend", etcd_endpoint, name, 2, 0.3) for _ in range(4)]
    try:
        events: list[dict[str, Any]] = []
        for worker in workers:
            for _ in range(4):  # 2 rounds: acquired, releasing, acquired, releasing
                events.append(json.loads(worker.line(timeout=60)))
            worker.rest(timeout=15)
            assert worker.proc.returncode == 0
    finally:
        kill_all(workers)
    screen.wait_for(r"no recipe found", timeout=5)  # the last release is drawn too
    frames = screen.frames()
    screen.stop()

    holder_re = re.compile(r" holder +([0-9a-f]+) ")  # the key under the lock's name
    shown: list[tuple[float, str]] = []  # (arrival, holder key) per frame
    for arrived, frame in frames:
        m = holder_re.search(frame)
        shown.append((arrived, f"{name}/{m.group(1)}" if m else ""))

    holds = sorted(((e["t"], e["acquired"]) for e in events if "acquired" in e), key=lambda p: p[0])
    releases = sorted((e["t"], e["releasing"]) for e in events if "releasing" in e)
    assert len(holds) == 8 and len({key for _, key in holds}) == 8  # one key per hold
    delays = []
    for i, (acquired_at, key) in enumerate(holds):
        # The handover starts when the previous holder begins its release - or, when
        # nobody was queued then, when this holder got the lock.
        start = max(releases[i - 1][0], acquired_at) if i else acquired_at
        if i:
            assert releases[i - 1][1] == holds[i - 1][1]  # holds and releases alternate
        first = next((t for t, k in shown if k == key), None)
        assert first is not None, f"holder {key} never drawn"
        delays.append(first - start)
    print("handover delays (s):", [round(d, 3) for d in delays])
    assert max(delays) < 1.0, delays


# --- the detection, on hand-made keys (pure) ------------------------------------------------


def _kv(key: str, create: int, lease: int = 0, value: bytes = b"") -> KeyValue:
    return KeyValue(key.encode(), value, create, create, 1, lease)


def test_layouts_are_told_apart_and_look_alikes_are_not_contenders() -> None:
    lease_a, lease_b = 0x694D7A3B5C1E2F07, 0x694D7A3B5C1E2F99
    kvs = [
        _kv(f"p/lock/{lease_a:x}", 10, lease_a),
        _kv(f"p/lock/{lease_b:x}", 11, lease_b),
        _kv(f"p/el/{lease_b:x}", 12, lease_b, b"me"),
        _kv(f"p/el/{lease_a:x}", 13, lease_a, b""),  # an empty proposal in an election
        _kv(f"p/fake/{lease_a:x}", 14, lease_b),  # looks like a lock key, wrong lease
        _kv(f"p/fake2/{lease_a:x}", 15),  # no lease at all
        _kv(f"p/sem/{lease_a:x}-{'1' * 16}", 16, lease_a),
        _kv(f"p/q/receipts/{lease_a:x}-{'2' * 8}", 17, lease_a),  # a queue receipt
        _kv(f"p/rw/write/{lease_b:x}-{'3' * 16}", 18, lease_b),
        _kv(f"p/rw/read/{lease_a:x}-{'4' * 16}", 19, lease_a),
        _kv("p/jobs/1796476185890314800", 20),
        _kv("p/jobs/1796476185890314900", 21),
        _kv("p/pq/00001/0000000000000001", 21),  # a priority queue item (16 digits)
        _kv("p/once/0", 22, lease_a, b"host:1"),
        _kv(f"p/sem3/{lease_a:x}-{'5' * 16}", 23, lease_a, b"3"),  # records its limit
        _kv(f"p/parts/members/{lease_a:x}", 24, lease_a, b"node-a"),
        _kv("p/parts/owners/shard-7", 25, lease_a, f"{lease_a:x}".encode()),
        _kv(f"p/group/members/{lease_b:x}", 26, lease_b, b"node-b"),  # no owners: a group
    ]
    leases = {
        lease_a: LeaseTimeToLive(lease_a, 7, 10, [kv.key for kv in kvs if kv.lease == lease_a]),
        lease_b: None,  # expired between the read and the lease lookup
    }
    report = analyse(Snapshot("p/", 30, kvs, leases), wall_now=1796476195.8903148)
    assert [(f.name, f.head and f.head.key) for f in report.locks] == [
        ("p/lock", f"p/lock/{lease_a:x}")
    ]
    assert [w.key for w in report.locks[0].waiters] == [f"p/lock/{lease_b:x}"]
    election, group = report.elections
    assert (election.name, group.name) == ("p/el", "p/group/members")
    assert election.head is not None and election.head.value == b"me"
    assert election.head.age.revisions == 18
    assert [(s.name, s.limit) for s in report.semaphores] == [("p/sem", None), ("p/sem3", 3)]
    [parts] = report.partitioners
    assert parts.name == "p/parts" and [m.value for m in parts.members] == [b"node-a"]
    assert [(item, c.lease) for item, c in parts.owners] == [("shard-7", lease_a)]
    [rw] = report.rwlocks
    assert rw.mode == "write" and [c.side for c in rw.waiters] == ["read"]
    q, pq = report.queues
    assert (q.kind, q.name, q.items) == ("queue", "p/jobs", 2)
    assert (pq.kind, pq.name, dict(pq.by_priority)) == ("priority_queue", "p/pq", {1: 1})
    assert q.oldest_item_seconds == pytest.approx(10.0, abs=0.01)
    assert [(i, c.value) for i, c in report.lease_once[0].slots] == [(0, b"host:1")]
    assert report.other_keys == 2 and report.other_examples == (
        f"p/fake/{lease_a:x}",
        f"p/fake2/{lease_a:x}",
    )
    by_lease = {s.lease: s for s in report.sessions}
    assert by_lease[lease_a].ttl == 7 and not by_lease[lease_b].alive
    assert by_lease[lease_a].roles[f"p/q/receipts/{lease_a:x}-{'2' * 8}"] == "bookkeeping"


def test_seen_book_ages_and_tenure_in_watch_mode() -> None:
    lease = 0xABC
    book = SeenBook()
    first = [_kv(f"l/{lease:x}", 5, lease)]
    r1 = analyse(Snapshot("", 6, first, {}), book=book, now=100.0)
    head = r1.locks[0].head
    assert head is not None and head.age.seconds == 0.0 and not head.age.exact
    assert r1.locks[0].tenure is not None and r1.locks[0].tenure.since_revision is None
    # A waiter created while watching, then the holder leaves at revision 9.
    book.created(f"l/{lease + 1:x}", 8, now=101.0)
    both = [*first, _kv(f"l/{lease + 1:x}", 8, lease + 1)]
    r2 = analyse(Snapshot("", 8, both, {}), book=book, now=102.5)
    assert r2.locks[0].waiters[0].age.seconds == 1.5 and r2.locks[0].waiters[0].age.exact
    assert r2.locks[0].waiters[0].age.revisions == 0
    r3 = analyse(Snapshot("", 9, both[1:], {}), book=book, now=103.0)
    tenure = r3.locks[0].tenure
    assert tenure is not None and tenure.since_revision == 9 and tenure.seconds == 0.0
    r4 = analyse(Snapshot("", 12, both[1:], {}), book=book, now=104.0)
    tenure = r4.locks[0].tenure
    assert tenure is not None and (tenure.since_revision, tenure.revisions) == (9, 3)
    assert tenure.seconds == 1.0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
