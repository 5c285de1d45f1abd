"""The keepalive manager's agenda and its stall detection, against a real etcd.

Canonical asyncio tests; ``tests/_sync/test_keepalive_agenda.py`` is generated from
this file.  How much the sender looks at is read from its ``leases_examined``
counter (a count, never a time); whether a lease lived is checked from the server.
"""

from __future__ import annotations

import time

from etcdsync import AsyncClient, LeaseKeepAliveResult
from etcdsync.testing import FaultProxy

# Leases nobody needs to renew during a test: the next renewal is TTL/3 = 100 s away.
_QUIET_TTL = 300
_QUIET_LEASES = 200


async def test_a_wake_up_looks_only_at_the_leases_due(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        quiet = [await etcd.grant(_QUIET_TTL) for _ in range(_QUIET_LEASES)]
        quiet_listeners = [etcd.keep_alive(lease) for lease in quiet]
        for ka in quiet_listeners:
            await ka.next_result(timeout=10)  # every quiet lease was renewed once
        busy = await etcd.grant(3)  # renewed every second
        async with etcd.keep_alive(busy) as ka:
            await ka.next_result(timeout=5)
            manager = etcd._keepalives()
            before = manager.leases_examined
            renewals = 3
            for _ in range(renewals):
                assert (await ka.next_result(timeout=5)).id == busy.id
            examined = manager.leases_examined - before
        # Each renewal of the busy lease: its own entry when due (plus the odd stale
        # entry).  A scan of every lease on each wake-up would have counted the 200
        # quiet ones at least once per renewal.
        assert renewals <= examined <= 3 * renewals, examined
        assert not any(ka.lost.is_set() for ka in quiet_listeners)
        for ka in quiet_listeners:
            ka.close()
        for lease in [*quiet, busy]:
            await etcd.revoke(lease)


async def test_a_silent_member_does_not_cost_the_lease(etcd_endpoint: str) -> None:
    # The same member twice: through a proxy that goes silent (it accepts and holds
    # every byte, so the connection stays up for the channel's keepalive of 30 s),
    # and directly, standing for another member.
    with FaultProxy(etcd_endpoint) as proxy:
        async with AsyncClient([proxy.endpoint, etcd_endpoint]) as etcd:
            lease = await etcd.grant(3)
            async with etcd.keep_alive(lease) as ka:
                await ka.next_result(timeout=5)
                manager = etcd._keepalives()
                opened = manager.streams_opened
                renewed: list[float] = []
                ka.add_callback(
                    lambda r: (
                        renewed.append(time.monotonic())
                        if isinstance(r, LeaseKeepAliveResult)
                        else None
                    )
                )
                proxy.blackhole()
                silenced_at = time.monotonic()
                # Renewals go on for twice the TTL: a lease renewed only through the
                # silent address would be lost meanwhile (next_result would raise).
                while time.monotonic() < silenced_at + 2 * lease.ttl:
                    assert (await ka.next_result(timeout=lease.ttl)).id == lease.id
                assert not ka.lost.is_set(), ka.error
                assert manager.stalls >= 1  # the stall detection moved it, not a broken stream
                assert manager.streams_opened >= opened + 1
                assert etcd.endpoint == etcd_endpoint
                # Renewed through the other address well after the silence began.
                assert any(t > silenced_at + lease.ttl for t in renewed), renewed
            async with AsyncClient(etcd_endpoint) as observer:
                assert (await observer.time_to_live(lease)).ttl > 0
                await observer.revoke(lease)
            proxy.heal()
