"""Driver for etcdsync's ``AsyncClient`` (runs in the project's .venv)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import _async_harness as h
from _common import Unsupported

from etcdsync import AsyncClient, Compare, Lease, LeaseKeepAliveResult, Op, errors


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


if __name__ == "__main__":
    h.main(Adapter, "etcdsync-async")
