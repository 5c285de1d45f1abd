"""Live config against a real etcd: snapshots, atomic updates, validation, reloads."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from helpers import pings

from etcdsync import AsyncClient, Op, errors
from etcdsync._backends._async import Event, wait_event
from etcdsync.config_types import ConfigSnapshot
from etcdsync.testing.proxy import FaultProxy


def _j(value: Any) -> str:
    return json.dumps(value)


async def _converge(cfg: Any, expected: dict[str, Any], timeout: float = 15) -> ConfigSnapshot:
    """Wait (on the watcher's change notifications) until the view equals ``expected``."""
    deadline = time.monotonic() + timeout
    snapshot: ConfigSnapshot = cfg.snapshot
    while snapshot.to_dict() != expected:
        left = deadline - time.monotonic()
        assert left > 0, f"view {snapshot!r} never became {expected!r}; errors {list(cfg.errors)}"
        try:
            snapshot = await cfg.wait_for_change(snapshot.revision, timeout=left)
        except errors.Timeout:
            snapshot = cfg.snapshot
    return snapshot


class _Recorder:
    """A subscriber that records snapshots and signals each arrival."""

    def __init__(self) -> None:
        self.calls: list[ConfigSnapshot] = []
        self.arrived = Event()

    def __call__(self, snapshot: ConfigSnapshot) -> None:
        self.calls.append(snapshot)
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 5) -> list[ConfigSnapshot]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(self.calls)} of {count} snapshots delivered"
            await wait_event(self.arrived, left)
            self.arrived.clear()
        return list(self.calls)


async def test_snapshot_at_one_revision_with_relative_keys(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "db/port", "5432")
        await etcd.put(prefix + "db/host", _j("db.local"))
        last = await etcd.put(prefix + "features", _j({"beta": True}))
        await etcd.put(prefix[:-1] + "-sibling", "not ours")
        async with etcd.config(prefix) as cfg:
            snapshot = cfg.snapshot
            assert dict(snapshot) == {
                "db/port": 5432,
                "db/host": "db.local",
                "features": {"beta": True},
            }
            assert snapshot.revision >= last.revision
            assert snapshot["db/port"] == 5432 and "features" in snapshot
            with pytest.raises(TypeError):
                snapshot["x"] = 1  # type: ignore[index]
        assert not cfg.running
        assert cfg.snapshot is snapshot  # the last snapshot stays readable


async def test_txn_of_three_keys_is_one_update(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "a", "0")
        async with etcd.config(prefix) as cfg:
            recorder = _Recorder()
            cfg.subscribe(recorder)
            txn = await etcd.txn(
                [], [Op.put(prefix + k, str(i)) for i, k in enumerate(("a", "b", "c"), 1)]
            )
            (first,) = await recorder.wait_for(1)
            assert dict(first) == {"a": 1, "b": 2, "c": 3}
            assert first.revision == txn.revision
            # A later write arrives as the next call: nothing came in between.
            marker = await etcd.put(prefix + "d", "4")
            calls = await recorder.wait_for(2)
            assert [c.revision for c in calls] == [txn.revision, marker.revision]
            assert cfg.snapshot is calls[-1]


async def test_subscriber_initial_and_unsubscribe(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "a", "1")
        async with etcd.config(prefix) as cfg:
            recorder = _Recorder()
            unsubscribe = cfg.subscribe(recorder, initial=True)
            (initial,) = await recorder.wait_for(1)
            assert initial is cfg.snapshot
            unsubscribe()
            other = _Recorder()
            cfg.subscribe(other)
            put = await etcd.put(prefix + "a", "2")
            (seen,) = await other.wait_for(1)
            assert seen.revision == put.revision
            assert recorder.calls == [initial]  # unsubscribed: not called again


async def test_invalid_json_keeps_the_last_good_config(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "a", "1")
        async with etcd.config(prefix) as cfg:
            good = cfg.snapshot
            reported: list[errors.EtcdError] = []
            got_error = Event()

            def on_error(error: errors.EtcdError) -> None:
                reported.append(error)
                got_error.set()

            cfg.on_error(on_error)
            bad = await etcd.txn([], [Op.put(prefix + "a", "{not json"), Op.put(prefix + "b", "2")])
            assert await wait_event(got_error, 5)
            (error,) = reported
            assert isinstance(error, errors.ConfigValidationError)
            assert error.revision == bad.revision and error.keys == ("a",)
            assert isinstance(error.__cause__, ValueError)  # the JSON error, chained
            assert cfg.rejected is error and cfg.last_error is error
            assert cfg.snapshot is good  # nothing of the bad revision was applied
            fixed = await etcd.put(prefix + "a", "10")
            snapshot = await cfg.wait_for_change(good.revision, timeout=5)
            assert dict(snapshot) == {"a": 10, "b": 2} and snapshot.revision == fixed.revision
            assert cfg.rejected is None
            assert list(cfg.errors) == [error]


