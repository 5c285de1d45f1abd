"""A recipe call refused by permissions leaves nothing behind (issue 18 item 2).

A refused acquire sends no request after the refusal (no cleanup delete, no
background retry: counted by the server's own ``/metrics``), holds no in-process
claim (the next acquire of the same name, once allowed, succeeds at once), and a
client whose user lost its role still closes.  Each test runs a private server
with authentication on.  Canonical asyncio tests; ``tests/_sync/`` is generated.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import pytest

from etcdsync import AsyncClient, errors
from etcdsync._backends._async import sleep
from etcdsync.testing.plugin import EtcdServerFactory

from .timing import within

# A long TTL: no keepalive renewal (a stream, not counted anyway) and no lease
# expiry falls inside a test.
TTL = 60
# How long the server is watched for requests after a refusal.  The background
# retry this guards against sent its first delete 0.2 s after the refusal and the
# next ones 0.4 s and 0.8 s later: any of them shows up within this window.
QUIET_WINDOW = 1.5


def _unary(server: Any) -> Counter[str]:
    """Unary requests the server has handled, per method."""
    counts: Counter[str] = Counter()
    for sample in server.metrics().series("grpc_server_handled_total", grpc_type="unary"):
        counts[sample.labels["grpc_method"]] += int(sample.value)
    return counts


async def _auth_server(factory: EtcdServerFactory) -> Any:
    """A server with auth on: root, and "alice" whose role "locker" may only read
    under ``locks/`` (so every recipe write there is refused)."""
    server = factory()
    async with AsyncClient(server.endpoint, timeout=5) as admin:
        await admin.user_add("root", "rootpw")
        await admin.user_grant_role("root", "root")
        await admin.role_add("locker")
        await admin.role_grant_permission("locker", "locks/", prefix=True, permission="read")
        await admin.user_add("alice", "alicepw")
        await admin.user_grant_role("alice", "locker")
        await admin.auth_enable()
    return server


def _alice(server: Any) -> AsyncClient:
    return AsyncClient(server.endpoint, user="alice", password="alicepw", timeout=5)


def _root(server: Any) -> AsyncClient:
    return AsyncClient(server.endpoint, user="root", password="rootpw", timeout=5)


async def test_refused_acquire_leaves_nothing_behind(
    etcd_server_factory: EtcdServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await _auth_server(etcd_server_factory)
    async with _alice(server) as alice:
        await alice.shared_session(TTL)  # granted before the measurement
        with caplog.at_level(logging.WARNING, logger="etcdsync"):
            before = _unary(server)
            with pytest.raises(errors.PermissionDeniedError):
                await alice.lock("locks/job", ttl=TTL).acquire(timeout=10)
            refused = _unary(server)
            # One request: the enqueue txn, refused as a whole (nothing was written,
            # so there is nothing to delete).
            assert refused - before == Counter({"Txn": 1})
            # No request after the refusal: watch the server for a while.
            end = time.monotonic() + QUIET_WINDOW
            while time.monotonic() < end:
                assert _unary(server) == refused, "a request was sent after the refusal"
                await sleep(0.1)  # lets a background task (if any) run
        assert not [r for r in caplog.records if "retrying" in r.getMessage()]

        async with _root(server) as root:
            await root.role_grant_permission(
                "locker", "locks/", prefix=True, permission="readwrite"
            )
        # The same name on the same client (same session, same key): no in-process
        # claim is left, so it is taken at once.
        lock = alice.lock("locks/job", ttl=TTL)
        with within(3.0):
            await lock.acquire(timeout=3)
        assert lock.held
        await lock.release()
        assert (await alice.get("locks/", prefix=True, count_only=True)).count == 0


async def test_refused_try_acquire_and_semaphore_leave_nothing_behind(
    etcd_server_factory: EtcdServerFactory,
) -> None:
    server = await _auth_server(etcd_server_factory)
    async with _alice(server) as alice:
        await alice.shared_session(TTL)
        before = _unary(server)
        with pytest.raises(errors.PermissionDeniedError):
            await alice.lock("locks/try", ttl=TTL).try_acquire(timeout=5)
        with pytest.raises(errors.PermissionDeniedError):
            await alice.semaphore("locks/sem", 2, ttl=TTL).acquire(timeout=5)
        with pytest.raises(errors.PermissionDeniedError):
            await alice.election("locks/vote", ttl=TTL).campaign("me", timeout=5)
        refused = _unary(server)
        assert refused - before == Counter({"Txn": 3})
        end = time.monotonic() + QUIET_WINDOW
        while time.monotonic() < end:
            assert _unary(server) == refused, "a request was sent after the refusal"
            await sleep(0.1)  # lets a background task (if any) run
        async with _root(server) as root:
            await root.role_grant_permission(
                "locker", "locks/", prefix=True, permission="readwrite"
            )
        with within(3.0):
            assert await alice.lock("locks/try", ttl=TTL).try_acquire(timeout=3)
            election = alice.election("locks/vote", ttl=TTL)
            await election.campaign("me", timeout=3)
        assert election.is_leader
        await election.resign()


async def test_close_closes_after_the_role_is_revoked(
    etcd_server_factory: EtcdServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await _auth_server(etcd_server_factory)
    async with _root(server) as root:
        await root.role_grant_permission("locker", "locks/", prefix=True, permission="readwrite")
    alice = _alice(server)
    try:
        lock = alice.lock("locks/held", ttl=TTL)
        await lock.acquire(timeout=5)
        own = await alice.session(ttl=TTL)
        await alice.put("locks/own", "x", lease=own.lease_id)
        async with _root(server) as root:
            await root.user_revoke_role("alice", "locker")
            # A session of its own: its close raises the refusal, and sends nothing
            # more (its lease expires after its TTL: nothing renews it any longer).
            before = _unary(server)
            with pytest.raises(errors.PermissionDeniedError):
                await own.close(timeout=5)
            assert own.is_done
            end = time.monotonic() + QUIET_WINDOW
            while time.monotonic() < end:
                assert _unary(server) - before == Counter({"LeaseRevoke": 1})
                await sleep(0.1)  # lets a background task (if any) run
            # A refused release leaves the key to the lease, without retrying.
            with pytest.raises(errors.PermissionDeniedError):
                await alice.put("locks/probe", "x")
            before = _unary(server)
            await lock.release(timeout=5)
            assert not lock.held
            assert _unary(server) - before == Counter({"Txn": 1})
            # The client's close revokes the shared session, which etcd refuses too
            # (a revoke needs write access to the lease's keys): it still closes,
            # and says why in the log.
            with caplog.at_level(logging.WARNING, logger="etcdsync"), within(5.0):
                await alice.close()
            assert alice.closed
            assert any("revoking the shared session" in r.getMessage() for r in caplog.records)
            # The key is left to its lease (nothing renews it any more).
            assert (await root.get("locks/held", prefix=True, count_only=True)).count == 1
    finally:
        await alice.close()
