"""Helpers shared by the lock, RW-lock and semaphore tests (both flavours via unasync)."""

from __future__ import annotations

import time
from typing import Any

from etcdsync import AsyncClient
from etcdsync.watch_types import EventType


async def count_keys(etcd: AsyncClient, prefix: str) -> int:
    """How many keys ``prefix`` holds now."""
    return (await etcd.get(prefix, prefix=True, count_only=True)).count


async def wait_count(etcd: AsyncClient, prefix: str, want: int, timeout: float = 10.0) -> None:
    """Wait (on a watch, not by polling) until ``prefix`` holds ``want`` keys."""
    response = await etcd.get(prefix, prefix=True, count_only=True)
    count = response.count
    if count == want:
        return
    deadline = time.monotonic() + timeout
    async with await etcd.watch(
        prefix, prefix=True, start_revision=response.revision + 1
    ) as watcher:
        while count != want:
            batch = await watcher.get(max(deadline - time.monotonic(), 0.0))
            for event in batch.events:
                if event.type is EventType.DELETE:
                    count -= 1
                elif event.kv.version == 1:
                    count += 1


async def collect(out: list[Any], fn: Any, *args: Any) -> None:
    """Run ``fn(*args)`` (in a task/thread), keeping its result or exception."""
    try:
        out.append(await fn(*args))
    except BaseException as exc:
        out.append(exc)
