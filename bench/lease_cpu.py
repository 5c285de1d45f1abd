"""CPU cost of keeping many leases alive, in both flavours.

    .venv/bin/python bench/lease_cpu.py [--leases 1000] [--ttl 10] [--seconds 30] [--spread]

Starts a private etcd, grants the leases, attaches one keepalive listener to each and
then measures the process CPU time (``time.process_time``: every thread, gRPC's
included) spent while the manager renews them for ``--seconds``.  The main thread only
waits meanwhile, so the figure is the keepalive machinery's own cost.  Renewals are
counted through listener callbacks to show the work actually done.  Not part of the
test suite: report the numbers, never assert them.

By default every keepalive starts at once, so all leases renew in one wave per period
(as in ``make bench``'s ``leases_*`` workloads).  ``--spread`` starts them in
``--groups`` groups over one renewal period (TTL/3), as leases granted over time
are: the renewals then come in many small waves, and the manager wakes up for each -
the case where the cost of a wake-up, not of a renewal, shows.  The manager's
``leases_examined`` counter tells how many lease schedules its wake-ups looked at.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

from etcdsync import AsyncClient, Client, LeaseKeepAliveResult, errors
from etcdsync.testing.server import EtcdServer


@dataclass
class Result:
    flavour: str
    leases: int
    ttl: int
    seconds: float
    cpu: float
    renewals: int
    lost: int
    spread: bool = False
    examined: int | None = None

    def line(self) -> str:
        per_renewal = self.cpu / self.renewals * 1e6 if self.renewals else float("nan")
        examined = "" if self.examined is None else f"  examined={self.examined}"
        return (
            f"{self.flavour:5}  {self.leases} leases  ttl={self.ttl}s  "
            f"{'spread' if self.spread else 'one wave'}  {self.seconds:.0f}s wall  "
            f"cpu={self.cpu:.3f}s ({self.cpu / self.seconds * 100:.2f}% of one core)  "
            f"renewals={self.renewals} ({per_renewal:.0f} us cpu each)  lost={self.lost}"
            f"{examined}"
        )


class _Counter:
    def __init__(self) -> None:
        self.renewals = 0
        self.lost = 0

    def __call__(self, item: LeaseKeepAliveResult | errors.LeaseExpiredError) -> None:
        if isinstance(item, LeaseKeepAliveResult):
            self.renewals += 1
        else:
            self.lost += 1


def _groups(items: list[Any], groups: int) -> list[list[Any]]:
    return [group for group in (items[i::groups] for i in range(groups)) if group]


def _examined(etcd: Any) -> int | None:
    # Older versions of the manager have no counter.
    value = getattr(etcd._keepalives(), "leases_examined", None)
    return value if isinstance(value, int) else None


def run_sync(
    endpoint: str, leases: int, ttl: int, seconds: float, spread: bool, groups: int
) -> Result:
    counter = _Counter()
    with Client(endpoint) as etcd:
        granted = [etcd.grant(ttl) for _ in range(leases)]
        listeners: list[Any] = []
        batches = _groups(granted, groups) if spread else [granted]
        for batch in batches:
            listeners.extend(etcd.keep_alive(lease) for lease in batch)
            if spread:
                time.sleep(ttl / 3 / len(batches))  # the next group's renewal phase
        for ka in listeners:
            ka.next_result(timeout=10)  # every lease is renewed once before measuring
            ka.add_callback(counter)
        examined0 = _examined(etcd)
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        renewals, lost = counter.renewals, counter.lost
        examined1 = _examined(etcd)
        for lease in granted:
            etcd.revoke(lease)
    examined = None if examined0 is None or examined1 is None else examined1 - examined0
    return Result("sync", leases, ttl, wall, cpu, renewals, lost, spread, examined)


async def run_async(
    endpoint: str, leases: int, ttl: int, seconds: float, spread: bool, groups: int
) -> Result:
    counter = _Counter()
    async with AsyncClient(endpoint) as etcd:
        granted = [await etcd.grant(ttl) for _ in range(leases)]
        listeners: list[Any] = []
        batches = _groups(granted, groups) if spread else [granted]
        for batch in batches:
            listeners.extend(etcd.keep_alive(lease) for lease in batch)
            if spread:
                await asyncio.sleep(ttl / 3 / len(batches))
        for ka in listeners:
            await ka.next_result(timeout=10)
            ka.add_callback(counter)
        examined0 = _examined(etcd)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        renewals, lost = counter.renewals, counter.lost
        examined1 = _examined(etcd)
        for lease in granted:
            await etcd.revoke(lease)
    examined = None if examined0 is None or examined1 is None else examined1 - examined0
    return Result("async", leases, ttl, wall, cpu, renewals, lost, spread, examined)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--ttl", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--flavour", choices=["sync", "async", "both"], default="both")
    parser.add_argument(
        "--spread", action="store_true", help="start the keepalives over one renewal period"
    )
    parser.add_argument("--groups", type=int, default=100, help="with --spread: how many waves")
    parser.add_argument("--etcd", default=None, help="etcd version (3.5, 3.4) or path")
    args = parser.parse_args()
    common = (args.leases, args.ttl, args.seconds, args.spread, max(args.groups, 1))
    with EtcdServer(version=args.etcd) as server:
        print(f"etcd {server.version} at {server.endpoint}")
        if args.flavour in ("sync", "both"):
            sync = run_sync(server.endpoint, *common)
            print(sync.line(), flush=True)
        if args.flavour in ("async", "both"):
            print(asyncio.run(run_async(server.endpoint, *common)).line(), flush=True)


if __name__ == "__main__":
    main()