async def test_validator_rejects_and_reports(etcd_endpoint: str, prefix: str) -> None:
    def validate(snapshot: ConfigSnapshot) -> None:
        if not 0 < snapshot.get("port", 0) < 65536:
            raise ValueError(f"bad port {snapshot.get('port')!r}")

    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "port", "80")
        async with etcd.config(prefix, validate=validate) as cfg:
            got_error = Event()
            cfg.on_error(lambda error: got_error.set())
            rejected = await etcd.put(prefix + "port", "70000")
            assert await wait_event(got_error, 5)
            assert cfg.rejected is not None and cfg.rejected.revision == rejected.revision
            assert cfg.rejected.keys == ()
            assert "bad port 70000" in str(cfg.rejected)
            assert isinstance(cfg.rejected.__cause__, ValueError)
            assert dict(cfg.snapshot) == {"port": 80}
            await etcd.put(prefix + "port", "8080")
            snapshot = await _converge(cfg, {"port": 8080})
            assert cfg.rejected is None and snapshot is cfg.snapshot
        # A validator returning False rejects too; an invalid start raises.
        with pytest.raises(errors.ConfigValidationError):
            await etcd.config(prefix, validate=lambda snapshot: False).start()
        await etcd.put(prefix + "port", "0")
        with pytest.raises(errors.ConfigValidationError) as caught:
            await etcd.config(prefix, validate=validate).start()
        assert "bad port 0" in str(caught.value)


