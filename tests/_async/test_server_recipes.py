"""The server-side lock (v3lockpb) and election (v3electionpb) services, called
through the client's thin ``server_*`` methods, against real etcd.

Canonical asyncio tests; ``tests/_sync/test_server_recipes.py`` is generated from it.
"""

from __future__ import annotations

import pytest

from etcdsync import AsyncClient, errors
from etcdsync.watch_types import EventType


async def _wait_deleted(client: AsyncClient, key: str, timeout: float = 5.0) -> None:
    """Wait until ``key`` is gone (the server withdraws a cancelled waiter's key
    right after the call gave up, not before it returned)."""
    left = await client.get(key)
    if left.kv is None:
        return
    watcher = await client.watch(key, start_revision=left.revision + 1, no_put=True)
    try:
        batch = await watcher.get(timeout)
        assert [e.type for e in batch.events] == [EventType.DELETE]
    finally:
        await watcher.cancel()


async def test_server_lock(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "lock"
    async with AsyncClient(etcd_endpoint) as client:
        first = await client.grant(30)
        second = await client.grant(30)
        try:
            key = await client.server_lock(name, first)
            # Go's key layout: name/<lease id in hex>, shared with the client recipes.
            assert key == f"{name}/{first.id:x}".encode()
            held = await client.get(key)
            assert held.kv is not None and held.kv.lease == first.id

            with pytest.raises(errors.Timeout):
                await client.server_lock(name, second, timeout=0.5)
            # The waiter that gave up leaves no key behind.
            await _wait_deleted(client, f"{name}/{second.id:x}")
            assert [kv.key for kv in await client.get(name + "/", prefix=True)] == [key]

            await client.server_unlock(key)
            assert (await client.get(key)).kv is None
            key2 = await client.server_lock(name, second, timeout=5)
            assert key2 == f"{name}/{second.id:x}".encode()
            await client.server_unlock(key2)
        finally:
            await client.revoke(first)
            await client.revoke(second)
        with pytest.raises(errors.LeaseNotFoundError):
            await client.server_lock(name, first, timeout=5)  # revoked lease


async def test_server_election(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "election"
    async with AsyncClient(etcd_endpoint) as client:
        assert await client.server_leader(name) is None
        first = await client.grant(30)
        second = await client.grant(30)
        try:
            leader = await client.server_campaign(name, first, "alpha")
            assert leader.key == f"{name}/{first.id:x}".encode()
            assert leader.lease == first.id and leader.name == name.encode()
            current = await client.server_leader(name)
            assert current is not None
            assert current.value == b"alpha" and current.create_revision == leader.revision

            async with await client.server_observe(name, timeout=10) as observer:
                seen = await observer.get()
                assert seen is not None and seen.value == b"alpha"
                await client.server_proclaim(leader, "beta")
                seen = await observer.get()
                assert seen is not None and seen.value == b"beta"

                with pytest.raises(errors.Timeout):
                    await client.server_campaign(name, second, "gamma", timeout=0.5)
                await _wait_deleted(client, f"{name}/{second.id:x}")
                await client.server_resign(leader)
                assert await client.server_leader(name) is None  # the waiter withdrew

                with pytest.raises(errors.NotElectedError):
                    await client.server_proclaim(leader, "stale")

                leader2 = await client.server_campaign(name, second, "delta", timeout=5)
                seen = await observer.get()
                assert seen is not None and seen.value == b"delta"
                assert seen.key == leader2.key
                observer.cancel()
                assert await observer.get() is None
            await client.server_resign(leader2)
        finally:
            await client.revoke(first)
            await client.revoke(second)


async def test_server_observe_iterates(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "observe"
    async with AsyncClient(etcd_endpoint) as client:
        lease = await client.grant(30)
        try:
            leader = await client.server_campaign(name, lease, "v0")
            observer = await client.server_observe(name, timeout=10)
            values = []
            async for kv in observer:
                values.append(kv.value)
                if len(values) == 3:
                    observer.cancel()
                else:
                    await client.server_proclaim(leader, f"v{len(values)}")
            assert values == [b"v0", b"v1", b"v2"]
        finally:
            await client.revoke(lease)
