"""Queues against a real etcd: FIFO, priority, at-least-once claims, lost answers.

* the FIFO queue serves items in put order, each exactly once across concurrent
  consumers, with Go's key layout; ``get()`` waits on a watch for a put;
* the priority queue serves priority 0 first and FIFO within a priority, with Go's
  key layout, also under concurrent producers of one priority;
* a put or take whose answer is lost (the request applied, the response dropped by
  a wrapper around the real client) is settled through its receipt: applied once,
  never twice, never dropped - and a take settled only after its call failed is
  handed to the next ``get()``; a consume, release or remove lost *before* etcd
  applied it is settled as not applied and sent again (not taken for a lost claim
  or an item already gone);
* the at-least-once queue: a claim hides the item from others, ``release()`` or the
  end of the claimer's session hands it back (to a consumer waiting in ``get()``),
  ``consume()`` deletes it atomically with extra ops and refuses once the claim is
  gone.

Canonical asyncio tests; ``tests/_sync/test_queue.py`` is generated from this file.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from etcdsync import AsyncClient, Compare, Op, QueueItem, errors
from etcdsync._async.concurrency.locking_queue import AsyncClaim, AsyncLockingQueue
from etcdsync._async.concurrency.priority_queue import AsyncPriorityQueue
from etcdsync._async.concurrency.queue import AsyncQueue
from etcdsync._backends._async import Event, spawn, wait_event

from .lock_helpers import collect, count_keys

TTL = 5


class LossyClient:
    """A real client whose txn answers can be lost on purpose (a member crashing
    after applying a write looks the same to the caller): ``lose`` answers are
    dropped after etcd applied the txn; ``drop`` guarded txns fail with
    ``Unavailable`` before they are sent (lost on the way: never applied); while ``down`` is set,
    every txn fails with it before it is sent."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self.lose = 0
        self.drop = 0
        self.down: errors.EtcdError | None = None
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def txn(self, compare: Any = (), success: Any = (), failure: Any = (), **kw: Any) -> Any:
        if self.down is not None:
            raise self.down
        if self.drop and compare:  # a write (guarded by its receipt), not a read
            self.drop -= 1
            self.lost += 1
            raise errors.Unavailable("test: the request was lost on its way")
        response = await self._client.txn(compare, success, failure, **kw)
        if self.lose:
            self.lose -= 1
            self.lost += 1
            raise errors.Unavailable("test: the answer was lost")
        return response


async def _values(etcd: AsyncClient, prefix: str) -> list[bytes]:
    response = await etcd.get(prefix, prefix=True, sort_order="ascend", sort_target="create")
    return [kv.value for kv in response.kvs]


# --- FIFO queue ---------------------------------------------------------------------------


async def test_fifo_order_layout_and_empty_queue(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}jobs"
    async with AsyncClient(etcd_endpoint) as etcd:
        queue = etcd.queue(name, ttl=TTL)
        assert await queue.try_get() is None
        with pytest.raises(errors.QueueTimeout):
            await queue.get(timeout=0.2)
        revisions = [await queue.put(f"job-{i}") for i in range(5)]
        assert revisions == sorted(revisions)
        assert await queue.size() == 5
        # Go's layout: <name>/<unix ns>, no lease, the value as put.
        stored = (await etcd.get(f"{name}/", prefix=True, sort_target="create")).kvs
        assert [kv.value for kv in stored] == [f"job-{i}".encode() for i in range(5)]
        for kv in stored:
            assert kv.key.startswith(f"{name}/".encode()) and kv.key.rsplit(b"/", 1)[1].isdigit()
            assert kv.lease == 0
        assert [kv.create_revision for kv in stored] == revisions
        # The receipts live outside the items' prefix, bound to the session's lease.
        receipts = (await etcd.get(f"__{name}/receipts/", prefix=True)).kvs
        assert len(receipts) == 1 and receipts[0].lease != 0

        taken: list[QueueItem] = [await queue.get(timeout=5) for _ in range(5)]
        assert [item.value for item in taken] == [f"job-{i}".encode() for i in range(5)]
        assert [item.text for item in taken] == [f"job-{i}" for i in range(5)]
        assert [item.create_revision for item in taken] == revisions
        assert all(a.revision < b.revision for a, b in itertools.pairwise(taken))
        assert taken[0].revision > revisions[-1]
        assert await queue.size() == 0 and await queue.try_get() is None

        with pytest.raises(errors.InvalidRequest):
            await queue.put(42)  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidRequest):
            etcd.queue("")


