"""Leader election against a real etcd: queueing, proclaim, resign, loss, observe, etcdctl."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from typing import Any

import pytest
from helpers import pings

from etcdsync import AsyncClient, Op, errors
from etcdsync._backends._async import FLAVOUR, Event, spawn, wait_event
from etcdsync.testing.proxy import FaultProxy

from .lock_helpers import wait_count


def _key(name: str, session: Any) -> bytes:
    return f"{name}/{session.lease_id:x}".encode()


async def _wait_for_candidates(etcd: Any, name: str, count: int, timeout: float = 10) -> None:
    """Wait (on a watch, not a poll) until ``count`` candidate keys exist under ``name/``."""
    watcher = await etcd.watch(name + "/", prefix=True)
    try:
        deadline = time.monotonic() + timeout
        while (await etcd.get(name + "/", prefix=True, count_only=True)).count < count:
            left = deadline - time.monotonic()
            assert left > 0, f"fewer than {count} candidates under {name}/"
            try:
                await watcher.get(timeout=left)
            except TimeoutError:
                pass
    finally:
        await watcher.cancel()


class _Campaign:
    """campaign() running in a task (thread, in the sync flavour) of its own."""

    def __init__(self, election: Any, value: str, timeout: float | None = None) -> None:
        self.election = election
        self.done = Event()
        self.error: BaseException | None = None
        self.task = spawn(self._run, value, timeout, name="test-campaign")

    async def _run(self, value: str, timeout: float | None) -> None:
        try:
            await self.election.campaign(value, timeout=timeout)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.done.set()

    async def result(self, timeout: float = 10) -> None:
        assert await wait_event(self.done, timeout), "campaign did not finish in time"
        if self.error is not None:
            raise self.error


async def test_campaign_key_layout_and_resign(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as etcd:
        session = await etcd.session(ttl=5)
        election = etcd.election(name, session=session)
        assert await election.leader() is None
        assert not election.is_leader and election.leader_key is None
        await election.campaign("node-1", timeout=5)
        leader = await election.leader()
        assert leader is not None
        assert leader.key == _key(name, session)  # Go / etcdctl layout
        assert leader.value == b"node-1" and leader.lease == session.lease_id
        assert election.is_leader
        assert election.leader_key == leader.key
        assert election.leader_revision == leader.create_revision
        await election.resign()
        assert not election.is_leader and election.leader_revision is None
        assert await election.leader() is None
        await election.resign()  # idempotent
        assert not election.lost.is_set()  # a resign is not a loss
        await session.close()


async def test_context_manager_resigns(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as etcd:
        async with etcd.election(name, ttl=5) as election:
            await election.campaign("x")
            assert (await election.leader()).value == b"x"  # type: ignore[union-attr]
        assert not election.is_leader
        assert await election.leader() is None


async def test_second_candidate_waits_then_leads(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as etcd:
        s1, s2 = await etcd.session(ttl=5), await etcd.session(ttl=5)
        first = etcd.election(name, session=s1)
        second = etcd.election(name, session=s2)
        await first.campaign("a", timeout=5)
        waiting = _Campaign(second, "b")
        await _wait_for_candidates(etcd, name, 2)
        # b is queued behind a: its key exists, it is not elected and a still leads.
        assert not waiting.done.is_set() and not second.is_leader
        assert (await first.leader()).value == b"a"  # type: ignore[union-attr]
        await first.resign()
        await waiting.result()
        assert second.is_leader
        leader = await second.leader()
        assert leader is not None and leader.key == _key(name, s2) and leader.value == b"b"
        await second.resign()
        await s1.close()
        await s2.close()


async def test_campaign_timeout_withdraws_the_candidacy(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as etcd:
        s1, s2 = await etcd.session(ttl=5), await etcd.session(ttl=5)
        leader = etcd.election(name, session=s1)
        await leader.campaign("a")
        loser = etcd.election(name, session=s2)
        with pytest.raises(errors.ElectionTimeout):
            await loser.campaign("b", timeout=0)  # one attempt, no wait
        started = time.monotonic()
        with pytest.raises(errors.ElectionTimeout) as caught:
            await loser.campaign("b", timeout=0.5)
        elapsed = time.monotonic() - started
        assert isinstance(caught.value, TimeoutError)
        assert 0.5 <= elapsed < 3.0
        assert not loser.is_leader
        await wait_count(etcd, name + "/", 1)  # withdrawn in the background
        remaining = await etcd.get(name + "/", prefix=True)
        assert [kv.key for kv in remaining.kvs] == [_key(name, s1)]  # b's key is gone
        # The same object may campaign again once the way is free.
        await leader.resign()
        await loser.campaign("b", timeout=5)
        assert loser.is_leader
        await loser.resign()
        await s1.close()
        await s2.close()


async def test_cancelled_campaign_withdraws(etcd_endpoint: str, prefix: str) -> None:
    if FLAVOUR == "sync":
        pytest.skip("a thread cannot be cancelled; the sync flavour uses timeouts")
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as etcd:
        s1, s2 = await etcd.session(ttl=5), await etcd.session(ttl=5)
        leader = etcd.election(name, session=s1)
        await leader.campaign("a")
        waiting = _Campaign(etcd.election(name, session=s2), "b")
        await _wait_for_candidates(etcd, name, 2)
        waiting.task.cancel()
        assert await wait_event(waiting.done, 5)
        assert await waiting.task.join(5)
        remaining = await etcd.get(name + "/", prefix=True)
        assert [kv.key for kv in remaining.kvs] == [_key(name, s1)]
        await s1.close()
        await s2.close()


async def test_proclaim_only_while_leader(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as etcd:
        election = etcd.election(name, ttl=5)
        with pytest.raises(errors.NotElectedError):
            await election.proclaim("x")
        await election.campaign("v1")
        token = election.leader_revision
        await election.proclaim("v2")
        leader = await election.leader()
        assert leader is not None and leader.value == b"v2"
        assert leader.create_revision == token  # same term, same fencing token
        await election.campaign("v3")  # campaigning again while leading only proclaims
        assert (await election.leader()).value == b"v3"  # type: ignore[union-attr]
        assert election.leader_revision == token
        await election.resign()
        with pytest.raises(errors.NotElectedError):
            await election.proclaim("v4")


async def test_existing_key_of_the_session_is_reused_and_updated(
    etcd_endpoint: str, prefix: str
) -> None:
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as etcd:
        session = await etcd.session(ttl=5)
        key = _key(name, session)
        put = await etcd.put(key, "old", lease=session.lease_id)
        election = etcd.election(name, session=session)
        await election.campaign("new", timeout=5)
        kv = (await etcd.get(key)).kv
        assert kv is not None and kv.value == b"new"
        assert kv.create_revision == put.revision == election.leader_revision
        await election.resign()
        await session.close()


async def test_fencing_compare_guards_writes(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as etcd:
        s1, s2 = await etcd.session(ttl=5), await etcd.session(ttl=5)
        first = etcd.election(name, session=s1)
        await first.campaign("a")
        guard = first.is_leader_compare()
        ok = await etcd.txn([guard], [Op.put(prefix + "data", "from-a")])
        assert ok.succeeded
        await first.resign()
        with pytest.raises(errors.NotElectedError):
            first.is_leader_compare()
        second = etcd.election(name, session=s2)
        await second.campaign("b", timeout=5)
        # A stale leader's guarded write fails even if it kept its old compare.
        stale = await etcd.txn([guard], [Op.put(prefix + "data", "stale")])
        assert not stale.succeeded
        assert (await etcd.get(prefix + "data")).value == b"from-a"
        inner = await second.guarded_txn([Op.put(prefix + "data", "from-b")])
        assert inner.succeeded and (await etcd.get(prefix + "data")).value == b"from-b"
        await etcd.delete(second.leader_key)  # type: ignore[arg-type]  # an operator steps in
        with pytest.raises(errors.NotElectedError):  # seen by the watch or by the txn
            await second.guarded_txn([Op.put(prefix + "data", "late")])
        assert (await etcd.get(prefix + "data")).value == b"from-b"
        assert await second.wait_lost(5) and second.lost_error is not None
        await second.resign()
        await s1.close()
        await s2.close()


async def test_lost_event_when_the_session_ends(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as etcd:
        session = await etcd.session(ttl=5)
        election = etcd.election(name, session=session)
        seen: list[errors.LeadershipLostError] = []
        election.add_lost_callback(seen.append)
        await election.campaign("a")
        await etcd.revoke(session.lease_id)  # as if the lease expired
        assert await wait_event(election.lost, 5)
        assert not election.is_leader
        assert election.lost_error is not None and election.lost_error.reason == "session ended"
        assert seen == [election.lost_error]
        with pytest.raises(errors.NotElectedError):
            await election.proclaim("b")
        assert await election.leader() is None  # the revoke deleted the key


async def test_lost_event_when_the_key_is_deleted(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as operator:
        session = await etcd.session(ttl=5)
        election = etcd.election(name, session=session)
        seen: list[errors.LeadershipLostError] = []
        election.add_lost_callback(seen.append)
        await election.campaign("a")
        await operator.delete(name + "/", prefix=True)
        assert await wait_event(election.lost, 5)
        assert not election.is_leader and not session.is_done
        assert [e.reason for e in seen] == ["key deleted"]
        # The session lives on: the same object can campaign again.
        await election.campaign("a2", timeout=5)
        assert election.is_leader and not election.lost.is_set()
        await election.resign()
        assert len(seen) == 1
        await session.close()


async def test_candidates_sharing_a_client_exclude_each_other(
    etcd_endpoint: str, prefix: str
) -> None:
    """Two candidates of one process on the shared session must not both lead."""
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as etcd:
        first = etcd.election(name, ttl=5)
        second = etcd.election(name, ttl=5)
        await first.campaign("a")
        waiting = _Campaign(second, "b")
        await _wait_for_candidates(etcd, name, 2)  # b runs on a session of its own
        assert not second.is_leader and first.is_leader
        await first.resign()
        await waiting.result()
        assert second.is_leader and second.session is not first.session
        assert second.leader_key == _key(name, second.session)
        await second.resign()
        # With one explicit session the second candidate is refused, not doubled.
        session = await etcd.session(ttl=5)
        third = etcd.election(name, session=session)
        fourth = etcd.election(name, session=session)
        await third.campaign("c")
        with pytest.raises(errors.ElectionError):
            await fourth.campaign("d", timeout=1)
        await third.resign()
        await fourth.campaign("d", timeout=5)
        assert fourth.is_leader
        await fourth.resign()
        await session.close()


async def test_observe_reports_each_change_once_in_order(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as etcd:
        sessions = [await etcd.session(ttl=5) for _ in range(3)]
        a, b, c = (etcd.election(name, session=s) for s in sessions)
        async with a.observe() as observer:
            with pytest.raises(errors.Timeout):
                await observer.get(timeout=0.2)  # nobody leads yet
            await a.campaign("a1")
            waits = [_Campaign(b, "b1")]
            await _wait_for_candidates(etcd, name, 2)
            waits.append(_Campaign(c, "c1"))
            await _wait_for_candidates(etcd, name, 3)
            await a.proclaim("a2")
            await a.resign()
            await waits[0].result()
            await etcd.revoke(sessions[1].lease_id)  # b dies instead of resigning
            await waits[1].result()
            seen = [await observer.get(timeout=5) for _ in range(4)]
            assert [(kv.key, kv.value) for kv in seen] == [
                (_key(name, sessions[0]), b"a1"),
                (_key(name, sessions[0]), b"a2"),
                (_key(name, sessions[1]), b"b1"),
                (_key(name, sessions[2]), b"c1"),
            ]
            with pytest.raises(errors.Timeout):
                await observer.get(timeout=0.3)  # nothing more, nothing twice
        # A new observer starts with the current leader.
        late = c.observe()
        current = await late.get(timeout=5)
        assert (current.key, current.value) == (_key(name, sessions[2]), b"c1")
        await late.cancel()
        assert [kv async for kv in late] == []
        await c.resign()
        for s in sessions:
            await s.close()


async def test_observe_resyncs_after_compaction(etcd_server_factory: Any) -> None:
    server = etcd_server_factory(extra_args=pings.MEMBER_ARGS)
    name = "compacted-election"
    with FaultProxy(server.endpoint) as proxy:
        async with (
            AsyncClient(proxy.endpoint, settings=pings.SETTINGS) as watching,
            AsyncClient(server.endpoint) as etcd,
        ):
            s1, s2 = await etcd.session(ttl=5), await etcd.session(ttl=5)
            a, b = etcd.election(name, session=s1), etcd.election(name, session=s2)
            await a.campaign("a")
            observer = watching.election(name).observe()
            first = await observer.get(timeout=5)
            assert first.value == b"a"
            proxy.blackhole()  # a partition: nothing gets through, old or new
            proxy.reset()  # the observer is partitioned away while leadership moves on
            await a.proclaim("a-lost-in-the-gap")
            await a.resign()
            await b.campaign("b", timeout=5)
            latest = await etcd.put("filler", "x")
            await etcd.compact(latest.revision)
            proxy.heal()
            nxt = await observer.get(timeout=15)
            assert (nxt.key, nxt.value) == (_key(name, s2), b"b")  # converged on the leader
            assert observer.resyncs == 1
            await observer.cancel()
            await b.resign()
            await s1.close()
            await s2.close()


async def test_bad_arguments(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        with pytest.raises(errors.InvalidRequest):
            etcd.election("")
        with pytest.raises(errors.InvalidRequest):
            etcd.election("x", ttl=0)
        session = await etcd.session(ttl=5)
        with pytest.raises(errors.InvalidRequest):
            etcd.election("x", ttl=5, session=session)
        with pytest.raises(errors.InvalidRequest):
            await etcd.election("x", session=session).campaign("v", timeout=-1)
        await session.close()
        with pytest.raises(errors.EtcdError):  # a closed session cannot campaign
            await etcd.election("x", session=session).campaign("v")


# --- interoperability with etcdctl (Go's concurrency package) ----------------------------


def _etcdctl(server: Any, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*server.etcdctl_args(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # unread: a full pipe must not block etcdctl
        text=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )


class _Lines:
    """Collects a process's stdout lines in a thread, so tests can wait for some."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def first(self, count: int, timeout: float) -> list[str]:
        """The first ``count`` lines; blocks (briefly: the process prints at start)."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.lines) >= count, timeout), self.lines
            return self.lines[:count]

    def stop(self) -> list[str]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self._thread.join(5)  # EOF once the process is gone
        return self.lines


async def _wait_leader_value(election: Any, value: bytes, timeout: float = 10) -> Any:
    async with election.observe() as observer:
        deadline = time.monotonic() + timeout
        while True:
            kv = await observer.get(timeout=max(0.0, deadline - time.monotonic()))
            if kv.value == value:
                return kv


async def test_interop_with_etcdctl_elect(etcd_server: Any, prefix: str) -> None:
    """etcdctl candidates and ours share one election, in both directions.

    Waits on etcdctl's output block this task briefly; they are placed where no
    session of ours needs renewing.
    """
    name = prefix + "ctl"
    ctl1 = _Lines(_etcdctl(etcd_server, "elect", name, "ctl-1"))
    listener: _Lines | None = None
    ctl2: _Lines | None = None
    try:
        async with AsyncClient(etcd_server.endpoint) as etcd:
            ctl1_kv = await _wait_leader_value(etcd.election(name), b"ctl-1")
            assert ctl1_kv.key.startswith(name.encode() + b"/")  # same layout: name/<lease>
            assert ctl1.first(2, timeout=10) == [ctl1_kv.key.decode(), "ctl-1"]  # it knows
            # etcdctl's observer, started now, reports etcdctl's leader first.
            listener = _Lines(_etcdctl(etcd_server, "elect", "-l", name))
            assert listener.first(2, timeout=10) == [ctl1_kv.key.decode(), "ctl-1"]
            ours = etcd.election(name, session=await etcd.session(ttl=2))
            waiting = _Campaign(ours, "py")
            await _wait_for_candidates(etcd, name, 2)
            assert not waiting.done.is_set()  # etcdctl was first: we queue behind it
            ctl1.stop()  # etcdctl resigns on SIGTERM: we take over
            await waiting.result()
            assert ours.is_leader
            ctl2 = _Lines(_etcdctl(etcd_server, "elect", name, "ctl-2"))
            await _wait_for_candidates(etcd, name, 2)
            assert ctl2.proc.poll() is None and ours.is_leader  # etcdctl waits behind us
            assert ctl2.lines == []
            # Our process "dies": renewals stop, the lease expires, etcdctl is elected.
            assert ours.session is not None
            ours.session.orphan()
            killed = time.monotonic()
            ctl2_kv = await _wait_leader_value(etcd.election(name), b"ctl-2", timeout=10)
            handover = time.monotonic() - killed
            assert handover < 2 + 1.5, f"handover took {handover:.2f} s"
            assert ours.lost.is_set()
        assert ctl2.first(2, timeout=10) == [ctl2_kv.key.decode(), "ctl-2"]  # elected, it says
        # etcdctl's observer saw the same three leaders, in order, each once.
        heard = listener.first(6, timeout=10)
        assert heard[1::2] == ["ctl-1", "py", "ctl-2"], heard
        assert heard[2].startswith(name + "/")
        ctl2.stop()
        assert listener.stop() == heard
    finally:
        for lines in (ctl1, ctl2, listener):
            if lines is not None and lines.proc.poll() is None:
                lines.proc.kill()
                lines.proc.wait()
