"""CPU cost of keeping many leases alive, in both flavours.

    .venv/bin/python bench/lease_cpu.py [--leases 1000] [--ttl 10] [--seconds 30]

Starts a private etcd, grants the leases, attaches one keepalive listener to each and
then measures the process CPU time (``time.process_time``: every thread, gRPC's
included) spent while the manager renews them for ``--seconds``.  The main thread only
waits meanwhile, so the figure is the keepalive machinery's own cost.  Renewals are
counted through listener callbacks to show the work actually done.  Not part of the
test suite: report the numbers, never assert them.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

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

    def line(self) -> str:
        per_renewal = self.cpu / self.renewals * 1e6 if self.renewals else float("nan")
        return (
            f"{self.flavour:5}  {self.leases} leases  ttl={self.ttl}s  {self.seconds:.0f}s wall  "
            f"cpu={self.cpu:.3f}s ({self.cpu / self.seconds * 100:.2f}% of one core)  "
            f"renewals={self.renewals} ({per_renewal:.0f} us cpu each)  lost={self.lost}"
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


def run_sync(endpoint: str, leases: int, ttl: int, seconds: float) -> Result:
    counter = _Counter()
    with Client(endpoint) as etcd:
        granted = [etcd.grant(ttl) for _ in range(leases)]
        listeners = [etcd.keep_alive(lease) for lease in granted]
        for ka in listeners:
            ka.next_result(timeout=10)  # every lease is renewed once before measuring
            ka.add_callback(counter)
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        renewals, lost = counter.renewals, counter.lost
        for lease in granted:
            etcd.revoke(lease)
    return Result("sync", leases, ttl, wall, cpu, renewals, lost)


async def run_async(endpoint: str, leases: int, ttl: int, seconds: float) -> Result:
    counter = _Counter()
    async with AsyncClient(endpoint) as etcd:
        granted = [await etcd.grant(ttl) for _ in range(leases)]
        listeners = [etcd.keep_alive(lease) for lease in granted]
        for ka in listeners:
            await ka.next_result(timeout=10)
            ka.add_callback(counter)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        renewals, lost = counter.renewals, counter.lost
        for lease in granted:
            await etcd.revoke(lease)
    return Result("async", leases, ttl, wall, cpu, renewals, lost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--ttl", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--flavour", choices=["sync", "async", "both"], default="both")
    parser.add_argument("--etcd", default=None, help="etcd version (3.5, 3.4) or path")
    args = parser.parse_args()
    with EtcdServer(version=args.etcd) as server:
        print(f"etcd {server.version} at {server.endpoint}")
        if args.flavour in ("sync", "both"):
            print(run_sync(server.endpoint, args.leases, args.ttl, args.seconds).line())
        if args.flavour in ("async", "both"):
            result = asyncio.run(run_async(server.endpoint, args.leases, args.ttl, args.seconds))
            print(result.line())


if __name__ == "__main__":
    main()
