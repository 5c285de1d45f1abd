"""Deadlines on a slow network, and a withdrawal across a cut (issue 18 items 7 and 5).

With 100-400 ms round trips (a :class:`FaultProxy` holding each chunk 50-200 ms
each way), ``acquire(timeout=T)`` and ``campaign(timeout=T)`` end within T plus
one round trip: after the deadline no request is started, and the error is raised
before the cleanup, which removes the queued key in the background.  A candidate
whose withdrawal cannot reach etcd keeps retrying it until it can, while its
session lives: the key never becomes a leader nobody campaigns for.

The clients under test reach the shared server through the proxy; the holder and
the checks go straight to it.  Canonical asyncio tests; ``tests/_sync/`` is generated.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from etcdsync import AsyncClient, errors
from etcdsync._backends._async import spawn
from etcdsync.testing.proxy import FaultProxy
from etcdsync.watch_types import EventType

from .lock_helpers import wait_count

TTL = 30  # no lease expires within a test (the cut one lasts a few seconds)
ONE_WAY, JITTER = 0.05, 0.15  # 50-200 ms each way: round trips of 100-400 ms
MAX_ROUND_TRIP = 2 * (ONE_WAY + JITTER)
# Scheduling noise on a loaded machine (2 cores shared by several test runs): the
# bound is the deadline plus one round trip plus this much.  A request started
# after the deadline costs at least a whole round trip more (100-400 ms), and the
# cleanup delete run before raising another: the bound does not hide either.
SLACK = 0.3


async def _slow_client(proxy: FaultProxy) -> AsyncClient:
    """A client through ``proxy``: connected and with its shared session granted
    while the network is still fast (only the operation under test is timed)."""
    client = AsyncClient(proxy.endpoint, timeout=5)
    await client.shared_session(TTL)
    await client.get("warm-up")
    return client


@pytest.mark.parametrize("timeout", [0, 0.5, 1.0])
async def test_contended_acquire_ends_within_a_round_trip_of_its_deadline(
    etcd_endpoint: str, prefix: str, timeout: float
) -> None:
    with FaultProxy(etcd_endpoint) as proxy:
        async with AsyncClient(etcd_endpoint) as etcd:
            slow = await _slow_client(proxy)
            try:
                proxy.delay(ONE_WAY, jitter=JITTER, seed=18)
                overshoots = []
                for run in range(3):
                    # A name per run: the previous run's claim on its key (released
                    # once its background delete is answered) is not what is timed.
                    name = f"{prefix}lock{run}"
                    async with etcd.lock(name, ttl=TTL):
                        start = time.monotonic()
                        with pytest.raises(errors.LockTimeout):
                            await slow.lock(name, ttl=TTL).acquire(timeout=timeout)
                        overshoot = time.monotonic() - start - timeout
                        overshoots.append(overshoot)
                        assert overshoot < MAX_ROUND_TRIP + SLACK, f"overshoot {overshoot:.2f}s"
                        # The queued key goes in the background, after the error.
                        await wait_count(etcd, f"{name}/", 1, timeout=10)
                print(f"acquire(timeout={timeout}) overshoots: {[round(o, 3) for o in overshoots]}")
            finally:
                await slow.close()


async def test_cold_client_acquire_ends_within_a_round_trip_of_its_deadline(
    etcd_endpoint: str, prefix: str
) -> None:
    """A first acquire on a new client creates the connection and the shared session
    on the slow network too: once that took the time, no enqueue is sent."""
    name = f"{prefix}cold"
    timeout = 0.5
    with FaultProxy(etcd_endpoint) as proxy:
        async with AsyncClient(etcd_endpoint) as etcd, etcd.lock(name, ttl=TTL):
            proxy.delay(ONE_WAY, jitter=JITTER, seed=11)
            async with AsyncClient(proxy.endpoint, timeout=5) as cold:
                start = time.monotonic()
                with pytest.raises(errors.LockTimeout):
                    await cold.lock(name, ttl=TTL).acquire(timeout=timeout)
                overshoot = time.monotonic() - start - timeout
                assert overshoot < MAX_ROUND_TRIP + SLACK, f"overshoot {overshoot:.2f}s"
                print(f"cold acquire(timeout={timeout}) overshoot: {overshoot:.3f}")
            await wait_count(etcd, f"{name}/", 1, timeout=10)  # nothing left queued


async def test_contended_semaphore_ends_within_a_round_trip_of_its_deadline(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}sem"
    with FaultProxy(etcd_endpoint) as proxy:
        async with AsyncClient(etcd_endpoint) as etcd:
            held = [await etcd.semaphore(name, 2, ttl=TTL).acquire(timeout=5) for _ in range(2)]
            slow = await _slow_client(proxy)
            try:
                proxy.delay(ONE_WAY, jitter=JITTER, seed=5)
                for timeout in (0, 0.5):
                    start = time.monotonic()
                    with pytest.raises(errors.LockTimeout):
                        await slow.semaphore(name, 2, ttl=TTL).acquire(timeout=timeout)
                    overshoot = time.monotonic() - start - timeout
                    assert overshoot < MAX_ROUND_TRIP + SLACK, f"overshoot {overshoot:.2f}s"
                    await wait_count(etcd, f"{name}/", 2, timeout=10)
            finally:
                await slow.close()
            for semaphore in held:
                await semaphore.release()


@pytest.mark.parametrize("timeout", [0, 0.5])
async def test_free_lock_is_taken_within_a_round_trip_of_its_deadline(
    etcd_endpoint: str, prefix: str, timeout: float
) -> None:
    name = f"{prefix}free"
    with FaultProxy(etcd_endpoint) as proxy:
        slow = await _slow_client(proxy)
        try:
            proxy.delay(ONE_WAY, jitter=JITTER, seed=7)
            for _ in range(3):
                lock = slow.lock(name, ttl=TTL)
                start = time.monotonic()
                await lock.acquire(timeout=timeout)  # one txn: enqueued and first
                assert time.monotonic() - start - timeout < MAX_ROUND_TRIP + SLACK
                assert lock.held
                await lock.release()
        finally:
            await slow.close()


async def test_timed_out_campaign_ends_within_a_round_trip_of_its_deadline(
    etcd_endpoint: str, prefix: str
) -> None:
    with FaultProxy(etcd_endpoint) as proxy:
        async with AsyncClient(etcd_endpoint) as etcd:
            slow = await _slow_client(proxy)
            try:
                proxy.delay(ONE_WAY, jitter=JITTER, seed=3)
                for timeout in (0, 0.5):
                    name = f"{prefix}vote{timeout}"  # a name per run, as above
                    leader = etcd.election(name, ttl=TTL)
                    await leader.campaign("leader", timeout=5)
                    start = time.monotonic()
                    with pytest.raises(errors.ElectionTimeout):
                        await slow.election(name, ttl=TTL).campaign("late", timeout=timeout)
                    overshoot = time.monotonic() - start - timeout
                    assert overshoot < MAX_ROUND_TRIP + SLACK, f"overshoot {overshoot:.2f}s"
                    await wait_count(etcd, f"{name}/", 1, timeout=10)
                    await leader.resign()
            finally:
                await slow.close()


async def test_withdrawal_across_a_cut_is_retried_while_the_session_lives(
    etcd_endpoint: str, prefix: str
) -> None:
    """Issue 18 item 5: a campaign times out while etcd cannot be reached; its
    withdrawal is retried until it succeeds - the key does not stay for the
    session's life to lead later for nobody."""
    name = f"{prefix}cut"
    with FaultProxy(etcd_endpoint) as proxy:
        async with AsyncClient(etcd_endpoint) as etcd:
            leader = etcd.election(name, ttl=TTL)
            await leader.campaign("leader", timeout=5)
            cut = AsyncClient(proxy.endpoint, timeout=5)
            try:
                session = await cut.shared_session(TTL)
                key = f"{name}/{session.lease_id:x}"
                candidate = cut.election(name, ttl=TTL)
                with pytest.raises(errors.ElectionTimeout):
                    # Queued behind the leader, then cut off before its deadline: the
                    # withdrawal cannot reach etcd.
                    await _campaign_then_cut(candidate, proxy, etcd, name)
                found = await etcd.get(key)
                assert found.kv is not None  # still there, for now
                watcher = await etcd.watch(key, start_revision=found.revision + 1)
                try:
                    # While the cut lasts (longer than a delete attempt: 1 s) the key stays.
                    with pytest.raises(TimeoutError):
                        await watcher.get(1.5)
                    proxy.heal()
                    batch = await watcher.get(10)  # the retried delete goes through
                    assert [event.type for event in batch.events] == [EventType.DELETE]
                finally:
                    await watcher.cancel()
                # Deleted by the withdrawal, not by the lease: the session lives on.
                assert not session.is_done
                assert (await etcd.time_to_live(session.lease_id)).ttl > 0
                await leader.resign()
                assert await etcd.election(name).leader() is None  # nobody leads for nobody
            finally:
                await cut.close()


