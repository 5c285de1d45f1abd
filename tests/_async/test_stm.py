"""STM against a real etcd: commits, conflicts and retries per isolation level, the
anomalies the weaker levels allow, retry exhaustion, prefetch, timeouts.

Every anomaly is made to happen deterministically: the function itself makes a
concurrent write (through a second client) between its reads, or between its read
and its commit, on the attempts the test chooses.

Canonical asyncio tests; ``tests/_sync/test_stm.py`` is generated from this file.
"""

from __future__ import annotations

from typing import Any

import pytest

from etcdsync import AsyncClient, AsyncSTM, Isolation, Op, errors
from etcdsync._async.concurrency.stm import run_stm

SERIALIZABLE_LEVELS = [
    Isolation.SERIALIZABLE_SNAPSHOT,
    Isolation.SERIALIZABLE,
    Isolation.REPEATABLE_READS,
]


def _int(value: bytes | None) -> int:
    return int(value or b"0")


class _CountingClient:
    """Passes every call to a real client and counts the requests the STM makes."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[str] = []

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("get")
        return await self._client.get(*args, **kwargs)

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("txn")
        return await self._client.txn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def test_commit_applies_the_writes_and_returns_the_result(
    etcd_endpoint: str, prefix: str
) -> None:
    a, b, gone = f"{prefix}a", f"{prefix}b", f"{prefix}gone"
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(a, "100")
        await etcd.put(gone, "x")
        seen: list[Any] = []

        async def transfer(stm: AsyncSTM) -> str:
            assert stm.attempt == 1 and stm.isolation is Isolation.SERIALIZABLE_SNAPSHOT
            balance_a = _int(await stm.get(a))
            assert await stm.get(b) is None  # absent key
            stm.put(a, str(balance_a - 30))
            stm.put(b, b"30")
            stm.delete(gone)
            # Reads of written keys see the buffered writes; rev() the one read.
            seen.extend([await stm.get(a), await stm.get(b), await stm.get(gone)])
            seen.append(await stm.rev(a))
            return "done"

        revision_a = (await etcd.get(a)).kvs[0].mod_revision
        assert await etcd.stm(transfer) == "done"
        assert seen == [b"70", b"30", None, revision_a]
        assert (await etcd.get(a)).kvs[0].value == b"70"
        assert (await etcd.get(b)).kvs[0].value == b"30"
        assert (await etcd.get(gone)).kvs == []
        # One txn: both writes at one revision.
        assert (await etcd.get(a)).kvs[0].mod_revision == (await etcd.get(b)).kvs[0].mod_revision


@pytest.mark.parametrize("isolation", SERIALIZABLE_LEVELS, ids=lambda level: level.value)
async def test_a_concurrent_write_makes_the_function_run_again(
    etcd_endpoint: str, prefix: str, isolation: Isolation
) -> None:
    """Lost update prevented: fn reads x, another client changes x, fn writes x+1."""
    x = f"{prefix}x"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        await etcd.put(x, "0")
        observed: list[int] = []

        async def increment(stm: AsyncSTM) -> int:
            value = _int(await stm.get(x))
            observed.append(value)
            if stm.attempt == 1:
                await other.put(x, "10")  # lands between the read and the commit
            stm.put(x, str(value + 1))
            return stm.attempt

        assert await etcd.stm(increment, isolation=isolation) == 2
        assert observed == [0, 10]
        assert (await etcd.get(x)).kvs[0].value == b"11"  # the other write survived


async def test_read_committed_allows_a_lost_update(etcd_endpoint: str, prefix: str) -> None:
    x = f"{prefix}x"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        await etcd.put(x, "0")
        attempts: list[int] = []

        async def increment(stm: AsyncSTM) -> None:
            attempts.append(stm.attempt)
            value = _int(await stm.get(x))
            await other.put(x, "10")  # a concurrent increment...
            stm.put(x, str(value + 1))

        await etcd.stm(increment, isolation=Isolation.READ_COMMITTED)
        # ...is lost: no compare, so the commit applied over it, in one attempt.
        assert attempts == [1]
        assert (await etcd.get(x)).kvs[0].value == b"1"


@pytest.mark.parametrize(
    ("isolation", "sums_seen", "total"),
    [
        # One snapshot: the concurrent transfer is invisible; the commit then fails
        # (a and b changed) and the retry sees the new, consistent state.
        (Isolation.SERIALIZABLE_SNAPSHOT, [100, 100], b"100"),
        (Isolation.SERIALIZABLE, [100, 100], b"100"),
        # Read skew: b is read after the transfer, a before it (sum 150, a state that
        # never existed); the commit's compares catch it and the retry is consistent.
        (Isolation.REPEATABLE_READS, [150, 100], b"100"),
        # Read skew, and the commit built on it applies.
        (Isolation.READ_COMMITTED, [150], b"150"),
    ],
    ids=lambda v: v.value if isinstance(v, Isolation) else None,
)
async def test_read_skew_per_level(
    etcd_endpoint: str,
    prefix: str,
    isolation: Isolation,
    sums_seen: list[int],
    total: bytes,
) -> None:
    """Accounts a=50, b=50; between fn's read of a and its read of b, another client
    moves 50 from a to b.  fn then writes the total it read."""
    a, b, out = f"{prefix}a", f"{prefix}b", f"{prefix}total"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        await etcd.put(a, "50")
        await etcd.put(b, "50")
        sums: list[int] = []

        async def audit(stm: AsyncSTM) -> None:
            balance_a = _int(await stm.get(a))
            if stm.attempt == 1:
                await other.txn(success=[*_puts({a: "0", b: "100"})])
            balance_b = _int(await stm.get(b))
            sums.append(balance_a + balance_b)
            stm.put(out, str(balance_a + balance_b))

        await etcd.stm(audit, isolation=isolation)
        assert sums == sums_seen
        assert (await etcd.get(out)).kvs[0].value == total


def _puts(values: dict[str, str]) -> list[Op]:
    return [Op.put(key, value) for key, value in values.items()]


@pytest.mark.parametrize(
    ("isolation", "attempts"),
    [(Isolation.SERIALIZABLE_SNAPSHOT, 2), (Isolation.SERIALIZABLE, 1)],
    ids=lambda v: v.value if isinstance(v, Isolation) else None,
)
async def test_only_serializable_snapshot_checks_blind_writes(
    etcd_endpoint: str, prefix: str, isolation: Isolation, attempts: int
) -> None:
    """fn reads a and writes b without reading it; b changes after fn's snapshot."""
    a, b = f"{prefix}a", f"{prefix}b"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        await etcd.put(a, "1")
        runs: list[int] = []

        async def copy(stm: AsyncSTM) -> None:
            runs.append(stm.attempt)
            value = await stm.get(a)
            assert value is not None
            if stm.attempt == 1:
                await other.put(b, "concurrent")
            stm.put(b, value)

        await etcd.stm(copy, isolation=isolation)
        assert len(runs) == attempts
        assert (await etcd.get(b)).kvs[0].value == b"1"