async def test_get_waits_for_a_put(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}jobs"
    results: list[Any] = []
    got = Event()

    async def consumer() -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            item = await etcd.queue(name, ttl=TTL).get(timeout=20)
            results.append(item)
            got.set()

    async with AsyncClient(etcd_endpoint) as etcd:
        task = spawn(collect, [], consumer, name="consumer")
        assert not await wait_event(got, 0.5)  # nothing to take yet
        put_revision = await etcd.queue(name, ttl=TTL).put(b"late")
        assert await wait_event(got, 10)
        await task.join(10)
        (item,) = results
        assert item.value == b"late" and item.create_revision == put_revision
        assert item.revision > put_revision
        assert await count_keys(etcd, f"{name}/") == 0


async def test_concurrent_consumers_take_each_item_once_in_order(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}jobs"
    producers, per_producer, consumers = 2, 60, 4
    taken: list[list[QueueItem]] = [[] for _ in range(consumers)]
    done: list[Any] = []

    async def consume(slot: int) -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            queue = etcd.queue(name, ttl=TTL)
            while True:
                item = await queue.get(timeout=20)
                if item.value == b"stop":
                    return
                taken[slot].append(item)

    async def produce(producer: int) -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            queue = etcd.queue(name, ttl=TTL)
            for i in range(per_producer):
                await queue.put(f"{producer}:{i}")

    tasks = [spawn(collect, done, consume, slot, name=f"c{slot}") for slot in range(consumers)]
    writers = [spawn(collect, done, produce, p, name=f"p{p}") for p in range(producers)]
    for writer in writers:
        assert await writer.join(60)
    async with AsyncClient(etcd_endpoint) as etcd:
        for _ in range(consumers):
            await etcd.queue(name, ttl=TTL).put(b"stop")
        for task in tasks:
            assert await task.join(60)
        assert done == [None] * (producers + consumers), done
        assert await count_keys(etcd, f"{name}/") == 0

    every = sorted(itertools.chain(*taken), key=lambda item: item.revision)
    values = [item.value.decode() for item in every]
    assert sorted(values) == sorted(
        f"{p}:{i}" for p in range(producers) for i in range(per_producer)
    )
    assert len({item.revision for item in every}) == len(every)  # one take per revision
    for p in range(producers):
        mine = [int(v.split(":")[1]) for v in values if v.startswith(f"{p}:")]
        assert mine == list(range(per_producer)), f"producer {p} out of order: {mine}"
    assert sum(1 for slot in taken if slot) >= 2  # the work was shared