async def _campaign_then_cut(
    candidate: Any, proxy: FaultProxy, etcd: AsyncClient, name: str
) -> None:
    """Campaign (2 s) behind the leader; cut the network once the candidate's key exists."""

    async def cut_when_queued() -> None:
        await wait_count(etcd, f"{name}/", 2, timeout=10)
        proxy.blackhole()

    spawn(cut_when_queued, name="test-cut")
    await candidate.campaign("cut-off", timeout=2)


async def test_free_campaign_is_won_within_a_round_trip_of_its_deadline(
    etcd_endpoint: str, prefix: str
) -> None:
    """A term won by a request answered past the deadline starts its key watch in
    the background: it still notices the key's deletion."""
    with FaultProxy(etcd_endpoint) as proxy:
        async with AsyncClient(etcd_endpoint) as etcd:
            slow = await _slow_client(proxy)
            try:
                proxy.delay(ONE_WAY, jitter=JITTER, seed=9)
                for run, timeout in enumerate((0, 0, 0.5)):
                    election = slow.election(f"{prefix}free{run}", ttl=TTL)
                    start = time.monotonic()
                    await election.campaign("me", timeout=timeout)  # one txn: the oldest
                    overshoot = time.monotonic() - start - timeout
                    assert overshoot < MAX_ROUND_TRIP + SLACK, f"overshoot {overshoot:.2f}s"
                    assert election.is_leader
                    found = await etcd.get(f"{prefix}free{run}/", prefix=True)
                    assert [kv.key for kv in found.kvs] == [election.leader_key]
                    await etcd.delete(found.kvs[0].key)  # taken away behind its back
                    assert await election.wait_lost(10), "the loss went unnoticed"
                    assert not election.is_leader
            finally:
                await slow.close()
