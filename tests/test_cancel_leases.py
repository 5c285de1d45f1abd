"""Cancelled asyncio calls never leak a lease (asyncio only: a thread cannot be cancelled).

A candidate whose shared session's claim is taken campaigns on a private session: its
lease is granted on the server even when the caller is cancelled while the grant is in
flight.  Every such grant must be revoked - by the campaign's cleanup, or in the
background once a grant completes for a caller that is gone.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from etcdsync import AsyncClient

CAMPAIGNS = 3000
SESSIONS = 300
CONCURRENCY = 50


async def _cancel_soon(rng: random.Random, call: Any) -> bool:
    """Start ``call``, cancel it at a random point; True if the cancel landed."""
    task = asyncio.ensure_future(call)
    # The random point of cancellation (not a synchronisation): from before the
    # first request to well into the wait behind the leader.
    await asyncio.sleep(rng.choice((0.0, 0.0005, 0.001, 0.002, 0.004, 0.008)))
    landed = task.cancel()
    try:
        result = await task
    except asyncio.CancelledError:
        return landed
    if hasattr(result, "close"):
        await result.close()  # a session that was granted before the cancel: ours to end
    return landed


async def _settled(etcd: AsyncClient, want: int, timeout: float) -> list[int]:
    """The server's leases once at most ``want`` are left (or the last list seen)."""
    deadline = time.monotonic() + timeout
    while True:
        leases = await etcd.leases()
        if len(leases) <= want or time.monotonic() > deadline:
            return leases
        await asyncio.sleep(0.1)  # polling the condition, bounded by the deadline


async def test_cancelled_campaigns_and_sessions_leave_no_lease(etcd_server_factory: Any) -> None:
    server = etcd_server_factory()
    started = time.monotonic()
    async with AsyncClient(server.endpoint) as etcd:
        holder = etcd.election("cancelled", ttl=30)
        await holder.campaign("leader")  # takes the shared session's claim
        shared = holder.session
        assert shared is not None
        rng = random.Random(20261212)
        landed = 0
        for batch in range(0, CAMPAIGNS, CONCURRENCY):
            calls = [
                _cancel_soon(rng, etcd.election("cancelled", ttl=30).campaign(f"c{batch + i}"))
                for i in range(CONCURRENCY)
            ]
            landed += sum(await asyncio.gather(*calls))
        for _ in range(0, SESSIONS, CONCURRENCY):
            calls = [_cancel_soon(rng, etcd.session(ttl=30)) for _ in range(CONCURRENCY)]
            landed += sum(await asyncio.gather(*calls))
        assert landed > CAMPAIGNS  # most cancels hit a call still running
        leases = await _settled(etcd, 1, timeout=30)
        assert leases == [shared.lease_id], f"{len(leases) - 1} leases leaked"
        keys = (await etcd.get("cancelled/", prefix=True, keys_only=True)).kvs
        assert [kv.key for kv in keys] == [f"cancelled/{shared.lease_id:x}".encode()]
        await holder.resign()
    assert time.monotonic() - started < 60
