"""Liveness of the recipes: every wait ends within its deadline, its client's close or
its session's end, on a live, silent (blackholed) or closing client; a lease proved gone
is replaced at once; keys without a lease under a recipe's prefix never hold it forever.

Bounds are the caller's timeout plus a small margin (cleanup runs in the remaining time
or in the background; a dead session's key is left to its lease, with no request).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from etcdsync import AsyncClient, Op, errors
from etcdsync._backends._async import Event, spawn, wait_event
from etcdsync.testing.proxy import FaultProxy

from .lock_helpers import count_keys, wait_count


class _Call:
    """A blocking recipe call run in a task (thread, in the sync flavour) of its own."""

    def __init__(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self.done = Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.ended_at = 0.0
        spawn(self._run, fn, *args, name="test-call")

    async def _run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            self.result = await fn(*args)
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.done.set()

    async def wait(self, timeout: float) -> bool:
        return await wait_event(self.done, timeout)


async def _timed(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> float:
    """Run ``fn``, which must raise; return how long it took."""
    started = time.monotonic()
    with pytest.raises(errors.EtcdError):
        await fn(*args, **kwargs)
    return time.monotonic() - started


# --- in-process waiters end with the client and with the session ---------------------


async def test_close_ends_a_waiter_queued_behind_an_in_process_hold(
    etcd_endpoint: str, prefix: str
) -> None:
    etcd = AsyncClient(etcd_endpoint)
    try:
        holder = await etcd.lock(prefix + "x").acquire()
        session = holder.session
        assert session is not None
        waiter = _Call(etcd.lock(prefix + "x").acquire, 30)
        assert not await waiter.wait(0.3)  # queued on the in-process claim
        assert session.claims.waiting(holder.key.encode()) == 1
        started = time.monotonic()
        await etcd.close()
        assert await waiter.wait(1.0), "the waiter outlived close()"
        assert waiter.ended_at - started < 1.0
        assert isinstance(waiter.error, errors.ClientClosedError)
    finally:
        await etcd.close()


async def test_session_end_stops_a_waiter_queued_behind_an_in_process_hold(
    etcd_endpoint: str, prefix: str
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        holder = await etcd.lock(prefix + "x", ttl=30).acquire()
        session = holder.session
        assert session is not None
        waiter = _Call(etcd.lock(prefix + "x", ttl=30).acquire, 30)
        assert not await waiter.wait(0.3)
        assert session.claims.waiting(holder.key.encode()) == 1
        started = time.monotonic()
        await etcd.revoke(session.lease_id)
        assert await waiter.wait(1.0), "the waiter outlived its session"
        assert waiter.ended_at - started < 1.0
        assert isinstance(waiter.error, errors.SessionExpiredError)
        assert holder.lost.is_set() and not holder.held
        # The next acquire gets a fresh shared session at once.
        again = await etcd.lock(prefix + "x", ttl=30).acquire(timeout=5)
        assert again.session is not None and again.session is not session
        await again.release()
        await holder.release()  # no request: the old session is gone


# --- a silent endpoint: every call ends within its own deadline ------------------------


async def test_blackholed_endpoint_calls_end_within_their_timeouts(
    etcd_endpoint: str, prefix: str
) -> None:
    with FaultProxy(etcd_endpoint) as proxy:
        async with AsyncClient(proxy.endpoint) as etcd:  # default request timeout: 10 s
            warm = await etcd.lock(prefix + "warm", ttl=30).acquire(timeout=5)
            await warm.release()
            proxy.blackhole()
            # The shared session exists: the enqueue txn hangs, then the cleanup.
            took = await _timed(etcd.lock(prefix + "m", ttl=30).acquire, timeout=2)
            assert took < 2.5, f"acquire(timeout=2) took {took:.2f} s"
            took = await _timed(etcd.semaphore(prefix + "s", 2, ttl=30).acquire, timeout=2)
            assert took < 2.5, f"semaphore acquire(timeout=2) took {took:.2f} s"
            took = await _timed(etcd.election(prefix + "e", ttl=30).campaign, "v", timeout=2)
            assert took < 2.5, f"campaign(timeout=2) took {took:.2f} s"
            took = await _timed(etcd.lock(prefix + "t", ttl=30).try_acquire, timeout=2)
            assert took < 2.5, f"try_acquire(timeout=2) took {took:.2f} s"
            # No shared session for this TTL yet: its creation is bounded too.
            took = await _timed(etcd.lock(prefix + "n", ttl=31).acquire, timeout=1)
            assert took < 1.5, f"acquire(timeout=1) with a session to create took {took:.2f} s"
            proxy.heal()
            # Whatever reached etcd late is cleaned up in the background.
            for name in ("m", "s", "e", "t", "n"):
                await wait_count(etcd, prefix + name + "/", 0, timeout=20)


async def test_blackholed_endpoint_reads_end_within_their_timeouts(
    etcd_endpoint: str, prefix: str
) -> None:
    with FaultProxy(etcd_endpoint) as proxy:
        async with AsyncClient(proxy.endpoint) as etcd:  # default request timeout: 10 s
            config = etcd.config(prefix + "cfg/")
            await config.start(timeout=5)
            proxy.blackhole()
            started = time.monotonic()
            with pytest.raises(errors.Timeout):
                await config.wait_for_change(timeout=2)
            assert time.monotonic() - started < 2.5
            took = await _timed(etcd.config(prefix + "other/").start, timeout=2)
            assert took < 2.5, f"config start(timeout=2) took {took:.2f} s"
            observer = etcd.election(prefix + "e").observe()
            took = await _timed(observer.get, timeout=2)
            assert took < 2.5, f"observer get(timeout=2) took {took:.2f} s"
            took = await _timed(observer.next_change, timeout=2)
            assert took < 2.5, f"observer next_change(timeout=2) took {took:.2f} s"
            proxy.heal()
            await observer.cancel()
            await config.stop()


async def test_release_with_a_dead_session_makes_no_request(
    etcd_endpoint: str, prefix: str
) -> None:
    with FaultProxy(etcd_endpoint) as proxy:
        async with AsyncClient(proxy.endpoint) as etcd:
            lock = await etcd.lock(prefix + "x", ttl=2).acquire(timeout=5)
            election = etcd.election(prefix + "e", ttl=2)
            await election.campaign("v", timeout=5)
            proxy.blackhole()
            assert await lock.wait_lost(4), "the keepalive never declared the session lost"
            assert await election.wait_lost(2)
            started = time.monotonic()
            await lock.release()
            await election.resign()
            assert time.monotonic() - started < 1.0
            proxy.heal()


async def test_a_queued_waiter_learns_its_session_ended_within_the_ttl(
    etcd_endpoint: str, prefix: str
) -> None:
    async with AsyncClient(etcd_endpoint) as direct:
        holder = await direct.lock(prefix + "x").acquire()
        with FaultProxy(etcd_endpoint) as proxy:
            async with AsyncClient(proxy.endpoint) as etcd:
                waiter = _Call(etcd.lock(prefix + "x", ttl=3).acquire)
                await wait_count(direct, prefix + "x/", 2)
                proxy.blackhole()
                started = time.monotonic()
                assert await waiter.wait(3 + 1.5), "the waiter outlived its session"
                assert waiter.ended_at - started < 3 + 1.0
                assert isinstance(waiter.error, errors.SessionExpiredError)
                proxy.heal()
        await holder.release()


# --- a lease proved gone: the next call gets a fresh shared session ---------------------


async def test_a_revoked_shared_session_is_replaced_at_once(
    etcd_endpoint: str, prefix: str
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        session = await etcd.shared_session(30)
        lock = await etcd.lock(prefix + "warm", ttl=30).acquire()
        await lock.release()
        await other.revoke(session.lease_id)  # elsewhere: our keepalive learns it late
        assert not session.is_done
        started = time.monotonic()
        election = etcd.election(prefix + "e", ttl=30)
        await election.campaign("v", timeout=5)  # never a raw LeaseNotFoundError
        again = await etcd.lock(prefix + "m", ttl=30).acquire(timeout=5)
        assert time.monotonic() - started < 1.0
        # Who proved the lease gone first - the recipe's refused write or the keepalive's
        # renewal answered "not found" - decides the exact error; both are the documented
        # LeaseExpiredError, and a waiter always gets a SessionExpiredError.
        assert session.is_done and isinstance(session.error, errors.LeaseExpiredError)
        assert isinstance(session.waiter_error(), errors.SessionExpiredError)
        assert election.session is not session and again.session is not session
        await again.release()
        await election.resign()


async def test_the_election_worker_loop_survives_a_revoked_session(
    etcd_endpoint: str, prefix: str
) -> None:
    """The worker loop of recipes_docs/election.md, bounded to two terms."""
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        election = etcd.election(prefix + "scheduler", ttl=30)
        terms: list[int] = []
        first_term = Event()

        async def serve() -> None:
            while len(terms) < 2:
                try:
                    await election.campaign("me", timeout=10)
                except errors.SessionExpiredError:
                    continue  # the shared session is replaced
                assert election.leader_revision is not None
                terms.append(election.leader_revision)
                first_term.set()
                try:
                    while not election.lost.is_set() and len(terms) < 2:
                        await election.guarded_txn([Op.put(prefix + "plan", str(len(terms)))])
                        await election.wait_lost(5)
                except errors.NotElectedError:
                    pass  # lost mid-write: nothing written
                finally:
                    await election.resign()

        loop = _Call(serve)
        assert await wait_event(first_term, 10)
        session = election.session
        assert session is not None
        await other.revoke(session.lease_id)
        assert await loop.wait(5), "the worker loop did not reach a second term"
        assert loop.error is None, repr(loop.error)
        assert len(terms) == 2 and terms[1] > terms[0]


# --- keys without a lease under a recipe's prefix -----------------------------------------


async def test_a_key_without_lease_under_the_prefix_raises_foreign_key_error(
    etcd_endpoint: str, prefix: str
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        for name in ("m", "s", "rw", "e"):
            await etcd.put(f"{prefix}{name}/data", "not a contender")
        calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("m", lambda: etcd.lock(prefix + "m").acquire(timeout=5)),
            ("s", lambda: etcd.semaphore(prefix + "s", 1).acquire(timeout=5)),
            ("rw", lambda: etcd.rwlock(prefix + "rw").write().acquire(timeout=5)),
            ("e", lambda: etcd.election(prefix + "e").campaign("v", timeout=5)),
        ]
        for name, call in calls:
            started = time.monotonic()
            with pytest.raises(errors.ForeignKeyError) as info:
                await call()
            assert time.monotonic() - started < 1.0
            assert info.value.key == f"{prefix}{name}/data".encode()
            assert info.value.prefix == f"{prefix}{name}/".encode()
            assert await count_keys(etcd, f"{prefix}{name}/") == 1  # only the data
        # try_acquire too, and a read lock ignores what is not under write/.
        with pytest.raises(errors.ForeignKeyError):
            await etcd.lock(prefix + "m").try_acquire()
        reader = await etcd.rwlock(prefix + "rw").read().acquire(timeout=5)
        await reader.release()


async def test_a_key_without_lease_written_while_held_stops_the_next_waiter(
    etcd_endpoint: str, prefix: str
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        holder = await etcd.lock(prefix + "jobs").acquire()
        await etcd.put(prefix + "jobs/last-run", "today")  # the trap: data under the prefix
        waiter = _Call(other.lock(prefix + "jobs").acquire, 30)
        assert await waiter.wait(2), "the waiter queued behind a key that never goes"
        assert isinstance(waiter.error, errors.ForeignKeyError)
        assert waiter.error.key == (prefix + "jobs/last-run").encode()
        await holder.release()
        assert await count_keys(etcd, prefix + "jobs/") == 1


# --- cancel, resign, limits, vacancy, infinite timeouts ------------------------------------


async def test_resign_from_another_thread_ends_a_pending_campaign(
    etcd_endpoint: str, prefix: str
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        leader = other.election(prefix + "e")
        await leader.campaign("a")
        candidate = etcd.election(prefix + "e")
        pending = _Call(candidate.campaign, "b")
        await wait_count(etcd, prefix + "e/", 2)
        started = time.monotonic()
        await candidate.resign()
        assert await pending.wait(1.0), "resign() did not end the pending campaign"
        assert pending.ended_at - started < 1.0
        assert isinstance(pending.error, errors.ElectionError)
        assert not candidate.is_leader
        await wait_count(etcd, prefix + "e/", 1)  # its key withdrawn
        # The object campaigns again normally.
        await leader.resign()
        await candidate.campaign("b", timeout=5)
        assert candidate.is_leader
        await candidate.resign()


async def test_semaphores_with_different_limits_raise(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        two = await etcd.semaphore(prefix + "pool", 2).acquire()
        with pytest.raises(errors.SemaphoreLimitError) as info:
            await etcd.semaphore(prefix + "pool", 3).acquire(timeout=5)
        assert info.value.limit == 2 and info.value.expected == 3
        assert info.value.key == two.key.encode()
        with pytest.raises(errors.SemaphoreLimitError):
            await etcd.semaphore(prefix + "pool", 1).try_acquire()
        assert await count_keys(etcd, prefix + "pool/") == 1  # nothing left behind
        same = await etcd.semaphore(prefix + "pool", 2).acquire(timeout=5)
        await same.release()
        await two.release()


async def test_the_observer_reports_vacancy(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        a, b = etcd.election(prefix + "e"), etcd.election(prefix + "e")
        async with a.observe() as observer:
            assert await observer.next_change(timeout=5) is None  # nobody leads yet
            await a.campaign("a")
            first = await observer.next_change(timeout=5)
            assert first is not None and first.value == b"a"
            await a.resign()  # no successor
            assert await observer.next_change(timeout=5) is None
            await b.campaign("b")
            nxt = await observer.next_change(timeout=5)
            assert nxt is not None and nxt.value == b"b"
            assert observer.vacancies == 2
            await b.resign()
        async with a.observe() as leaders:  # get() skips vacancies
            await a.campaign("a2")
            leader = await leaders.get(timeout=5)
            assert leader.value == b"a2"
            await a.resign()


async def test_infinite_timeouts_mean_no_deadline(etcd_endpoint: str, prefix: str) -> None:
    inf = math.inf
    async with AsyncClient(etcd_endpoint) as etcd:
        lock = await etcd.lock(prefix + "m").acquire(timeout=inf)
        waiter = _Call(etcd.lock(prefix + "m").acquire, inf)
        assert not await waiter.wait(0.3)
        await lock.release()
        assert await waiter.wait(5) and waiter.error is None
        await waiter.result.release()
        assert await etcd.lock(prefix + "m", timeout=inf).try_acquire(timeout=inf)
        election = etcd.election(prefix + "e")
        await election.campaign("v", timeout=inf)
        async with election.observe() as observer:
            assert (await observer.get(timeout=inf)).value == b"v"
        await election.resign()
        config = etcd.config(prefix + "cfg/")
        await config.start(timeout=inf)
        started_at = config.revision
        await etcd.put(prefix + "cfg/k", "1")
        assert (await config.wait_for_change(started_at, timeout=inf))["k"] == 1
        await config.stop()
        semaphore = await etcd.semaphore(prefix + "s", 1).acquire(timeout=inf)
        await semaphore.release()
        assert await (await etcd.session(ttl=5)).wait_done(timeout=0) is False


@pytest.mark.parametrize("bad", [math.nan, -1.0, "1", True])
async def test_bad_timeouts_raise_invalid_request_at_once(
    etcd_endpoint: str, prefix: str, bad: Any
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        started = time.monotonic()
        with pytest.raises(errors.InvalidRequest):
            await etcd.lock(prefix + "m").acquire(timeout=bad)
        with pytest.raises(errors.InvalidRequest):
            await etcd.lock(prefix + "m").try_acquire(timeout=bad)
        with pytest.raises(errors.InvalidRequest):
            await etcd.semaphore(prefix + "s", 2).acquire(timeout=bad)
        with pytest.raises(errors.InvalidRequest):
            await etcd.election(prefix + "e").campaign("v", timeout=bad)
        with pytest.raises(errors.InvalidRequest):
            await etcd.election(prefix + "e").observe().get(timeout=bad)
        with pytest.raises(errors.InvalidRequest):
            etcd.lock(prefix + "m", timeout=bad)
        assert time.monotonic() - started < 1.0
        assert await count_keys(etcd, prefix) == 0


# --- a consistent first read that compactions keep overtaking ------------------------------


async def test_config_start_survives_compactions_between_pages(etcd_server_factory: Any) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as etcd, AsyncClient(server.endpoint) as admin:
        for i in range(200):
            await etcd.put(f"cfg/k{i:03d}", str(i))
        stop = Event()
        compactions: list[int] = []

        async def compact_every_50_ms() -> None:
            while not await wait_event(stop, 0.05):
                revision = (await admin.put("filler", "x")).revision
                await admin.compact(revision)
                compactions.append(revision)

        compactor = _Call(compact_every_50_ms)
        try:
            retried = 0
            for _ in range(20):
                config = etcd.config("cfg/", page_size=1)
                await config.start(timeout=30)
                assert len(config.snapshot) == 200
                retried += config._mirror.read_retries
                await config.stop()
        finally:
            stop.set()
            assert await compactor.wait(5)
        assert compactor.error is None, repr(compactor.error)
        assert compactions  # the compactor ran; how often depends on the machine
        assert retried > 0  # compactions did overtake reads: the retry was exercised