async def test_retries_exhausted_raise_a_typed_error_and_write_nothing(
    etcd_endpoint: str, prefix: str
) -> None:
    x, out = f"{prefix}x", f"{prefix}out"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        runs: list[int] = []

        async def always_conflicts(stm: AsyncSTM) -> None:
            runs.append(stm.attempt)
            await stm.get(x)
            await other.put(x, str(stm.attempt))
            stm.put(out, "written")

        with pytest.raises(errors.STMConflictError) as caught:
            await etcd.stm(always_conflicts, retries=3)
        assert caught.value.attempts == 4
        assert runs == [1, 2, 3, 4]
        assert (await etcd.get(out)).kvs == []


async def test_the_deadline_ends_a_conflicting_run_with_stm_timeout(
    etcd_endpoint: str, prefix: str
) -> None:
    x = f"{prefix}x"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:

        async def always_conflicts(stm: AsyncSTM) -> None:
            await stm.get(x)
            await other.put(x, str(stm.attempt))
            stm.put(x, "mine")

        with pytest.raises(errors.STMTimeout) as caught:
            await etcd.stm(always_conflicts, retries=10**6, timeout=0.5)
        assert isinstance(caught.value, errors.Timeout)
        assert caught.value.attempts >= 1
        assert (await etcd.get(x)).kvs[0].value != b"mine"


