"""Leases against a real etcd: grant/revoke/time-to-live/list and keepalive.

Canonical asyncio tests; ``tests/_sync/test_lease.py`` is generated from this file.
Liveness is always checked from the server's side (``time_to_live`` through a second
client, or the server's ``/metrics``), never from the manager's internals.  Tests that
restart a server or count its streams use a private server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import Any

import pytest

from etcdsync import (
    AsyncClient,
    Lease,
    LeaseKeepAliveResult,
    LeaseLostReason,
    LeaseTimeToLive,
    errors,
)
from etcdsync._backends._async import FLAVOUR, Event, sleep, wait_event

RUN = f"{__name__}/{uuid.uuid4().hex[:8]}"


def _prefix(test: str) -> str:
    return f"{RUN}/{test}/"


def _workers() -> set[Any]:
    """The background tasks (asyncio flavour) or threads (sync flavour) now running."""
    if FLAVOUR == "async":
        return set(asyncio.all_tasks())
    return set(threading.enumerate())


def _name(worker: Any) -> str:
    return str(worker.get_name() if FLAVOUR == "async" else worker.name)


def _keepalive_stream_counts(metrics: Any) -> tuple[float, float]:
    """(started, finished) LeaseKeepAlive streams according to the server's /metrics."""
    started = sum(
        s.value for s in metrics.series("grpc_server_started_total", grpc_method="LeaseKeepAlive")
    )
    handled = sum(
        s.value for s in metrics.series("grpc_server_handled_total", grpc_method="LeaseKeepAlive")
    )
    return started, handled


async def test_grant_time_to_live_leases_and_revoke(etcd_endpoint: str) -> None:
    prefix = _prefix("grant")
    async with AsyncClient(etcd_endpoint) as etcd:
        lease = await etcd.grant(30)
        assert isinstance(lease, Lease) and lease.id > 0 and lease.ttl == 30
        assert int(lease) == lease.id and lease.hex_id == format(lease.id, "x")
        # A Lease object is accepted wherever a lease id is.
        await etcd.put(prefix + "a", "1", lease=lease)
        await etcd.put(prefix + "b", "2", lease=lease.id)
        assert (await etcd.get(prefix + "a")).kvs[0].lease == lease.id

        info = await etcd.time_to_live(lease, keys=True)
        assert isinstance(info, LeaseTimeToLive)
        assert info.id == lease.id and info.granted_ttl == 30 and 0 < info.ttl <= 30
        assert sorted(info.keys) == [(prefix + "a").encode(), (prefix + "b").encode()]
        assert (await etcd.time_to_live(lease.id)).keys == []
        assert lease.id in await etcd.leases()

        renewed = await etcd.keep_alive_once(lease)
        assert renewed == LeaseKeepAliveResult(lease.id, 30)

        chosen = await etcd.grant(30, lease_id=lease.id + 1)
        assert chosen.id == lease.id + 1

        await etcd.revoke(lease)
        await etcd.revoke(chosen.id)
        assert (await etcd.get(prefix, prefix=True)).kvs == []  # keys went with the lease
        assert lease.id not in await etcd.leases()
        with pytest.raises(errors.LeaseNotFoundError) as info_err:
            await etcd.time_to_live(lease)
        assert info_err.value.lease_id == lease.id
        with pytest.raises(errors.LeaseNotFoundError) as revoke_err:
            await etcd.revoke(lease)
        assert revoke_err.value.lease_id == lease.id
        with pytest.raises(errors.LeaseNotFoundError):
            await etcd.keep_alive_once(lease)

        for bad in (0, -5, 1.5, True):
            with pytest.raises(errors.InvalidRequest):
                await etcd.grant(bad)  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidRequest):
            await etcd.revoke(0)
        with pytest.raises(errors.InvalidRequest):
            etcd.keep_alive("7")  # type: ignore[arg-type]


async def test_keep_alive_holds_a_short_lease_for_three_ttls(etcd_endpoint: str) -> None:
    key = _prefix("hold") + "k"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as observer:
        lease = await etcd.grant(2)
        await etcd.put(key, "v", lease=lease)
        started = time.monotonic()
        renewals = 0
        async with etcd.keep_alive(lease) as ka:
            while time.monotonic() - started < 3 * lease.ttl + 0.5:
                result = await ka.next_result(timeout=lease.ttl)
                assert result.id == lease.id and result.ttl == lease.ttl
                renewals += 1
                # Seen from another client, the lease never gets near its end.
                assert (await observer.time_to_live(lease)).ttl > 0
            assert not ka.lost.is_set() and ka.lost_reason is None
        assert renewals >= 3 * 3  # about three renewals per TTL
        assert (await observer.get(key)).value == b"v"
        await etcd.revoke(lease)


