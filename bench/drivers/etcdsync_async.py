"""Driver for etcdsync's ``AsyncClient`` (runs in the project's .venv)."""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import _async_harness as h
from _common import Unsupported

from etcdsync import AsyncClient, Compare, Lease, LeaseKeepAliveResult, Op, errors
from etcdsync.watch_types import WatchResponse


class _Counter:
    def __init__(self) -> None:
        self.renewals = 0
        self.lost = 0
        self._handles: list[Any] = []

    def __call__(self, item: LeaseKeepAliveResult | errors.LeaseExpiredError) -> None:
        if isinstance(item, LeaseKeepAliveResult):
            self.renewals += 1
        else:
            self.lost += 1

    async def stop(self) -> None:
        for handle in self._handles:
            handle.close()


class Adapter:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    async def connect(self) -> None:
        self.client = AsyncClient(self.endpoint, timeout=30)
        self._configs: list[Any] = []

    def versions(self) -> dict[str, str]:
        return {
            "etcdsync": importlib.metadata.version("etcdsync"),
            "grpcio": importlib.metadata.version("grpcio"),
            "protobuf": importlib.metadata.version("protobuf"),
        }

    async def close(self) -> None:
        for config in self._configs:
            await config.stop()
        await self.client.close()

    async def put(self, key: bytes, value: bytes) -> None:
        await self.client.put(key, value)

    async def get(self, key: bytes) -> object:
        return await self.client.get(key)

    async def delete(self, key: bytes) -> object:
        return await self.client.delete(key)

    async def txn_cas(self, key: bytes, value: bytes) -> object:
        return await self.client.txn(
            [Compare.version(key) > 0], [Op.put(key, value)], [Op.get(key)]
        )

    async def get_prefix(self, prefix: bytes) -> int:
        return len((await self.client.get(prefix, prefix=True)).kvs)

    async def delete_prefix(self, prefix: bytes) -> None:
        await self.client.delete(prefix, prefix=True)

    async def watch_prefix(
        self, prefix: bytes
    ) -> tuple[AsyncIterator[Sequence[bytes]], Callable[[], Awaitable[None]]]:
        watcher = await self.client.watch(prefix, prefix=True)

        async def batches() -> AsyncIterator[Sequence[bytes]]:
            async for batch in watcher:
                yield [event.kv.key for event in batch.events]

        return batches(), watcher.cancel

    async def watch_key(self, key: bytes) -> object:
        return await self.client.watch(key)

    async def grant(self, ttl: int) -> Lease:
        return await self.client.grant(ttl)

    async def keep_alive(self, leases: list[Any], ttl: int) -> h.KeepaliveStats:
        counter = _Counter()
        for lease in leases:
            handle = self.client.keep_alive(lease)
            handle.add_callback(counter)
            counter._handles.append(handle)
        return counter

    async def lock_cycle(
        self, name: str, ttl: int, timeout: float, body: Callable[[], None]
    ) -> bool:
        try:
            async with self.client.lock(name, ttl=ttl, timeout=timeout):
                body()
        except NotImplementedError as exc:
            raise Unsupported("etcdsync's Mutex is not implemented yet") from exc
        except errors.Timeout:
            return False
        return True

    async def lock_hold(self, name: str, ttl: int, timeout: float) -> Callable[[], Awaitable[None]]:
        lock = self.client.lock(name, ttl=ttl)
        await lock.acquire(timeout=timeout)
        return lock.release

    async def campaign_cycle(self, name: str, ttl: int) -> None:
        election = self.client.election(name, ttl=ttl)
        await election.campaign(b"bench")
        await election.resign()

    async def config_subscribe(self, prefix: bytes, subscribers: int) -> h.Counter:
        counter = h.Counter()
        config = await self.client.config(prefix.decode()).start()
        for _ in range(subscribers):
            config.subscribe(counter)
        self._configs.append(config)
        return counter

    async def watch_many(self, key: bytes, n: int, on_event: Callable[[], None]) -> None:
        def callback(item: WatchResponse | errors.EtcdError) -> None:
            if isinstance(item, WatchResponse) and item.events:
                on_event()

        for _ in range(n):
            await self.client.add_watch_callback(key, callback)

    async def group_sweep(self, name: str, n: int, ttl: int, timeout: float) -> dict[str, float]:
        groups = [self.client.group(name, ttl=ttl) for _ in range(n)]
        start = time.perf_counter()
        for i, group in enumerate(groups):
            await group.join(b"member", member_id=f"m{i:06d}", timeout=timeout)
        join = time.perf_counter() - start
        start = time.perf_counter()
        members = await groups[0].members(timeout=timeout)
        listed = time.perf_counter() - start
        if len(members) != n:
            raise RuntimeError(f"members() listed {len(members)} of {n}")
        start = time.perf_counter()
        watch = await groups[0].watch().start(timeout=timeout)
        for _ in range(n):
            await watch.get(timeout)
        watched = time.perf_counter() - start
        extra = self.client.group(name, ttl=ttl)
        start = time.perf_counter()
        await extra.join(b"member", member_id="extra", timeout=timeout)
        event = await watch.get(timeout)
        notified = time.perf_counter() - start
        if event.member.id != "extra":
            raise RuntimeError(f"expected the extra member's join, got {event}")
        await watch.cancel()
        for group in (*groups, extra):
            await group.leave(timeout=timeout)
        return {
            "join_s": join,
            "members_ms": listed * 1e3,
            "watch_all_ms": watched * 1e3,
            "notify_ms": notified * 1e3,
        }


if __name__ == "__main__":
    h.main(Adapter, "etcdsync-async")