async def test_an_exception_in_fn_aborts_without_writing(etcd_endpoint: str, prefix: str) -> None:
    x = f"{prefix}x"
    async with AsyncClient(etcd_endpoint) as etcd:
        kept: list[AsyncSTM] = []

        async def fails(stm: AsyncSTM) -> None:
            kept.append(stm)
            stm.put(x, "never")
            raise KeyError("boom")

        with pytest.raises(KeyError):
            await etcd.stm(fails)
        assert (await etcd.get(x)).kvs == []
        with pytest.raises(errors.STMError):
            kept[0].put(x, "after the attempt")  # a handle lives for its attempt only


@pytest.mark.parametrize("isolation", list(Isolation), ids=lambda level: level.value)
async def test_prefetch_reads_known_keys_in_one_request(
    etcd_endpoint: str, prefix: str, isolation: Isolation
) -> None:
    keys = [f"{prefix}k{i}" for i in range(3)]
    async with AsyncClient(etcd_endpoint) as etcd:
        for i, key in enumerate(keys):
            await etcd.put(key, str(i))
        spy = _CountingClient(etcd)
        values: list[Any] = []

        async def read_all(stm: AsyncSTM) -> None:
            values.extend([await stm.get(key) for key in keys])
            values.append(stm.snapshot_revision)
            stm.put(keys[0], "changed")

        await run_stm(spy, read_all, isolation=isolation, prefetch=keys)
        # One txn for the three reads, one for the commit: no per-key request.
        assert spy.calls == ["txn", "txn"]
        revision = (await etcd.get(keys[1])).header.revision
        assert values[:3] == [b"0", b"1", b"2"]
        if isolation.pins_snapshot:
            assert 0 < values[3] < revision  # the prefetch's revision
        assert (await etcd.get(keys[0])).kvs[0].value == b"changed"


async def test_a_conflict_refetches_the_read_set_in_the_failed_commit(
    etcd_endpoint: str, prefix: str
) -> None:
    a, b = f"{prefix}a", f"{prefix}b"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        await etcd.put(a, "1")
        await etcd.put(b, "2")
        spy = _CountingClient(etcd)

        async def swap(stm: AsyncSTM) -> None:
            value_a, value_b = await stm.get_many([a, b])
            if stm.attempt == 1:
                await other.put(a, "10")
            assert value_a is not None and value_b is not None
            stm.put(a, value_b)
            stm.put(b, value_a)

        await run_stm(spy, swap, isolation=Isolation.SERIALIZABLE)
        # read (1 txn), failed commit (re-reads a and b), commit: no read on attempt 2.
        assert spy.calls == ["txn", "txn", "txn"]
        assert (await etcd.get(a)).kvs[0].value == b"2"
        assert (await etcd.get(b)).kvs[0].value == b"10"


async def test_serializable_reads_stay_at_the_snapshot(etcd_endpoint: str, prefix: str) -> None:
    a, b = f"{prefix}a", f"{prefix}b"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        await etcd.put(b, "old")
        seen: list[Any] = []

        async def read(stm: AsyncSTM) -> None:
            await stm.get(a)
            snapshot = stm.snapshot_revision
            await other.put(b, "new")
            seen.extend([snapshot, await stm.get(b), stm.snapshot_revision])

        await etcd.stm(read, isolation=Isolation.SERIALIZABLE)
        assert seen[0] > 0 and seen[1:] == [b"old", seen[0]]


async def test_stm_runs_inside_a_namespace(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        space = etcd.namespace(prefix)
        await space.put("n", "41")

        async def bump(stm: AsyncSTM) -> int:
            value = _int(await stm.get("n")) + 1
            stm.put("n", str(value))
            return value

        assert await space.stm(bump, prefetch=["n"]) == 42
        assert (await etcd.get(f"{prefix}n")).kvs[0].value == b"42"


async def test_bad_arguments_are_refused_at_once(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:

        async def fn(stm: AsyncSTM) -> None:
            raise AssertionError("must not run")

        with pytest.raises(errors.InvalidRequest):
            await etcd.stm(fn, isolation="snapshot-ish")
        with pytest.raises(errors.InvalidRequest):
            await etcd.stm(fn, retries=-1)
        with pytest.raises(errors.InvalidRequest):
            await etcd.stm(fn, prefetch="one-key")
        with pytest.raises(errors.InvalidRequest):
            await etcd.stm(fn, timeout=-1)
        assert Isolation.of("READ_COMMITTED") is Isolation.READ_COMMITTED
