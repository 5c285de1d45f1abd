"""Typed live config against a real etcd: ``etcd.config(prefix, model=...)``.

Nested dataclasses (built by etcdsync), pydantic models (when pydantic is installed),
one instance per revision, an invalid state keeps the last good instance.  Canonical
asyncio tests; ``tests/_sync/test_typed_config.py`` is generated from this file.  The
model mapping alone is tested without etcd in ``tests/test_config_models.py``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, ClassVar

import pytest

from etcdsync import AsyncClient, Op, errors
from etcdsync._backends._async import Event, wait_event
from etcdsync.config_model_types import ModelError
from etcdsync.config_types import ConfigSnapshot


def _j(value: Any) -> str:
    return json.dumps(value)


@dataclasses.dataclass(frozen=True)
class Pool:
    size: int = 4
    timeout: float = 1.5


@dataclasses.dataclass(frozen=True)
class Database:
    host: str
    port: int = 5432
    pool: Pool = dataclasses.field(default_factory=Pool)


@dataclasses.dataclass(frozen=True)
class Settings:
    db: Database
    debug: bool = False
    tags: list[str] = dataclasses.field(default_factory=list)

    built: ClassVar[list[int]] = []  # one entry per instance built (per state decoded)

    def __post_init__(self) -> None:
        Settings.built.append(1)


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


class _Rejections:
    """Feeds on a watcher's errors; waits for the rejection of one revision."""

    def __init__(self, config: Any) -> None:
        self.seen: list[errors.EtcdError] = []
        self.arrived = Event()
        config.on_error(self._record)

    def _record(self, error: errors.EtcdError) -> None:
        self.seen.append(error)
        self.arrived.set()

    async def of(self, revision: int, timeout: float = 5) -> errors.ConfigValidationError:
        deadline = time.monotonic() + timeout
        while True:
            for error in self.seen:
                if isinstance(error, errors.ConfigValidationError) and error.revision == revision:
                    return error
            left = deadline - time.monotonic()
            assert left > 0, f"revision {revision} was not rejected; errors: {self.seen}"
            self.arrived.clear()
            await wait_event(self.arrived, left)


async def test_nested_dataclass_one_instance_per_revision(etcd_endpoint: str, prefix: str) -> None:
    Settings.built.clear()
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "db/host", _j("db1"))
        await etcd.put(prefix + "db/pool/size", _j(8))
        await etcd.put(prefix + "unused/key", _j("ignored"))  # no field: ignored
        async with etcd.config(prefix, model=Settings) as config:
            assert len(Settings.built) == 1  # decoded and built once
            value = config.value
            assert config.snapshot.value is value
            assert value == Settings(db=Database(host="db1", pool=Pool(size=8)))
            Settings.built.clear()  # (the comparison built one too)
            recorder = _Recorder()
            config.subscribe(recorder)
            # One txn of three keys: one new revision, one new instance.
            written = await etcd.txn(
                [],
                [
                    Op.put(prefix + "db/host", _j("db2")),
                    Op.put(prefix + "db/port", _j(6432)),
                    Op.put(prefix + "tags", _j(["a", "b"])),
                ],
            )
            (snapshot,) = await recorder.wait_for(1)
            assert snapshot.revision == written.revision
            assert len(Settings.built) == 1
            assert snapshot.value == Settings(
                db=Database(host="db2", port=6432, pool=Pool(size=8)), tags=["a", "b"]
            )
            assert config.value is snapshot.value
            Settings.built.clear()
            # A rewrite with the same content is built once and publishes nothing.
            await etcd.put(prefix + "db/host", _j("db2"))
            debug = await etcd.put(prefix + "debug", _j(True))
            (_, last) = await recorder.wait_for(2)
            assert last.revision == debug.revision
            assert len(Settings.built) == 2  # the rewrite's state and the debug one
            assert last.value.debug is True and last.value.db == snapshot.value.db


async def test_invalid_state_keeps_the_last_good_instance(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "db/host", _j("db1"))
        async with etcd.config(prefix, model=Settings) as config:
            good = config.value
            rejections = _Rejections(config)
            bad = await etcd.put(prefix + "db/port", _j("not a port"))
            rejected = await rejections.of(bad.revision)
            assert config.rejected is rejected
            assert rejected.keys == ("db/port",)
            assert isinstance(rejected.__cause__, ModelError)
            assert "db/port: expected int" in str(rejected)
            assert config.value is good  # the last good instance stays
            before = config.revision
            fixed = await etcd.put(prefix + "db/port", _j(1234))
            snapshot = await config.wait_for_change(before, timeout=5)
            assert snapshot.revision == fixed.revision and config.rejected is None
            assert config.value.db.port == 1234


async def test_invalid_state_at_start_raises(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "debug", _j("yes"))  # neither a bool nor "true"/"false"
        config = etcd.config(prefix, model=Settings)
        with pytest.raises(errors.ConfigValidationError) as raised:
            await config.start(timeout=5)
        assert set(raised.value.keys) == {"db/host", "debug"}  # db/host: missing
        with pytest.raises(errors.InvalidRequest):
            etcd.config(prefix, model=dict)  # neither a dataclass nor a model class


async def test_validator_sees_the_instance(etcd_endpoint: str, prefix: str) -> None:
    def validate(snapshot: ConfigSnapshot) -> bool:
        return bool(snapshot.value.db.port > 1024)

    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "db/host", _j("db1"))
        async with etcd.config(prefix, model=Settings, validate=validate) as config:
            rejections = _Rejections(config)
            low = await etcd.put(prefix + "db/port", _j(80))
            rejected = await rejections.of(low.revision)
            assert rejected.keys == () and "validator" in str(rejected)
            assert config.value.db == Database(host="db1")


async def test_pydantic_model(etcd_endpoint: str, prefix: str) -> None:
    pydantic = pytest.importorskip(
        "pydantic", reason="pydantic is not installed (pip install 'etcdsync[test]')"
    )

    class Db(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        host: str
        port: int = 5432

    class Model(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        db: Db
        debug: bool = False

    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "db/host", _j("db1"))
        await etcd.put(prefix + "db/port", _j("6543"))  # pydantic's own coercion
        async with etcd.config(prefix, model=Model) as config:
            assert isinstance(config.value, Model)
            assert config.value.db.host == "db1" and config.value.db.port == 6543
            rejections = _Rejections(config)
            bad = await etcd.put(prefix + "db/port", _j("x"))
            rejected = await rejections.of(bad.revision)
            assert isinstance(rejected.__cause__, pydantic.ValidationError)
            assert rejected.keys == ("db/port",)
            assert config.value.db.port == 6543