async def test_deletes_remove_keys(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        for key in ("a", "b", "c"):
            await etcd.put(prefix + key, "1")
        async with etcd.config(prefix) as cfg:
            start = cfg.revision
            deleted = await etcd.delete(prefix + "b")
            snapshot = await cfg.wait_for_change(start, timeout=5)
            assert dict(snapshot) == {"a": 1, "c": 1} and snapshot.revision == deleted.revision
            everything = await etcd.delete(prefix, prefix=True)
            snapshot = await cfg.wait_for_change(snapshot.revision, timeout=5)
            assert dict(snapshot) == {} and snapshot.revision == everything.revision


async def test_decoders(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "n", "42")
        async with etcd.config(prefix, decode="text") as text:
            assert dict(text.snapshot) == {"n": "42"}
        async with etcd.config(prefix, decode="raw") as raw:
            assert dict(raw.snapshot) == {"n": b"42"}
        async with etcd.config(prefix, decode=int) as ints:
            assert dict(ints.snapshot) == {"n": 42}
            got_error = Event()
            ints.on_error(lambda error: got_error.set())
            await etcd.put(prefix + "n", "forty-two")  # int() fails: invalid
            assert await wait_event(got_error, 5)
            assert dict(ints.snapshot) == {"n": 42}
            assert ints.rejected is not None and ints.rejected.keys == ("n",)
        with pytest.raises(errors.InvalidRequest):
            etcd.config(prefix, decode="yaml")
        with pytest.raises(errors.InvalidRequest):
            etcd.config(prefix, validate="not callable")  # type: ignore[arg-type]


async def test_large_prefix_is_paged_at_one_revision(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        for i in range(45):
            await etcd.put(f"{prefix}k{i:03d}", str(i))
        async with etcd.config(prefix, page_size=10) as cfg:
            assert dict(cfg.snapshot) == {f"k{i:03d}": i for i in range(45)}


async def test_wait_for_change_iteration_and_stop(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "a", "1")
        cfg = await etcd.config(prefix).start()
        initial = cfg.snapshot
        with pytest.raises(errors.Timeout):
            await cfg.wait_for_change(timeout=0.2)
        same = await etcd.put(prefix + "a", "1")  # same content: no new snapshot
        changed = await etcd.put(prefix + "a", "2")
        snapshot = await cfg.wait_for_change(initial.revision, timeout=5)
        assert snapshot.revision == changed.revision > same.revision
        iterator = aiter(cfg)
        assert await anext(iterator) is snapshot  # the current one first
        put = await etcd.put(prefix + "b", "3")
        following = await anext(iterator)
        assert following.revision == put.revision and dict(following) == {"a": 2, "b": 3}
        await cfg.stop()
        with pytest.raises(StopAsyncIteration):
            await anext(iterator)
        with pytest.raises(errors.ClientClosedError):
            await cfg.wait_for_change(timeout=1)
        with pytest.raises(errors.ConfigError):
            cfg.subscribe(lambda snapshot: None)
        await cfg.stop()  # idempotent


async def test_client_close_ends_the_watcher(etcd_endpoint: str, prefix: str) -> None:
    etcd = AsyncClient(etcd_endpoint)
    cfg = await etcd.config(prefix).start()
    await etcd.close()
    with pytest.raises(errors.ClientClosedError):
        await cfg.wait_for_change(timeout=5)
    assert not cfg.running
    await cfg.stop()


async def test_compaction_while_partitioned_reloads_and_converges(
    etcd_server_factory: Any,
) -> None:
    """The watcher is cut off while others write and compact: it reloads, no gap."""
    server = etcd_server_factory(extra_args=pings.MEMBER_ARGS)
    with FaultProxy(server.endpoint) as proxy:
        async with (
            AsyncClient(proxy.endpoint, settings=pings.SETTINGS) as watching,
            AsyncClient(server.endpoint) as etcd,
        ):
            await etcd.put("app/a", "1")
            await etcd.put("app/b", "2")
            cfg = await watching.config("app/").start()
            errors_seen: list[errors.EtcdError] = []
            cfg.on_error(errors_seen.append)
            proxy.blackhole()  # a partition: nothing gets through, old or new
            proxy.reset()
            await etcd.delete("app/a")
            await etcd.txn([], [Op.put("app/b", "20"), Op.put("app/c", "30")])
            latest = await etcd.put("elsewhere", "x")
            await etcd.compact(latest.revision)
            proxy.heal()
            snapshot = await _converge(cfg, {"b": 20, "c": 30})
            assert snapshot.revision >= latest.revision
            assert cfg.reloads == 1
            assert any(isinstance(e, errors.CompactedError) for e in errors_seen)
            # And it keeps following after the reload.
            put = await etcd.put("app/d", "4")
            after = await cfg.wait_for_change(snapshot.revision, timeout=5)
            assert after.revision == put.revision and after["d"] == 4
            await cfg.stop()


async def test_server_down_without_writes_resumes_without_reload(
    etcd_server_factory: Any,
) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as etcd:
        await etcd.put("app/a", "1")
        async with etcd.config("app/") as cfg:
            before = cfg.snapshot
            server.crash()
            outage = time.monotonic()
            # Long enough for the watch stream to fail and retry several times.
            while time.monotonic() - outage < 3:
                with pytest.raises(errors.Timeout):
                    await cfg.wait_for_change(timeout=3 - (time.monotonic() - outage))
            server.restart()
            assert cfg.snapshot is before  # nothing changed, nothing was published
            async with AsyncClient(server.endpoint) as writer:
                put = await writer.put("app/a", "2")
            snapshot = await cfg.wait_for_change(before.revision, timeout=15)
            assert dict(snapshot) == {"a": 2} and snapshot.revision == put.revision
            assert cfg.reloads == 0  # the watch resumed where it stopped


async def test_writes_and_compaction_during_restart_converge(etcd_server_factory: Any) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as etcd:
        await etcd.put("app/a", "1")
        await etcd.put("app/b", "1")
        async with etcd.config("app/") as cfg:
            server.crash()
            server.restart()
            # Written from another client while ours may still be reconnecting.
            async with AsyncClient(server.endpoint) as writer:
                await writer.delete("app/a")
                await writer.put("app/b", "2")
                await writer.put("app/c", "3")
                latest = await writer.put("elsewhere", "x")
                await writer.compact(latest.revision)
            snapshot = await _converge(cfg, {"b": 2, "c": 3})
            # Whether the watch resumed in time or hit the compaction and reloaded,
            # the view is the store's: never a state with a gap.
            assert cfg.reloads in (0, 1)
            assert snapshot.revision <= latest.revision