async def test_revoke_through_this_client_tells_every_listener(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        lease = await etcd.grant(30)
        first, second = etcd.keep_alive(lease), etcd.keep_alive(lease)
        await first.next_result(timeout=5)
        seen: list[object] = []
        first.add_callback(seen.append)
        await etcd.revoke(lease)
        for ka in (first, second):
            assert await ka.wait_lost(timeout=1.0)
            assert ka.lost_reason is LeaseLostReason.REVOKED
            reason: str | None = ka.lost_reason
            assert reason == "revoked"  # the reasons compare equal to their strings
            assert ka.error is not None and ka.error.lease_id == lease.id
            assert ka.error.reason == "revoked"
        assert len(seen) == 1 and isinstance(seen[0], errors.LeaseExpiredError)
        # Iterating a lost lease raises, every time, rather than just stopping.
        for _ in range(2):
            with pytest.raises(errors.LeaseExpiredError) as lost:
                async for _result in first:
                    pass
            assert lost.value.reason == LeaseLostReason.REVOKED
        late: list[object] = []
        second.add_callback(late.append)  # added after the loss: called at once
        assert len(late) == 1 and isinstance(late[0], errors.LeaseExpiredError)


async def test_revoke_by_another_client_is_detected_at_next_renewal(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        lease = await etcd.grant(2)
        async with etcd.keep_alive(lease) as ka:
            await ka.next_result(timeout=2)
            revoked_at = time.monotonic()
            await other.revoke(lease)
            # The next renewal is due within a third of the TTL.
            assert await ka.wait_lost(timeout=lease.ttl / 3 + 1.0)
            assert time.monotonic() - revoked_at < lease.ttl
            # Denied before it could have expired: reported as revoked.
            assert ka.lost_reason is LeaseLostReason.REVOKED
            with pytest.raises(errors.LeaseExpiredError) as lost:
                await ka.next_result(timeout=1)
            assert lost.value.lease_id == lease.id


async def test_keep_alive_of_a_missing_lease_reports_expired(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        lease = await etcd.grant(5)
        await etcd.revoke(lease)
        async with etcd.keep_alive(lease.id) as ka:
            assert await ka.wait_lost(timeout=2)
            assert ka.lost_reason is LeaseLostReason.EXPIRED


async def test_listeners_are_independent_and_the_last_close_stops_renewal(
    etcd_endpoint: str,
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as observer:
        lease = await etcd.grant(2)
        reader, idle = etcd.keep_alive(lease), etcd.keep_alive(lease)
        results = [await reader.next_result(timeout=2) for _ in range(3)]
        assert [r.id for r in results] == [lease.id] * 3
        # The idle listener kept only the latest result, and did not hold anyone up.
        assert await idle.next_result(timeout=0.01) == results[-1]
        with pytest.raises(errors.Timeout):
            await idle.next_result(timeout=0.01)

        idle.close()
        with pytest.raises(errors.ClientClosedError):
            await idle.next_result(timeout=1)
        async for _result in idle:  # a closed listener's iteration just ends
            raise AssertionError("a closed listener yielded a result")
        for _ in range(2):  # the other listener still gets renewals
            assert (await reader.next_result(timeout=2)).id == lease.id
        assert not reader.lost.is_set()

        reader.close()
        # Nobody listens: the lease is no longer renewed and expires on the server.
        deadline = time.monotonic() + lease.ttl + 3.0
        while True:
            try:
                await observer.time_to_live(lease)
            except errors.LeaseNotFoundError:
                break
            assert time.monotonic() < deadline, "the lease was still renewed"
            await sleep(0.1)
        assert not reader.lost.is_set()  # closed listeners are not told about losses


async def test_a_thousand_leases_share_one_stream(etcd_server_factory: Any) -> None:
    server = etcd_server_factory()
    assert _keepalive_stream_counts(server.metrics()) == (0, 0)
    async with AsyncClient(server.endpoint) as etcd:
        leases = [await etcd.grant(5) for _ in range(1000)]
        listeners = [etcd.keep_alive(lease) for lease in leases]
        for _round in range(2):  # the first renewal, then the next one a third of a TTL later
            for lease, ka in zip(leases, listeners, strict=True):
                assert (await ka.next_result(timeout=5)).id == lease.id
        metrics = server.metrics()
        # Measured on the server: one LeaseKeepAlive stream was opened and is still open,
        # and it carried every renewal.
        assert _keepalive_stream_counts(metrics) == (1, 0)
        received = sum(
            s.value
            for s in metrics.series("grpc_server_msg_received_total", grpc_method="LeaseKeepAlive")
        )
        assert received >= 2 * 1000
        assert not any(ka.lost.is_set() for ka in listeners)


async def test_lease_survives_two_server_restarts(etcd_server_factory: Any) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as etcd:
        lease = await etcd.grant(3)
        async with etcd.keep_alive(lease) as ka:
            await ka.next_result(timeout=3)
            for graceful in (True, False):
                server.restart(graceful=graceful)
                # A renewal confirmed after the restart, well before the TTL ran out.
                result = await ka.next_result(timeout=lease.ttl)
                assert result.id == lease.id
                assert not ka.lost.is_set()
        async with AsyncClient(server.endpoint) as observer:
            assert (await observer.time_to_live(lease)).ttl > 0
        assert etcd._keepalives().streams_opened >= 3  # it did reconnect twice


async def test_keepalive_fails_over_to_another_member(etcd_cluster: Any) -> None:
    async with AsyncClient(etcd_cluster.endpoints) as etcd:
        lease = await etcd.grant(5)
        async with etcd.keep_alive(lease) as ka:
            await ka.next_result(timeout=5)
            dead = etcd.endpoint
            index = etcd_cluster.endpoints.index(dead)
            etcd_cluster.kill(index)
            try:
                # Renewed through another member before the TTL ran out.
                assert (await ka.next_result(timeout=lease.ttl)).id == lease.id
                assert etcd.endpoint != dead and not ka.lost.is_set()
                others = [e for e in etcd_cluster.endpoints if e != dead]
                async with AsyncClient(others) as observer:
                    assert (await observer.time_to_live(lease)).ttl > 0
            finally:
                etcd_cluster.heal()
        await etcd.revoke(lease)


async def test_unanswered_renewals_report_keepalive_halted_by_the_deadline(
    etcd_server_factory: Any,
) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as etcd:
        lease = await etcd.grant(2)
        ka = etcd.keep_alive(lease)
        seen: list[object] = []
        ka.add_callback(seen.append)
        await ka.next_result(timeout=2)
        confirmed_at = time.monotonic()
        server.pause()  # the stream stays open, but nothing is answered any more
        try:
            assert await ka.wait_lost(timeout=lease.ttl + 1.0)
            # Lost no later than the last confirmed renewal + TTL (plus scheduling slack).
            assert time.monotonic() - confirmed_at <= lease.ttl + 0.5
        finally:
            server.resume()
        assert ka.lost_reason is LeaseLostReason.HALTED
        assert ka.error is not None and ka.error.reason == "keepalive halted"
        assert isinstance(seen[-1], errors.LeaseExpiredError)
        assert seen[-1].reason == LeaseLostReason.HALTED


async def test_close_tells_listeners_and_ends_every_task_and_thread(etcd_endpoint: str) -> None:
    before = _workers()
    etcd = AsyncClient(etcd_endpoint)
    leases = [await etcd.grant(10) for _ in range(3)]
    listeners = [etcd.keep_alive(lease) for lease in leases]
    await etcd.keep_alive_once(leases[0])
    for ka in listeners:
        await ka.next_result(timeout=5)
    assert "etcdsync-lease-keepalive" in {_name(w) for w in _workers()}
    await etcd.close()
    for ka in listeners:
        assert ka.lost.is_set() and ka.lost_reason is LeaseLostReason.CLIENT_CLOSED
        with pytest.raises(errors.LeaseExpiredError) as lost:
            await ka.next_result(timeout=1)
        assert lost.value.reason == "client closed"
    # The manager's own tasks/threads are gone when close() returns; gRPC's helper
    # threads of the closed channel may take a moment longer.
    assert not [w for w in _workers() - before if _name(w).startswith("etcdsync-lease")]
    deadline = time.monotonic() + 5.0
    while _workers() - before and time.monotonic() < deadline:
        await sleep(0.02)
    assert _workers() - before == set()
    with pytest.raises(errors.ClientClosedError):
        etcd.keep_alive(leases[0])


async def test_a_raising_keepalive_callback_is_logged_and_renewals_go_on(
    etcd_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="etcdsync.callbacks")
    calls: list[object] = []
    twice = Event()

    def on_result(item: LeaseKeepAliveResult | errors.LeaseExpiredError) -> None:
        calls.append(item)
        if len(calls) >= 2:
            twice.set()
        raise RuntimeError("bug in a keepalive listener")

    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as observer:
        lease = await etcd.grant(2)  # renewed about every 0.7 s
        async with etcd.keep_alive(lease) as ka:
            ka.add_callback(on_result)
            assert await wait_event(twice, 10), calls
            # The raising callback took nothing down: renewals and the listener go on.
            assert (await ka.next_result(timeout=5)).id == lease.id
            assert not ka.lost.is_set()
            assert (await observer.time_to_live(lease)).ttl > 0
        await etcd.revoke(lease)
    assert all(isinstance(c, LeaseKeepAliveResult) for c in calls)
    records = [r for r in caplog.records if r.name == "etcdsync.callbacks"]
    assert len(records) >= 2, records
    for record in records:
        assert record.exc_info is not None
        assert "bug in a keepalive listener" in str(record.exc_info[1])
