"""Locked functions against a real etcd: the body holds the lock, timeouts never run it,
the fencing token reaches it through ``current_lock()``.

Canonical asyncio tests; ``tests/_sync/test_locked.py`` is generated from this file.
Exclusion across processes is ``tests/test_locked_processes.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from etcdsync import AsyncClient, AsyncMutex, Op, current_lock, errors
from etcdsync._backends._async import FLAVOUR

from .lock_helpers import wait_count

TTL = 5


async def test_body_holds_the_lock_and_reads_its_token(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}job"
    seen: list[Any] = []
    async with AsyncClient(etcd_endpoint) as etcd:

        @etcd.locked(name, ttl=TTL, timeout=5)
        async def job(x: int, *, y: int) -> int:
            lock = current_lock()
            assert isinstance(lock, AsyncMutex) and lock.held
            kv = (await etcd.get(lock.key)).kv
            assert kv is not None and kv.create_revision == lock.fencing_token
            done = await lock.guarded_txn([Op.put(f"{prefix}data", str(lock.fencing_token))])
            seen.append((lock.key, lock.fencing_token, done.revision))
            return x + y

        assert job.__name__ == "job"  # functools.wraps
        assert current_lock() is None
        assert await job(1, y=2) == 3
        assert await job(2, y=2) == 4
        assert current_lock() is None  # restored after each call
        (key1, token1, _), (_, token2, written) = seen
        assert key1.startswith(f"{name}/") and token2 > token1  # one lock object per call
        data = (await etcd.get(f"{prefix}data")).kv
        assert data is not None and data.value == str(token2).encode()
        assert data.mod_revision == written
        assert (await etcd.get(f"{name}/", prefix=True, count_only=True)).count == 0


async def test_timed_out_acquire_never_runs_the_body(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}job"
    runs: list[int] = []
    async with AsyncClient(etcd_endpoint) as holder, AsyncClient(etcd_endpoint) as etcd:

        @etcd.locked(name, ttl=TTL, timeout=0.3)
        async def job() -> None:
            runs.append(1)

        @etcd.locked(name, ttl=TTL, timeout=0)
        async def try_job() -> None:
            runs.append(2)

        async with holder.lock(name, ttl=TTL):
            with pytest.raises(errors.LockTimeout):
                await job()
            with pytest.raises(errors.LockTimeout):
                await try_job()
            assert runs == []
            # Nothing of the timed-out calls is left queued: only the holder's key (the
            # queued one is removed in the background, after the error was raised).
            await wait_count(etcd, f"{name}/", 1)
        await try_job()  # free now: timeout=0 takes it
        assert runs == [2]


async def test_release_after_an_exception_and_nested_locks(etcd_endpoint: str, prefix: str) -> None:
    outer_name, inner_name = f"{prefix}outer", f"{prefix}inner"
    async with AsyncClient(etcd_endpoint) as etcd:

        @etcd.locked(inner_name, ttl=TTL, timeout=5)
        async def inner() -> str:
            lock = current_lock()
            assert lock is not None
            return lock.name

        @etcd.locked(outer_name, ttl=TTL, timeout=5)
        async def outer() -> tuple[str, str, str]:
            lock = current_lock()
            assert lock is not None
            before = lock.name
            nested = await inner()  # sees the innermost lock...
            after = current_lock()  # ...and the outer one is restored
            assert after is lock
            return before, nested, after.name

        assert await outer() == (outer_name, inner_name, outer_name)

        @etcd.locked(outer_name, ttl=TTL, timeout=5)
        async def failing() -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await failing()
        assert current_lock() is None
        assert (await etcd.get(f"{outer_name}/", prefix=True, count_only=True)).count == 0
        async with etcd.lock(outer_name, ttl=TTL, timeout=2):
            pass  # released: free again


async def test_bad_arguments_are_refused_at_decoration(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        with pytest.raises(errors.InvalidRequest):
            etcd.locked("", ttl=TTL)
        with pytest.raises(errors.InvalidRequest):
            etcd.locked(f"{prefix}x", ttl=0)
        with pytest.raises(errors.InvalidRequest):
            etcd.locked(f"{prefix}x", timeout=-1)

        def plain() -> None:
            pass

        # A coroutine function in both generated flavours (unasync rewrites the keyword).
        namespace: dict[str, Any] = {}
        exec("asy" + "nc def coroutine():\n    pass", namespace)
        wrong: Any = plain if FLAVOUR == "async" else namespace["coroutine"]
        with pytest.raises(errors.InvalidRequest, match="decorates"):
            etcd.locked(f"{prefix}x")(wrong)
