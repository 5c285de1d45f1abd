"""Re-entrant mutex and RW lock against a real etcd: nesting, release counts, owners,
downgrade, refused upgrade, loss.

Canonical asyncio tests (an owner is a task); ``tests/_sync/test_reentrant.py`` is
generated from this file (an owner is a thread).  Exclusion across processes:
``tests/test_reentrant_processes.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from etcdsync import AsyncClient, Op, errors
from etcdsync._async.concurrency.reentrant import AsyncReentrantLock, AsyncReentrantRWLock
from etcdsync._backends._async import Event, spawn, wait_event

from .lock_helpers import count_keys

TTL = 5


async def _outcome_of(call: Any, *args: Any) -> list[Any]:
    """Run ``call(*args)`` in another owner (task / thread); its result or error."""
    out: list[Any] = []
    done = Event()

    async def other() -> None:
        try:
            out.append(await call(*args))
        except Exception as exc:  # recorded for the assertion
            out.append(exc)
        finally:
            done.set()

    spawn(other, name="other-owner")
    assert await wait_event(done, 15)
    return out


async def test_nested_acquires_share_one_key_and_count_releases(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}accounts"
    async with AsyncClient(etcd_endpoint) as etcd:
        lock = etcd.reentrant_lock(name, ttl=TTL)
        assert isinstance(lock, AsyncReentrantLock) and not lock.held and lock.hold_count == 0
        async with lock:
            token = lock.fencing_token
            async with lock:  # nested: counted, no new key, same token
                assert lock.hold_count == 2 and lock.fencing_token == token
                assert await count_keys(etcd, f"{name}/") == 1
                done = await lock.guarded_txn([Op.put(f"{prefix}data", "x")])
                assert done.succeeded
            assert lock.held and lock.hold_count == 1
            assert await count_keys(etcd, f"{name}/") == 1  # still held in etcd
            assert lock.lock.key == f"{name}/{lock.lock.session.lease_id:x}"  # type: ignore[union-attr]
        assert not lock.held and lock.hold_count == 0
        assert await count_keys(etcd, f"{name}/") == 0
        with pytest.raises(errors.LockError):
            await lock.release()  # one release too many


async def test_another_owner_waits_and_cannot_release(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}accounts"
    async with AsyncClient(etcd_endpoint) as etcd:
        lock = etcd.reentrant_lock(name, ttl=TTL)
        await lock.acquire()
        await lock.acquire()
        # Another owner of the same object is another holder: it queues, and it
        # holds nothing it could release.
        outcome = await _outcome_of(lock.acquire, 0.5)
        assert len(outcome) == 1 and isinstance(outcome[0], errors.LockTimeout), outcome
        outcome = await _outcome_of(lock.release)
        assert len(outcome) == 1 and isinstance(outcome[0], errors.LockError), outcome
        assert lock.hold_count == 2
        await lock.release()
        await lock.release()

        async def take_and_give_back(timeout: float) -> int:
            await lock.acquire(timeout)
            try:
                return lock.fencing_token
            finally:
                await lock.release()

        outcome = await _outcome_of(take_and_give_back, 10)
        assert len(outcome) == 1 and isinstance(outcome[0], int), outcome
        assert await count_keys(etcd, f"{name}/") == 0


async def test_other_clients_are_excluded_while_nested(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}accounts"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        lock = etcd.reentrant_lock(name, ttl=TTL)
        plain = other.lock(name, ttl=TTL)  # Go's layout: a plain mutex contends too
        async with lock:
            async with lock:
                assert await plain.try_acquire() is False
            assert await plain.try_acquire() is False  # one release left
        assert await plain.try_acquire() is True
        await plain.release()


async def test_nested_acquire_after_a_loss_raises(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}accounts"
    async with AsyncClient(etcd_endpoint) as etcd:
        session = await etcd.session(ttl=TTL)
        lock = etcd.reentrant_lock(name, session=session)
        await lock.acquire()
        await etcd.revoke(session.lease_id)
        assert await lock.lock.wait_lost(10)
        with pytest.raises(errors.LockLostError):
            await lock.acquire()
        assert lock.hold_count == 1
        await lock.release()  # the lost hold is given back: no request, no error
        assert lock.hold_count == 0


async def test_rw_writer_reads_and_downgrades_without_a_writer_in_between(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}catalog"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        rw = etcd.reentrant_rwlock(name, ttl=TTL)
        assert isinstance(rw, AsyncReentrantRWLock)
        await rw.acquire_write()
        token = rw.fencing_token
        await rw.acquire_read()  # covered by the write key: no new key
        assert (rw.write_count, rw.read_count) == (1, 1)
        assert await count_keys(etcd, f"{name}/") == 1
        await rw.release_write()  # the downgrade: still reading
        assert (rw.write_count, rw.read_count) == (0, 1) and rw.fencing_token == token
        # No writer gets in between (the downgraded hold keeps its write key).
        assert await other.rwlock(name, ttl=TTL).write().try_acquire() is False
        await rw.acquire_write()  # back to writing under the same key
        assert rw.fencing_token == token
        await rw.release_write()
        await rw.release_read()
        assert (rw.write_count, rw.read_count) == (0, 0)
        assert await count_keys(etcd, f"{name}/") == 0
        writer = other.rwlock(name, ttl=TTL).write()
        assert await writer.try_acquire() is True
        await writer.release()


async def test_rw_readers_share_nest_and_cannot_upgrade(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}catalog"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        rw = etcd.reentrant_rwlock(name, ttl=TTL)
        async with rw.read():
            async with rw.read():
                assert rw.read_count == 2
                assert await count_keys(etcd, f"{name}/") == 1
                # Another owner reads at the same time (readers share).
                outcome = await _outcome_of(_read_once, rw)
                assert outcome == [True]
                with pytest.raises(errors.LockError, match="upgrad"):
                    await rw.acquire_write(0.5)
                assert await other.rwlock(name, ttl=TTL).write().try_acquire() is False
        assert rw.read_count == 0
        assert await count_keys(etcd, f"{name}/") == 0
        with pytest.raises(errors.LockError):
            await rw.release_read()
        with pytest.raises(errors.LockError):
            await rw.release_write()


async def _read_once(rw: AsyncReentrantRWLock) -> bool:
    await rw.acquire_read(5)
    try:
        return rw.read_count == 1
    finally:
        await rw.release_read()


async def test_bad_input_is_refused(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        with pytest.raises(errors.InvalidRequest):
            etcd.reentrant_lock("")
        with pytest.raises(errors.InvalidRequest):
            etcd.reentrant_rwlock("x", ttl=0)