async def test_namespaced_queue_stays_inside(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        ns = etcd.namespace(f"{prefix}tenant/")
        queue = ns.queue("q", ttl=TTL)
        await queue.put(b"x")
        assert (await etcd.get(f"{prefix}tenant/q/", prefix=True)).count == 1
        assert (await etcd.get(f"{prefix}tenant/__q/receipts/", prefix=True)).count == 1
        item = await queue.get(timeout=5)
        assert item.key.startswith(b"q/") and item.value == b"x"
        assert (await etcd.get(prefix, prefix=True, keys_only=True)).count == 1  # the receipt


async def test_items_put_by_go_layout_are_served(etcd_endpoint: str, prefix: str) -> None:
    # What Go's Queue.Enqueue writes: put-if-absent of <name>/<unix ns>, no lease.
    name = f"{prefix}jobs"
    async with AsyncClient(etcd_endpoint) as etcd:
        for i, stamp in enumerate((1700000000000000000, 1600000000000000000)):
            key = f"{name}/{stamp}"
            await etcd.txn([Compare.version(key) == 0], [Op.put(key, f"go-{i}")])
        queue = etcd.queue(name, ttl=TTL)
        # Served by create revision, not by key: the second put has the smaller key.
        assert (await queue.get(timeout=5)).value == b"go-0"
        assert (await queue.get(timeout=5)).value == b"go-1"


# --- lost answers ----------------------------------------------------------------------------


async def test_lost_answers_are_settled_through_the_receipt(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}jobs"
    async with AsyncClient(etcd_endpoint) as etcd:
        lossy = LossyClient(etcd)
        queue = AsyncQueue(lossy, name, ttl=TTL)  # type: ignore[arg-type]
        await queue.put(b"first")  # creates the receipt
        # The put is applied, its answer lost: settled as applied, not repeated.
        lossy.lose = 1
        revision = await queue.put(b"second")
        assert lossy.lost == 1
        assert await _values(etcd, f"{name}/") == [b"first", b"second"]
        assert (await etcd.get(f"{name}/", prefix=True, sort_target="create")).kvs[
            1
        ].create_revision == revision
        # A take applied with its answer lost: the item is returned all the same.
        lossy.lose = 1
        item = await queue.get(timeout=5)
        assert lossy.lost == 2 and item.value == b"first"
        assert await _values(etcd, f"{name}/") == [b"second"]
        # A put that never left the client: refused at once, nothing to settle.
        lossy.down = errors.ConnectionFailedError("test: no member reachable")
        with pytest.raises(errors.ConnectionFailedError):
            await queue.put(b"never")
        # A put whose outcome stays unknown past its deadline (the settling fails too).
        lossy.down = errors.Unavailable("test: the member is down")
        with pytest.raises(errors.QueueOutcomeUnknownError) as unknown:
            await queue.put(b"unknown", timeout=0.3)
        assert unknown.value.key is not None and unknown.value.key.startswith(f"{name}/".encode())
        lossy.down = None
        # The next write settles it first: it was not applied, and now never will be.
        await queue.put(b"third")
        assert await _values(etcd, f"{name}/") == [b"second", b"third"]
        # A receipt deleted behind the queue's back is made anew (nothing is lost).
        assert (await etcd.delete(f"__{name}/receipts/", prefix=True)).deleted == 1
        await queue.put(b"fourth")
        assert await _values(etcd, f"{name}/") == [b"second", b"third", b"fourth"]
        assert (await etcd.get(f"__{name}/receipts/", prefix=True)).count == 1


async def test_take_settled_after_its_call_failed_goes_to_the_next_get(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}jobs"
    async with AsyncClient(etcd_endpoint) as etcd:
        lossy = LossyClient(etcd)
        queue = AsyncQueue(lossy, name, ttl=TTL)  # type: ignore[arg-type]
        await queue.put(b"a")
        await queue.put(b"b")

        # The take is applied, its answer lost, and the cluster stays unreachable
        # for the settling until the deadline: the outcome is unknown for now.
        class DownAfterLoss(LossyClient):
            async def txn(self, *args: Any, **kw: Any) -> Any:
                try:
                    return await super().txn(*args, **kw)
                except errors.Unavailable:
                    self.down = errors.Unavailable("test: the member is down")
                    raise

        flaky = DownAfterLoss(etcd)
        consumer = AsyncQueue(flaky, name, ttl=TTL)  # type: ignore[arg-type]
        await consumer.put(b"c")  # creates this consumer's receipt
        flaky.lose = 1
        with pytest.raises(errors.QueueOutcomeUnknownError):
            await consumer.get(timeout=0.5)
        assert await _values(etcd, f"{name}/") == [b"b", b"c"]  # "a" was taken
        flaky.down = None
        # The next get() settles the pending take and hands out "a" - not "b".
        assert (await consumer.get(timeout=5)).value == b"a"
        assert (await consumer.get(timeout=5)).value == b"b"
        assert await _values(etcd, f"{name}/") == [b"c"]


async def test_writes_lost_before_they_were_applied_are_sent_again(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}jobs"
    async with AsyncClient(etcd_endpoint) as etcd:
        lossy = LossyClient(etcd)
        queue = AsyncLockingQueue(lossy, name, ttl=TTL)  # type: ignore[arg-type]
        await queue.put(b"a")
        await queue.put(b"b")
        claim = await queue.get(timeout=5)
        # Settled as not applied (fenced): consumed all the same, not "claim lost".
        lossy.drop = 1
        await claim.consume()
        assert lossy.lost == 1
        assert await _values(etcd, f"{name}/items/") == [b"b"]
        claim = await queue.get(timeout=5)
        lossy.drop = 1
        assert await claim.release() is True  # not "the claim was gone already"
        assert await queue.claimed() == 0
        # Past the deadline once settled: QueueTimeout, nothing written, claim kept.
        claim = await queue.get(timeout=5)
        lossy.drop = 1
        with pytest.raises(errors.QueueTimeout):
            await claim.consume(timeout=0)
        assert claim.held and await queue.size() == 1 and await queue.claimed() == 1
        await claim.consume()
        assert await queue.size() == 0
        # remove(): True, not "taken already".
        fifo = AsyncQueue(lossy, f"{name}-fifo", ttl=TTL)  # type: ignore[arg-type]
        item_id = await fifo.put(b"x")
        lossy.drop = 1
        assert await fifo.remove(item_id) is True
        assert await fifo.size() == 0 and lossy.lost == 4


# --- priority queue -----------------------------------------------------------------------------


async def test_priority_order_fifo_within_a_priority_and_go_layout(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}tasks"
    async with AsyncClient(etcd_endpoint) as etcd:
        queue = etcd.priority_queue(name, ttl=TTL)
        puts = [("low-1", 9), ("urgent-1", 0), ("mid-1", 5), ("low-2", 9), ("urgent-2", 0)]
        for value, priority in puts:
            await queue.put(value, priority)
        await queue.put("mid-2", 5)
        keys = sorted(kv.key.decode() for kv in (await etcd.get(f"{name}/", prefix=True)).kvs)
        assert keys == [
            f"{name}/00000/{0:016d}",
            f"{name}/00000/{1:016d}",
            f"{name}/00005/{0:016d}",
            f"{name}/00005/{1:016d}",
            f"{name}/00009/{0:016d}",
            f"{name}/00009/{1:016d}",
        ]
        for level in ("00000", "00005", "00009"):
            assert (await etcd.get(f"__{name}/{level}")).kv is not None  # Go's bookkeeping key
        order = [(await queue.get(timeout=5)).text for _ in range(6)]
        assert order == ["urgent-1", "urgent-2", "mid-1", "mid-2", "low-1", "low-2"]
        # After the level emptied, numbering restarts; order is kept by the key.
        await queue.put("again", 5)
        assert (await etcd.get(f"{name}/00005/", prefix=True)).kvs[0].key.endswith(b"/" + b"0" * 16)
        for bad in (-1, 65536, 1.5, True, "1"):
            with pytest.raises(errors.InvalidRequest):
                await queue.put("x", bad)  # type: ignore[arg-type]


class SlowReader:
    """A real client that writes ``late`` (an urgent item) right after it read the head
    of a priority queue for a consumer, before the consumer's take."""

    def __init__(self, client: AsyncClient, late: Any) -> None:
        self._client = client
        self._late = late

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def get(self, *args: Any, **kw: Any) -> Any:
        response = await self._client.get(*args, **kw)
        if kw.get("sort_target") == "key" and self._late is not None:
            late, self._late = self._late, None
            await late()
        return response


async def test_an_urgent_item_put_between_read_and_take_is_served_first(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}tasks"
    async with AsyncClient(etcd_endpoint) as etcd:
        producer = etcd.priority_queue(name, ttl=TTL)
        await producer.put("routine", 5)

        async def urgent() -> None:
            await producer.put("urgent", 0)

        consumer = AsyncPriorityQueue(SlowReader(etcd, urgent), name, ttl=TTL)  # type: ignore[arg-type]
        # The consumer read only "routine"; "urgent" arrived before its take.
        assert (await consumer.get(timeout=5)).text == "urgent"
        assert (await consumer.get(timeout=5)).text == "routine"


async def test_concurrent_producers_of_one_priority_keep_every_item(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}tasks"
    producers, per_producer = 3, 25
    done: list[Any] = []

    async def produce(producer: int) -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            queue = etcd.priority_queue(name, ttl=TTL)
            for i in range(per_producer):
                await queue.put(f"{producer}:{i}", 7)

    tasks = [spawn(collect, done, produce, p, name=f"p{p}") for p in range(producers)]
    for task in tasks:
        assert await task.join(60)
    assert done == [None] * producers
    async with AsyncClient(etcd_endpoint) as etcd:
        stored = (await etcd.get(f"{name}/00007/", prefix=True)).kvs
        values = [kv.value.decode() for kv in stored]  # in key (sequence) order
        assert len(values) == producers * per_producer == len(set(values))
        sequences = [int(kv.key.rsplit(b"/", 1)[1]) for kv in stored]
        assert sequences == list(range(producers * per_producer))
        # Within a producer, key order is put order: FIFO per producer.
        for p in range(producers):
            mine = [int(v.split(":")[1]) for v in values if v.startswith(f"{p}:")]
            assert mine == list(range(per_producer))


# --- at-least-once queue ---------------------------------------------------------------------


async def test_claims_hide_items_until_consumed_or_released(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}work"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        queue = etcd.locking_queue(name, ttl=TTL)
        theirs = other.locking_queue(name, ttl=TTL)
        for i in range(3):
            await queue.put(f"item-{i}")
        first = await queue.get(timeout=5)
        assert isinstance(first, AsyncClaim) and first.value == b"item-0" and first.held
        assert await queue.size() == 3 and await queue.claimed() == 1  # still in the queue
        claim_kv = (await etcd.get(first.claim_key)).kv
        assert claim_kv is not None and claim_kv.lease == first.session.lease_id
        assert claim_kv.create_revision == first.token
        second = await theirs.get(timeout=5)
        assert second.value == b"item-1"  # the claimed head is skipped
        assert await second.release() is True and not second.held
        with pytest.raises(errors.QueueError):
            await second.consume()  # released already
        again = await theirs.get(timeout=5)
        assert again.key == second.key and again.token > second.token  # served again
        revision = await first.consume()
        assert revision > first.token
        assert (await etcd.get(first.key)).kv is None and (
            await etcd.get(first.claim_key)
        ).kv is None
        assert await queue.size() == 2 and await queue.claimed() == 1
        async with again:
            pass  # a block that ends normally consumes
        assert (await etcd.get(again.key)).kv is None
        with pytest.raises(RuntimeError):
            async with await queue.get(timeout=5) as third:
                assert third.value == b"item-2"
                raise RuntimeError("processing failed")
        assert (await etcd.get(third.key)).kv is not None  # released, not consumed
        assert await queue.claimed() == 0
        last = await theirs.get(timeout=5)
        assert last.key == third.key
        # consume() commits the consumer's own writes in the same txn.
        await last.consume([Op.put(f"{prefix}result/2", "done")])
        assert (await etcd.get(f"{prefix}result/2")).value == b"done"
        assert await queue.size() == 0 and await theirs.try_get() is None


async def test_a_dead_consumers_claim_returns_the_item_to_a_waiting_consumer(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}work"
    results: list[Any] = []
    got = Event()

    async def waiter() -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            claim = await etcd.locking_queue(name, ttl=TTL).get(timeout=20)
            results.append((claim.key, claim.value))
            got.set()
            await claim.consume()

    async with AsyncClient(etcd_endpoint) as etcd:
        queue = etcd.locking_queue(name, ttl=TTL)
        await queue.put(b"only")
        session = await etcd.session(ttl=TTL)
        claimer = etcd.locking_queue(name, session=session)
        claim = await claimer.get(timeout=5)
        task = spawn(collect, results, waiter, name="waiter")
        assert not await wait_event(got, 0.5)  # the only item is claimed
        # The claimer "dies": its lease goes (revoked here; expiry works the same).
        await session.close()
        assert await wait_event(got, 10)
        await task.join(10)
        assert results[0] == (claim.key, b"only")
        # The dead claimer cannot consume it any more: nothing is deleted.
        assert not claim.held
        with pytest.raises(errors.ClaimLostError):
            await claim.consume()
        assert await queue.size() == 0  # consumed once, by the waiter


async def test_consume_after_the_claim_expired_is_refused(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}work"
    async with AsyncClient(etcd_endpoint) as etcd:
        queue = etcd.locking_queue(name, ttl=TTL)
        await queue.put(b"x")
        claim = await queue.get(timeout=5)
        await etcd.delete(claim.claim_key)  # as if its lease had expired
        with pytest.raises(errors.ClaimLostError):
            await claim.consume([Op.put(f"{prefix}effect", "1")])
        assert (await etcd.get(f"{prefix}effect")).kv is None  # the extra ops did not run
        assert (await etcd.get(claim.key)).kv is not None
        again = await queue.get(timeout=5)
        assert again.key == claim.key
        await again.consume()
