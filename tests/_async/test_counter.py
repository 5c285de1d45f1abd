"""Counter against a real etcd: atomic changes, decimal storage, bounds, stale handles.

Canonical asyncio tests; ``tests/_sync/test_counter.py`` is generated from this file.
"""

from __future__ import annotations

from typing import Any

import pytest

from etcdsync import AsyncClient, AsyncCounter, errors
from etcdsync._async.concurrency.counter import AsyncCounter as CounterClass
from etcdsync._backends._async import spawn


async def test_add_subtract_value_and_storage(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}hits"
    async with AsyncClient(etcd_endpoint) as etcd:
        hits = etcd.counter(name, initial=10)
        assert isinstance(hits, AsyncCounter)
        assert await hits.value() == 10  # absent key reads as initial
        assert (await etcd.get(name)).kvs == []
        assert await hits.add() == 11
        assert await hits.add(5) == 16
        assert await hits.subtract(20) == -4
        assert await hits.add(-1) == -5
        assert (await etcd.get(name)).kvs[0].value == b"-5"  # decimal text
        assert await etcd.counter(name, initial=10).value() == -5
        assert await hits.set(7) == 7
        assert await hits.value() == 7
        await hits.reset()
        assert (await etcd.get(name)).kvs == []
        assert await hits.value() == 10


async def test_bounds_refuse_a_change_and_write_nothing(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}slots"
    async with AsyncClient(etcd_endpoint) as etcd:
        slots = etcd.counter(name, min=0, max=3)
        assert await slots.add(3) == 3
        revision = (await etcd.get(name)).kvs[0].mod_revision
        with pytest.raises(errors.CounterBoundsError) as caught:
            await slots.add()
        assert (caught.value.value, caught.value.requested, caught.value.bound) == (3, 4, 3)
        assert (await etcd.get(name)).kvs[0].mod_revision == revision  # nothing written
        assert await slots.subtract(3) == 0
        with pytest.raises(errors.CounterBoundsError) as caught:
            await slots.subtract()
        assert (caught.value.value, caught.value.requested, caught.value.bound) == (0, -1, 0)
        with pytest.raises(errors.CounterBoundsError):
            await slots.set(4)
        assert await slots.value() == 0


async def test_a_stale_handle_never_decides_on_what_it_last_saw(
    etcd_endpoint: str, prefix: str
) -> None:
    """h1 last saw 4 (max 5); h2 brought the value to 0: h1.add(2) must give 2, not
    refuse on its stale view, and a stale guess must not overwrite h2's change."""
    name = f"{prefix}c"
    async with AsyncClient(etcd_endpoint) as etcd:
        h1, h2 = etcd.counter(name, max=5), etcd.counter(name, max=5)
        assert await h1.add(4) == 4
        assert await h2.subtract(4) == 0
        assert await h1.add(2) == 2
        assert await h2.add(1) == 3


async def test_concurrent_changes_are_all_counted(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}c"
    returned: list[int] = []
    failures: list[BaseException] = []

    async def worker(etcd: Any) -> None:
        counter = etcd.counter(name)  # one handle per worker...
        try:
            for _ in range(40):
                returned.append(await counter.add())
        except BaseException as exc:
            failures.append(exc)

    async with AsyncClient(etcd_endpoint) as etcd:
        tasks = [spawn(worker, etcd, name=f"w{i}") for i in range(4)]
        for task in tasks:
            assert await task.join(30)
        assert failures == []
        assert sorted(returned) == list(range(1, 161))  # each new value given once
        assert await etcd.counter(name).value() == 160


async def test_a_value_that_is_not_a_number_is_a_typed_error(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}c"
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(name, "twelve")
        with pytest.raises(errors.CounterValueError) as caught:
            await etcd.counter(name).value()
        assert caught.value.raw == b"twelve" and isinstance(caught.value, ValueError)
        with pytest.raises(errors.CounterValueError):
            await etcd.counter(name).add()
        assert (await etcd.get(name)).kvs[0].value == b"twelve"


class _Meddler:
    """Passes calls to a real client, but changes the counter before every txn."""

    def __init__(self, client: Any, other: Any, key: str) -> None:
        self._client, self._other, self._key = client, other, key

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        await self._other.put(self._key, "100")
        return await self._client.txn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def test_the_deadline_ends_a_contended_change(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}c"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        counter = CounterClass(_Meddler(etcd, other, name), name)  # type: ignore[arg-type]
        with pytest.raises(errors.CounterTimeout) as caught:
            await counter.add(timeout=0.3)
        assert isinstance(caught.value, errors.Timeout)
        assert (await etcd.get(name)).kvs[0].value == b"100"


async def test_counter_in_a_namespace(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        assert await etcd.namespace(prefix).counter("n").add(2) == 2
        assert (await etcd.get(f"{prefix}n")).kvs[0].value == b"2"


async def test_bad_arguments_are_refused_at_once(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        for kwargs in ({"min": 5, "max": 1}, {"initial": 9, "max": 3}, {"initial": 1.5}):
            with pytest.raises(errors.InvalidRequest):
                etcd.counter(f"{prefix}c", **kwargs)
        with pytest.raises(errors.InvalidRequest):
            etcd.counter("")
        with pytest.raises(errors.InvalidRequest):
            await etcd.counter(f"{prefix}c").add(True)
