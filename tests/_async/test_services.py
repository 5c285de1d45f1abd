"""Service discovery against a real etcd: layout, choose strategies, watch, loss.

* an instance is the lease-bound key ``<ns>/<name>/<id>`` holding Go's endpoint
  JSON (``Op``/``Addr``/``Metadata``) plus address, port and payload; instances
  written by Go's endpoint manager are read too;
* ``instances()`` sees this object's own registrations and deregistrations at once;
  round-robin visits each live instance once per round, sticky stays, random picks
  among the live ones; no instance: ``NoInstancesError``;
* ``watch()`` reports each added, updated and removed instance once, in order;
* a registration whose session is revoked reports ``LOST``, registers again through
  a fresh session and reports ``REREGISTERED``; a key deleted by someone else ends it
  (``REMOVED``) for good; a taken instance id is replaced (or refused).

Canonical asyncio tests; ``tests/_sync/test_services.py`` is generated from this file.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from etcdsync import (
    AsyncClient,
    CacheEventType,
    RegistrationEvent,
    RegistrationEventType,
    ServiceEvent,
    errors,
)
from etcdsync._backends._async import Event, wait_event

ADDED, UPDATED, REMOVED = CacheEventType.ADDED, CacheEventType.UPDATED, CacheEventType.REMOVED
TTL = 5


async def _take(watch: Any, count: int, timeout: float = 10) -> list[ServiceEvent]:
    deadline = time.monotonic() + timeout
    return [await watch.get(max(deadline - time.monotonic(), 0.01)) for _ in range(count)]


def _brief(events: list[ServiceEvent]) -> list[tuple[CacheEventType, str]]:
    return [(e.type, e.instance.id if e.instance else "") for e in events]


class _Registrations:
    """A registration listener that records events and signals each arrival."""

    def __init__(self) -> None:
        self.events: list[RegistrationEvent] = []
        self.arrived = Event()

    def __call__(self, event: RegistrationEvent) -> None:
        self.events.append(event)
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 10) -> list[RegistrationEvent]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(self.events)} of {count} events: {self.events}"
            await wait_event(self.arrived, left)
            self.arrived.clear()
        return list(self.events)


async def test_register_layout_instances_and_deregister(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        services = etcd.services(prefix + "svc", ttl=TTL)
        a = await services.register("api", "a", "10.0.0.1", 8080, payload={"zone": "x"})
        b = await services.register("api", "b", "::1", 8081)
        await services.register("db", "main", "10.0.0.9", 5432)
        raw = (await etcd.get(f"{prefix}svc/api/a")).kv
        assert raw is not None and raw.lease != 0
        record = json.loads(raw.value)
        assert (record["Op"], record["Addr"], record["Metadata"]) == (
            0,
            "10.0.0.1:8080",
            {"zone": "x"},
        )
        assert (record["address"], record["port"]) == ("10.0.0.1", 8080)
        session = (await etcd.time_to_live(raw.lease)).granted_ttl
        assert session == TTL
        # Read-your-writes: the cache has the registrations already.
        found = await services.instances("api", timeout=5)
        assert [(i.id, i.addr, i.payload) for i in found] == [
            ("a", "10.0.0.1:8080", {"zone": "x"}),
            ("b", "[::1]:8081", None),
        ]
        assert a.instance is not None and found[0] == a.instance and a.registered
        assert await services.names() == ["api", "db"]
        assert len(await services.all_instances()) == 3
        # A Go endpoint manager's entry is an instance too.
        await etcd.put(f"{prefix}svc/api/go-1", '{"Op":0,"Addr":"10.0.0.3:9000","Metadata":7}')
        await etcd.put(f"{prefix}svc/api/junk", "not json")
        snap = await services.cache.wait_for(lambda s: f"{prefix}svc/api/junk" in s, timeout=5)
        assert snap.revision > 0
        go = [i for i in await services.instances("api") if i.id == "go-1"]
        assert [(i.address, i.port, i.payload) for i in go] == [("10.0.0.3", 9000, 7)]
        await b.deregister()
        assert not b.registered and b.ended
        assert [i.id for i in await services.instances("api")] == ["a", "go-1"]
        assert await services.deregister("api", "go-1") is True
        assert await services.deregister("api", "go-1") is False
        assert [i.id for i in await services.instances("api")] == ["a"]
        with pytest.raises(errors.InstanceExistsError):
            await services.register("api", "a", "10.0.0.1", 8080)  # this object's own
        await services.close()
        assert (await etcd.get(f"{prefix}svc/", prefix=True, keys_only=True)).count == 1  # junk


async def test_choose_strategies(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        async with etcd.services(prefix + "svc", ttl=TTL) as services:
            with pytest.raises(errors.NoInstancesError):
                await services.choose("web")
            for i in range(3):
                await services.register("web", f"w{i}", "127.0.0.1", 8000 + i)
            rounds = [(await services.choose("web")).id for _ in range(6)]
            assert rounds[:3] == ["w0", "w1", "w2"] and rounds[3:] == rounds[:3]
            sticky = {(await services.choose("web", "sticky")).id for _ in range(5)}
            assert len(sticky) == 1
            picked = {(await services.choose("web", "random")).id for _ in range(30)}
            assert picked <= {"w0", "w1", "w2"} and len(picked) >= 2
            # The sticky instance goes: the next choice moves on, then stays.
            (gone,) = sticky
            await services.deregister("web", gone)
            moved = {(await services.choose("web", "sticky")).id for _ in range(3)}
            assert len(moved) == 1 and gone not in moved
            live = {i.id for i in await services.instances("web")}
            assert {(await services.choose("web")).id for _ in range(2)} == live
            with pytest.raises(errors.InvalidRequest):
                await services.choose("web", "fastest")


async def test_watch_reports_each_change_once(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        services = etcd.services(prefix + "svc", ttl=TTL)
        await services.register("api", "first", "10.0.0.1", 80)
        async with services.watch("api") as watch:
            (initial,) = await _take(watch, 1)
            assert (initial.type, initial.instance and initial.instance.id, initial.initial) == (
                ADDED,
                "first",
                True,
            )
            remote = other.services(prefix + "svc", ttl=TTL)
            second = await remote.register("api", "second", "10.0.0.2", 80)
            await remote.register("api-v2", "elsewhere", "10.0.0.3", 80)  # another service
            await second.update({"weight": 2})
            await second.deregister()
            got = await _take(watch, 3)
            assert _brief(got) == [(ADDED, "second"), (UPDATED, "second"), (REMOVED, "second")]
            assert got[1].instance is not None and got[1].instance.payload == {"weight": 2}
            with pytest.raises(errors.ServiceTimeout):
                await watch.get(0.3)
            await remote.close()
        await services.close()


async def test_reregistered_after_a_revoked_session(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as admin:
        services = etcd.services(prefix + "svc", ttl=TTL)
        reg = await services.register("api", "solo", "10.0.0.1", 80)
        recorder = _Registrations()
        reg.add_listener(recorder)
        watch = admin.services(prefix + "svc").watch("api")
        assert _brief(await _take(watch, 1)) == [(ADDED, "solo")]
        before = reg.instance
        assert before is not None
        await admin.revoke(before.lease)  # from elsewhere: the key goes at once
        events = await recorder.wait_for(2)
        assert [e.type for e in events] == [
            RegistrationEventType.LOST,
            RegistrationEventType.REREGISTERED,
        ]
        assert isinstance(events[0].error, errors.MembershipLostError)
        after = await reg.wait_registered(5)
        assert after.lease != before.lease and reg.reregistrations == 1 and reg.registered
        assert after.create_revision > before.create_revision
        changes = await _take(watch, 2)
        assert _brief(changes) == [(REMOVED, "solo"), (ADDED, "solo")]
        live = (await etcd.get(f"{prefix}svc/api/solo")).kv
        assert live is not None and live.lease == after.lease
        # Deleted by someone else: removed for good, not registered again.
        assert await admin.services(prefix + "svc").deregister("api", "solo")
        events = await recorder.wait_for(3)
        assert events[2].type is RegistrationEventType.REMOVED and reg.ended
        assert _brief(await _take(watch, 1)) == [(REMOVED, "solo")]
        with pytest.raises(errors.ServiceTimeout):
            await watch.get(0.5)
        assert await services.instances("api") == []
        await watch.cancel()
        await services.close()


async def test_a_taken_instance_id_is_replaced_or_refused(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as old, AsyncClient(etcd_endpoint) as new:
        first = await old.services(prefix + "svc", ttl=TTL).register("api", "x", "10.0.0.1", 80)
        recorder = _Registrations()
        first.add_listener(recorder)
        with pytest.raises(errors.InstanceExistsError):
            await new.services(prefix + "svc", ttl=TTL).register(
                "api", "x", "10.0.0.2", 80, replace=False
            )
        # Another registration of the same process (same session): never replaced.
        with pytest.raises(errors.InstanceExistsError):
            await old.services(prefix + "svc", ttl=TTL).register("api", "x", "10.0.0.3", 80)
        assert first.registered and not recorder.events
        second = await new.services(prefix + "svc", ttl=TTL).register("api", "x", "10.0.0.2", 80)
        (event,) = await recorder.wait_for(1)
        assert event.type is RegistrationEventType.REMOVED and first.ended
        kv = (await new.get(f"{prefix}svc/api/x")).kv
        assert kv is not None and second.instance is not None
        assert kv.lease == second.instance.lease and b"10.0.0.2" in kv.value
        await second.deregister()


async def test_bad_arguments(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        with pytest.raises(errors.InvalidRequest):
            etcd.services("")
        services = etcd.services("svc-bad-args")
        for args in (
            ("", "a", "h", 80),
            ("/api", "a", "h", 80),
            ("api", "a/b", "h", 80),
            ("api", "a", "", 80),
            ("api", "a", "h", 0),
            ("api", "a", "h", 70000),
        ):
            with pytest.raises(errors.InvalidRequest):
                await services.register(*args)
        with pytest.raises(errors.InvalidRequest):
            await services.register("api", "a", "h", 80, payload=object())
        assert services.registrations() == []
