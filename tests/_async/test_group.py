"""Group membership against a real etcd: layout, join order, update, leave, loss, watch."""

from __future__ import annotations

import time
from typing import Any

import pytest
from helpers import pings

from etcdsync import AsyncClient, Op, errors
from etcdsync.group_types import MembershipEvent, MembershipEventType
from etcdsync.testing.proxy import FaultProxy
from etcdsync.watch_types import EventType

JOIN, LEAVE, UPDATE = (
    MembershipEventType.JOIN,
    MembershipEventType.LEAVE,
    MembershipEventType.UPDATE,
)


async def _events(watch: Any, count: int, timeout: float = 10) -> list[MembershipEvent]:
    """The next ``count`` events of a group watch (fails if they do not come in time)."""
    deadline = time.monotonic() + timeout
    return [await watch.get(timeout=max(deadline - time.monotonic(), 0.01)) for _ in range(count)]


def _brief(events: list[MembershipEvent]) -> list[tuple[MembershipEventType, str, bytes]]:
    return [(e.type, e.member.id, e.member.value) for e in events]


async def test_join_layout_order_update_and_leave(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "g"
    async with AsyncClient(etcd_endpoint) as etcd:
        sessions = [await etcd.session(ttl=10) for _ in range(3)]
        groups = [etcd.group(name, session=s) for s in sessions]
        joined = [await g.join(f"v{i}") for i, g in enumerate(groups)]
        # Go's layout: <name>/<lease id hex>, bound to the session's lease.
        for member, session in zip(joined, sessions, strict=True):
            assert member.id == format(session.lease_id, "x")
            stored = (await etcd.get(member.key)).kv
            assert stored is not None and stored.key == f"{name}/{member.id}".encode()
            assert stored.lease == session.lease_id
            assert stored.create_revision == member.create_revision
        members = await groups[0].members()
        assert [(m.id, m.value) for m in members] == [
            (m.id, f"v{i}".encode()) for i, m in enumerate(joined)
        ]
        assert [m.create_revision for m in members] == sorted(m.create_revision for m in joined)
        assert groups[1].join_revision == joined[1].create_revision and groups[1].is_member
        with pytest.raises(errors.GroupError):
            await groups[1].join("again")  # one object, one membership
        updated = await groups[1].update("v1b")
        assert updated.value == b"v1b" and updated.create_revision == joined[1].create_revision
        assert (await etcd.get(joined[1].key)).value == b"v1b"
        await groups[1].leave()
        await groups[1].leave()  # idempotent
        assert not groups[1].is_member and groups[1].member_id is None
        assert not groups[1].lost.is_set()  # a leave is not a loss
        assert [m.id for m in await groups[0].members()] == [joined[0].id, joined[2].id]
        with pytest.raises(errors.NotMemberError):
            await groups[1].update("late")
        with pytest.raises(errors.NotMemberError):
            groups[1].is_member_compare()
        # Keys with a '/' after the group's prefix are not members (nested groups).
        await etcd.put(f"{name}/sub/x", "not a member")
        assert len(await groups[0].members()) == 2
        for g in groups:
            await g.leave()
        for s in sessions:
            await s.close()


async def test_explicit_member_ids(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "g"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        group = etcd.group(name, ttl=10)
        member = await group.join("hello", member_id="worker-1")
        assert member.key == f"{name}/worker-1".encode() and member.id == "worker-1"
        # Another process (client) cannot take the id...
        with pytest.raises(errors.GroupMemberExistsError) as taken:
            await other.group(name, ttl=10).join("x", member_id="worker-1")
        assert taken.value.member_id == "worker-1"
        # ...nor another group object of this process.
        with pytest.raises(errors.GroupMemberExistsError):
            await etcd.group(name, ttl=10).join("x", member_id="worker-1")
        assert (await etcd.get(member.key)).value == b"hello"  # untouched
        for bad in ("", "a/b", 7):
            with pytest.raises(errors.InvalidRequest):
                await etcd.group(name).join("x", member_id=bad)  # type: ignore[arg-type]
        await group.leave()
        # Free again: the other client may take it now.
        again = other.group(name, ttl=10)
        assert (await again.join("x", member_id="worker-1")).id == "worker-1"
        await again.leave()


async def test_members_sharing_a_client_get_distinct_keys(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "g"
    async with AsyncClient(etcd_endpoint) as etcd:
        first, second = etcd.group(name, ttl=10), etcd.group(name, ttl=10)
        a = await first.join("a")
        b = await second.join("b")  # the shared session's key is taken: a private session
        assert a.key != b.key and first.session is not second.session
        assert len(await first.members()) == 2
        session = await etcd.session(ttl=10)
        third, fourth = etcd.group(name, session=session), etcd.group(name, session=session)
        await third.join("c")
        with pytest.raises(errors.GroupError):
            await fourth.join("d")  # an explicit session cannot be replaced
        await third.leave()
        await fourth.join("d")  # free once the other member left
        await fourth.leave()
        await second.leave()
        assert second.session is not None and second.session.is_done  # its private session closed
        await first.leave()
        await session.close()


async def test_lost_when_the_session_ends_or_the_key_is_deleted(
    etcd_endpoint: str, prefix: str
) -> None:
    name = prefix + "g"
    async with AsyncClient(etcd_endpoint) as etcd:
        session = await etcd.session(ttl=10)
        group = etcd.group(name, session=session)
        seen: list[errors.MembershipLostError] = []
        group.add_lost_callback(seen.append)
        lost = group.lost  # one event for the object's life
        member = await group.join("x")
        written = await group.guarded_txn([Op.put(prefix + "data", "1")])
        assert written.succeeded and written.revision > member.create_revision
        # Someone deletes the member key.
        await etcd.delete(member.key)
        assert await group.wait_lost(5)
        assert seen and seen[0].reason == "key deleted" and group.lost_error is seen[0]
        assert not group.is_member and group.member is None
        with pytest.raises(errors.MembershipLostError):
            await group.guarded_txn([Op.put(prefix + "data", "2")])
        assert (await etcd.get(prefix + "data")).value == b"1"
        await group.leave()
        # A new join clears the event; the session's end is the next loss.
        await group.join("y")
        assert not lost.is_set() and group.lost_error is None
        await etcd.revoke(session.lease_id)
        assert await group.wait_lost(5)
        assert len(seen) == 2 and seen[1].reason == "session ended"
        assert lost.is_set()
        assert await group.members() == []
        await group.leave()
        await session.close()


async def test_watch_reports_each_change_once_in_order(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "g"
    async with AsyncClient(etcd_endpoint) as etcd:
        early = etcd.group(name, ttl=10)
        e = await early.join("early")
        async with early.watch() as watch, early.watch(include_existing=False) as quiet:
            (initial,) = await _events(watch, 1)
            assert initial.initial and (initial.type, initial.member.id) == (JOIN, e.id)
            assert initial.revision >= e.create_revision
            s1, s2 = await etcd.session(ttl=10), await etcd.session(ttl=10)
            g1, g2 = etcd.group(name, session=s1), etcd.group(name, session=s2)
            m1 = await g1.join("one")
            m2 = await g2.join("two")
            await g1.update("one-b")
            await etcd.revoke(s2.lease_id)  # g2 dies instead of leaving
            await g1.leave()
            await early.leave()
            expected = [
                (JOIN, m1.id, b"one"),
                (JOIN, m2.id, b"two"),
                (UPDATE, m1.id, b"one-b"),
                (LEAVE, m2.id, b"two"),
                (LEAVE, m1.id, b"one-b"),
                (LEAVE, e.id, b"early"),
            ]
            got = await _events(watch, 6)
            assert _brief(got) == expected
            assert _brief(await _events(quiet, 6)) == expected  # no initial JOIN
            revisions = [event.revision for event in got]
            assert revisions == sorted(set(revisions))
            assert got[0].revision == m1.create_revision and got[1].revision == m2.create_revision
            with pytest.raises(errors.GroupTimeout):
                await watch.get(timeout=0.3)  # nothing more, nothing twice
            assert watch.members == [] and watch.resyncs == 0
        assert [event async for event in watch] == []  # cancelled: iteration ends
        await s1.close()


async def _replayed(etcd: Any, name: str, start: int, end: int) -> list[tuple[Any, str, int]]:
    """The membership changes of ``name`` from ``start`` to ``end``, from the store's own
    history (a watch replay), as (type, member id, revision)."""
    out: list[tuple[Any, str, int]] = []
    known: dict[bytes, int] = {}
    watcher = await etcd.watch(name + "/", prefix=True, start_revision=start)
    try:
        while not out or out[-1][2] < end:
            for event in (await watcher.get(timeout=10)).events:
                member_id = event.key.decode()[len(name) + 1 :]
                if event.type is EventType.DELETE:
                    known.pop(event.key, None)
                    out.append((LEAVE, member_id, event.revision))
                elif event.key in known:
                    out.append((UPDATE, member_id, event.revision))
                else:
                    known[event.key] = event.kv.create_revision
                    out.append((JOIN, member_id, event.revision))
    finally:
        await watcher.cancel()
    return out


async def test_watch_is_exact_across_server_restarts(etcd_server_factory: Any) -> None:
    server = etcd_server_factory()
    name = "restarted-group"
    async with AsyncClient(server.endpoint, timeout=5) as watching:
        watch = watching.group(name).watch()
        start = (await watching.get(name)).revision + 1
        with pytest.raises(errors.GroupTimeout):
            await watch.get(timeout=0.2)  # loaded: nobody yet
        got: list[MembershipEvent] = []
        async with AsyncClient(server.endpoint, timeout=5) as a:
            g1, g2 = a.group(name, ttl=30), a.group(name, ttl=30)
            m1 = await g1.join("one")
            m2 = await g2.join("two")
            await g2.update("two-b")
            got += await _events(watch, 3)
            server.crash()
            server.restart()
            # Fresh clients write while the watching one may still be reconnecting.
            async with AsyncClient(server.endpoint, timeout=5) as c:
                m3 = await c.group(name, ttl=30).join("three")
                await c.revoke(m1.lease)  # m1 dies
                got += await _events(watch, 1)
            # Closing c revoked its shared session: m3 left.
            server.crash()
            server.restart()
            async with AsyncClient(server.endpoint, timeout=5) as d:
                await d.revoke(m2.lease)
                g4 = d.group(name, ttl=30)
                m4 = await g4.join("four")
                await g4.update("four-b")
                await g4.leave()
                end = (await d.get(name)).revision
                got += await _events(watch, 6)
                replay = await _replayed(d, name, start, end)
        assert _brief(got) == [
            (JOIN, m1.id, b"one"),
            (JOIN, m2.id, b"two"),
            (UPDATE, m2.id, b"two-b"),
            (JOIN, m3.id, b"three"),
            (LEAVE, m1.id, b"one"),
            (LEAVE, m3.id, b"three"),
            (LEAVE, m2.id, b"two-b"),
            (JOIN, m4.id, b"four"),
            (UPDATE, m4.id, b"four-b"),
            (LEAVE, m4.id, b"four-b"),
        ]
        # Each change of the store's history once, at its revision, nothing else.
        assert [(e.type, e.member.id, e.revision) for e in got] == replay
        assert not any(e.resync for e in got) and watch.resyncs == 0
        with pytest.raises(errors.GroupTimeout):
            await watch.get(timeout=0.3)
        await watch.cancel()


async def test_watch_after_compaction_reports_the_net_difference(etcd_server_factory: Any) -> None:
    server = etcd_server_factory(extra_args=pings.MEMBER_ARGS)
    name = "compacted-group"
    with FaultProxy(server.endpoint) as proxy:
        async with (
            AsyncClient(proxy.endpoint, settings=pings.SETTINGS) as watching,
            AsyncClient(server.endpoint) as etcd,
        ):
            sessions = [await etcd.session(ttl=30) for _ in range(3)]
            g1, g2, g3 = (etcd.group(name, session=s) for s in sessions)
            m1 = await g1.join("one")
            m2 = await g2.join("two")
            watch = watching.group(name).watch()
            assert _brief(await _events(watch, 2)) == [(JOIN, m1.id, b"one"), (JOIN, m2.id, b"two")]
            proxy.blackhole()  # the watcher is cut off while the group changes
            proxy.reset()
            await g1.leave()
            await g2.update("two-b")
            await g3.join("three")
            await g3.leave()  # joined and left inside the gap: not reported
            latest = await etcd.put("filler", "x")
            await etcd.compact(latest.revision)
            proxy.heal()
            got = await _events(watch, 2, timeout=20)
            assert _brief(got) == [(LEAVE, m1.id, b"one"), (UPDATE, m2.id, b"two-b")]
            assert all(e.resync for e in got) and watch.resyncs == 1
            assert [m.id for m in watch.members] == [m2.id]
            with pytest.raises(errors.GroupTimeout):
                await watch.get(timeout=0.3)
            # And it follows on from there.
            await g2.leave()
            (left,) = await _events(watch, 1)
            assert (left.type, left.member.id, left.resync) == (LEAVE, m2.id, False)
            await watch.cancel()
            for s in sessions:
                await s.close()


async def test_groups_in_a_namespace(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        tenant = etcd.namespace(prefix + "tenant/")
        group = tenant.group("g", ttl=10)
        member = await group.join("x")
        assert member.key == f"g/{member.id}".encode()
        stored = (await etcd.get(f"{prefix}tenant/g/{member.id}")).kv
        assert stored is not None and stored.value == b"x"
        assert [m.id for m in await group.members()] == [member.id]
        await group.leave()
        assert (await etcd.get(f"{prefix}tenant/g/", prefix=True, count_only=True)).count == 0


async def test_bad_arguments(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        with pytest.raises(errors.InvalidRequest):
            etcd.group("")
        with pytest.raises(errors.InvalidRequest):
            etcd.group("g", ttl=0)
        session = await etcd.session(ttl=5)
        with pytest.raises(errors.InvalidRequest):
            etcd.group("g", ttl=5, session=session)
        with pytest.raises(errors.InvalidRequest):
            await etcd.group("g").join(7)  # type: ignore[arg-type]
        await session.close()
