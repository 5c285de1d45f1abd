"""Multi-locks against a real etcd: all or nothing, one global order, fencing, loss.

* the mutexes are taken in the global order of their keys whatever order the names
  were given in, each with Go's key layout and its own fencing token; a txn guarded
  by ``is_owner()`` (every compare) writes, ``release()`` frees every name;
* an acquire that times out on one name releases the names it took, and raises
  ``LockTimeout`` (the ``async with`` body never runs);
* two holders of one process asking for overlapping sets in opposite orders never
  deadlock (in-process claims, one order);
* deleting one lock key loses the whole multi-lock: ``guarded_txn`` is refused by
  etcd and ``lost`` is set.

Canonical asyncio tests; ``tests/_sync/test_multi_lock.py`` is generated from this file.
"""

from __future__ import annotations

import time

import pytest

from etcdsync import AsyncClient, Op, errors
from etcdsync._backends._async import spawn

TTL = 5


async def test_all_in_one_order_with_tokens(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        names = [prefix + "c", prefix + "a", prefix + "b"]
        multi = etcd.multi_lock(names, ttl=TTL, timeout=10)
        assert multi.order == tuple(sorted(names)) and multi.names == tuple(names)
        with pytest.raises(errors.LockError):
            assert multi.tokens
        async with multi:
            assert multi.held
            tokens = multi.tokens
            assert list(tokens) == sorted(names)
            # Acquired in order: the tokens (create revisions) grow along it.
            assert [tokens[n] for n in sorted(names)] == sorted(tokens.values())
            session = multi.locks[0].session
            assert session is not None
            for name in names:
                kv = (await etcd.get(f"{name}/{session.lease_id:x}")).kv
                assert kv is not None and kv.create_revision == tokens[name]
            done = await multi.guarded_txn([Op.put(prefix + "data", "v1")])
            assert done.succeeded and done.revision > max(tokens.values())
            raw = await etcd.txn(multi.is_owner(), [Op.put(prefix + "data", "v2")])
            assert raw.succeeded and len(multi.is_owner()) == 3
            # A plain lock on one of the names waits for the multi-lock.
            assert not await etcd.lock(prefix + "b", ttl=TTL).try_acquire()
        assert not multi.held
        for name in names:
            assert (await etcd.get(name + "/", prefix=True, keys_only=True)).count == 0
        await multi.acquire()  # reusable
        await multi.release()
        await multi.release()  # idempotent


async def test_a_timeout_releases_what_was_taken(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        blocker = await other.lock(prefix + "b", ttl=TTL).acquire(timeout=5)
        names = [prefix + "c", prefix + "b", prefix + "a"]
        multi = etcd.multi_lock(names, ttl=TTL, timeout=0.5)
        ran = False
        started = time.monotonic()
        with pytest.raises(errors.LockTimeout) as caught:
            async with multi:
                ran = True
        assert not ran and f"{prefix}b" in str(caught.value)
        assert time.monotonic() - started < 5  # one deadline for the whole acquire
        with pytest.raises(errors.LockTimeout):
            await multi.acquire(timeout=0.2)
        assert not multi.held
        # "a" (taken before "b") was released; "c" never taken.
        for name in ("a", "c"):
            assert (await etcd.get(f"{prefix}{name}/", prefix=True, keys_only=True)).count == 0
        await blocker.release()
        assert await multi.try_acquire() and multi.held
        await multi.release()


async def test_opposite_orders_in_one_process_do_not_deadlock(
    etcd_endpoint: str, prefix: str
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        names = [prefix + n for n in ("x", "y", "z")]
        counter = prefix + "counter"
        rounds = 15
        failures: list[BaseException] = []

        async def worker(order: list[str]) -> None:
            try:
                for _ in range(rounds):
                    async with etcd.multi_lock(order, ttl=TTL, timeout=20) as multi:
                        value = int((await etcd.get(counter)).value or b"0")
                        await multi.guarded_txn([Op.put(counter, str(value + 1))])
            except BaseException as exc:
                failures.append(exc)

        started = time.monotonic()
        tasks = [spawn(worker, names, name="w1"), spawn(worker, names[::-1], name="w2")]
        for task in tasks:
            assert await task.join(60)
        assert not failures, failures
        assert int((await etcd.get(counter)).value) == 2 * rounds
        assert time.monotonic() - started < 60


async def test_losing_one_lock_loses_the_multi_lock(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        multi = await etcd.multi_lock([prefix + "a", prefix + "b"], ttl=TTL).acquire(timeout=5)
        seen: list[errors.EtcdError] = []
        multi.add_lost_callback(seen.append)
        lost = multi.lost
        await etcd.delete(multi.keys[prefix + "b"])  # an operator removes one lock key
        with pytest.raises(errors.LockLostError):
            await multi.guarded_txn([Op.put(prefix + "data", "stale")])
        assert lost.is_set() and not multi.held and len(seen) == 1
        assert multi.locks[1].lost.is_set() and not multi.locks[0].lost.is_set()
        assert (await etcd.get(prefix + "data")).kv is None
        with pytest.raises(errors.LockLostError):
            await multi.guarded_txn([Op.put(prefix + "data", "stale")])  # known: no request
        await multi.release()  # deletes only what is still its own
        assert (await etcd.get(prefix + "a/", prefix=True, keys_only=True)).count == 0


async def test_bad_arguments(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        for names in ([], ["a", "a"], ["a", ""], "ab", [1]):
            with pytest.raises(errors.InvalidRequest):
                etcd.multi_lock(names)  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidRequest):
            etcd.multi_lock(["a"], ttl=0)
        with pytest.raises(errors.InvalidRequest):
            etcd.multi_lock(["a"], timeout=-1)
