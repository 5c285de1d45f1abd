"""Driver for ``aetcd`` (asyncio), run in bench/.venvs/aetcd."""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import _async_harness as h
import _common as c
import aetcd


class Adapter:
    def __init__(self, endpoint: str) -> None:
        self.host, self.port = c.host_port(endpoint)
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        self.client = aetcd.Client(host=self.host, port=self.port, timeout=30)
        await self.client.connect()

    def versions(self) -> dict[str, str]:
        return {
            "aetcd": importlib.metadata.version("aetcd"),
            "grpcio": importlib.metadata.version("grpcio"),
            "protobuf": importlib.metadata.version("protobuf"),
        }

    async def close(self) -> None:
        await self.client.close()

    async def put(self, key: bytes, value: bytes) -> None:
        await self.client.put(key, value)

    async def get(self, key: bytes) -> object:
        return await self.client.get(key)

    async def delete(self, key: bytes) -> object:
        return await self.client.delete(key)

    async def txn_cas(self, key: bytes, value: bytes) -> object:
        t = self.client.transactions
        return await self.client.transaction(
            compare=[t.version(key) > 0], success=[t.put(key, value)], failure=[t.get(key)]
        )

    async def get_prefix(self, prefix: bytes) -> int:
        return len(list(await self.client.get_prefix(prefix)))

    async def delete_prefix(self, prefix: bytes) -> None:
        await self.client.delete_prefix(prefix)

    async def watch_prefix(
        self, prefix: bytes
    ) -> tuple[AsyncIterator[Sequence[bytes]], Callable[[], Awaitable[None]]]:
        watch = await self.client.watch_prefix(prefix)

        async def batches() -> AsyncIterator[Sequence[bytes]]:
            # aetcd delivers one event at a time.
            async for event in watch:
                yield (event.kv.key,)

        return batches(), watch.cancel

    async def watch_key(self, key: bytes) -> object:
        return await self.client.watch(key)

    async def grant(self, ttl: int) -> Any:
        return await self.client.lease(ttl)

    async def keep_alive(self, leases: list[Any], ttl: int) -> h.KeepaliveStats:
        # No keepalive manager in aetcd: renew each lease with its one-shot
        # refresh (a new LeaseKeepAlive stream per call).
        async def refresh(lease: Any) -> int:
            return int((await lease.refresh()).TTL)

        return h.RefreshLoop(refresh, leases, ttl)

    async def lock_cycle(
        self, name: str, ttl: int, timeout: float, body: Callable[[], None]
    ) -> bool:
        lock = self.client.lock(name.encode(), ttl=ttl)
        if not await lock.acquire(timeout=timeout):
            return False
        try:
            body()
        finally:
            await lock.release()
        return True

    async def lock_hold(self, name: str, ttl: int, timeout: float) -> Callable[[], Awaitable[None]]:
        lock = self.client.lock(name.encode(), ttl=ttl)
        if not await lock.acquire(timeout=timeout):
            raise RuntimeError("lock not acquired")
        return lock.release

    async def campaign_cycle(self, name: str, ttl: int) -> None:
        raise c.Unsupported("no election recipe")

    async def config_subscribe(self, prefix: bytes, subscribers: int) -> h.Counter:
        raise c.Unsupported("no config recipe")

    async def watch_many(self, key: bytes, n: int, on_event: Callable[[], None]) -> None:
        # What an aetcd user writes: a watch, and a task reading it, per watcher.
        async def first_event(watch: Any) -> None:
            async for _ in watch:
                on_event()
                return

        for _ in range(n):
            watch = await self.client.watch(key)
            self._tasks.append(asyncio.create_task(first_event(watch)))

    async def group_sweep(self, name: str, n: int, ttl: int, timeout: float) -> dict[str, float]:
        raise c.Unsupported("no group recipe")


if __name__ == "__main__":
    h.main(Adapter, "aetcd")
