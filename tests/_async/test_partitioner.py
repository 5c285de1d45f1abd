"""Partitioner against a real etcd: shares, key layout, hand-over order, fencing, loss."""

from __future__ import annotations

import time
from typing import Any

import pytest

from etcdsync import AsyncClient, Op, errors
from etcdsync.group_types import OwnershipChange, OwnershipChangeType, rendezvous_owner
from etcdsync.watch_types import EventType

ACQUIRED, RELEASED, LOST = (
    OwnershipChangeType.ACQUIRED,
    OwnershipChangeType.RELEASED,
    OwnershipChangeType.LOST,
)
ITEMS = [f"item-{i:02d}" for i in range(30)]


class _Tracker:
    """Follows one partitioner's changes (its iterator) and keeps what it owns."""

    def __init__(self, part: Any) -> None:
        self.part = part
        self.stream = part.changes()
        self.owned: dict[str, int] = {}
        self.seen: list[OwnershipChange] = []

    async def until(self, want: set[str], timeout: float = 15, *, settled: bool = True) -> None:
        """Read changes until the owned set is ``want`` (fails after ``timeout``); with
        ``settled``, ``owned()`` must say the same (no change may be under way)."""
        deadline = time.monotonic() + timeout
        while set(self.owned) != want:
            left = deadline - time.monotonic()
            assert left > 0, f"owns {sorted(self.owned)}, want {sorted(want)}"
            change = await self.stream.get(timeout=left)
            self.seen.append(change)
            if change.type is ACQUIRED:
                assert change.item not in self.owned
                self.owned[change.item] = change.token
            else:
                assert self.owned.pop(change.item) == change.token
        if settled:
            assert self.part.owned() == frozenset(want)


def _shares(member_ids: list[str]) -> dict[str, set[str]]:
    shares: dict[str, set[str]] = {m: set() for m in member_ids}
    for item in ITEMS:
        owner = rendezvous_owner(item, member_ids)
        assert owner is not None
        shares[owner].add(item)
    return shares


async def test_shares_follow_rendezvous_hashing_and_the_key_layout(
    etcd_endpoint: str, prefix: str
) -> None:
    name = prefix + "p"
    async with AsyncClient(etcd_endpoint) as etcd:
        parts = [etcd.partitioner(name, ITEMS, ttl=10) for _ in range(3)]
        trackers = [_Tracker(p) for p in parts]
        for p in parts:
            await p.start()
        ids = [p.member_id for p in parts]
        assert None not in ids and len(set(ids)) == 3
        shares = _shares(ids)  # type: ignore[arg-type]
        assert all(shares.values())  # 30 items over 3 members: nobody idle
        for p, tracker in zip(parts, trackers, strict=True):
            await tracker.until(shares[p.member_id])
            assert p.assigned() == frozenset(shares[p.member_id])
        # The layout: <name>/members/<lease hex> and <name>/owners/<item> = owner id,
        # both bound to the member's own session lease.
        members = await etcd.get(f"{name}/members/", prefix=True)
        assert sorted(kv.key.decode() for kv in members.kvs) == sorted(
            f"{name}/members/{i}" for i in ids if i
        )
        owners = await etcd.get(f"{name}/owners/", prefix=True)
        assert len(owners.kvs) == len(ITEMS)
        by_id = {p.member_id: p for p in parts}
        for kv in owners.kvs:
            item = kv.key.decode()[len(f"{name}/owners/") :]
            owner = by_id[kv.value.decode()]
            assert item in shares[kv.value.decode()]
            assert owner.session is not None and kv.lease == owner.session.lease_id
            assert owner.fencing_token(item) == kv.create_revision
        assert all(p.members == tuple(ids) and p.stable for p in parts)
        for p in parts:
            await p.stop()
        assert (await etcd.get(name + "/", prefix=True, count_only=True)).count == 0


async def test_hand_over_releases_before_the_next_owner_acquires(
    etcd_endpoint: str, prefix: str
) -> None:
    name = prefix + "p"
    async with AsyncClient(etcd_endpoint) as etcd:
        log: list[tuple[str, OwnershipChange]] = []
        first, second = etcd.partitioner(name, ITEMS, ttl=10), etcd.partitioner(name, ITEMS, ttl=10)
        first.add_callback(lambda change: log.append(("first", change)))
        second.add_callback(lambda change: log.append(("second", change)))
        t1, t2 = _Tracker(first), _Tracker(second)
        await first.start()
        await t1.until(set(ITEMS))
        await second.start()
        shares = _shares([first.member_id, second.member_id])  # type: ignore[list-item]
        await t2.until(shares[second.member_id])
        await t1.until(shares[first.member_id])
        moved = shares[second.member_id]
        for item in moved:
            released = [
                i
                for i, (who, c) in enumerate(log)
                if who == "first" and c.item == item and c.type is RELEASED
            ]
            acquired = [
                i
                for i, (who, c) in enumerate(log)
                if who == "second" and c.item == item and c.type is ACQUIRED
            ]
            assert len(released) == 1 and len(acquired) == 1
            assert released[0] < acquired[0]  # the callback ran before the key went
            assert log[acquired[0]][1].token > log[released[0]][1].token
        # Nothing moved that did not have to.
        assert {c.item for who, c in log if who == "first" and c.type is RELEASED} == moved
        # stop(): RELEASED for each item, then one revision removes the member and its keys.
        watcher = await etcd.watch(name + "/", prefix=True, no_put=True)
        await second.stop()
        await t1.until(set(ITEMS))
        deletes: list[Any] = []
        while len(deletes) < len(moved) + 1:
            deletes += (await watcher.get(timeout=5)).events
        await watcher.cancel()
        assert all(e.type is EventType.DELETE for e in deletes)
        assert len({e.revision for e in deletes}) == 1  # the lease's revocation
        assert [c.type for who, c in log if who == "second"][-len(moved) :] == [RELEASED] * len(
            moved
        )
        assert not second.running and second.owned() == frozenset()
        await first.stop()


async def test_guarded_writes_are_fenced_per_item(etcd_endpoint: str, prefix: str) -> None:
    name, data = prefix + "p", prefix + "data/"
    async with AsyncClient(etcd_endpoint) as etcd:
        part = etcd.partitioner(name, ITEMS, ttl=10)
        tracker = _Tracker(part)
        async with part:
            await tracker.until(set(ITEMS))
            item = ITEMS[0]
            written = await part.guarded_txn(item, [Op.put(data + item, "1")])
            assert written.succeeded and written.revision > part.fencing_token(item)
            stale = part.is_owner(item)
            ok = await etcd.txn([stale], [Op.put(data + item, "2")])
            assert ok.succeeded
            held = part.item(item)
            losses: list[errors.OwnershipLostError] = []
            held.add_lost_callback(losses.append)
            # Someone deletes the owner key: the item is lost, then acquired again.
            old_token = part.fencing_token(item)
            await etcd.delete(held.key)
            await tracker.until(set(ITEMS) - {item}, settled=False)  # acquired again at once
            await tracker.until(set(ITEMS))
            assert [c.type for c in tracker.seen[-2:]] == [LOST, ACQUIRED]
            lost_change = tracker.seen[-2]
            assert isinstance(lost_change.error, errors.OwnershipLostError)
            assert lost_change.error.reason == "key deleted" and lost_change.token == old_token
            assert losses and losses[0].item == item
            assert part.fencing_token(item) > old_token and not held.lost.is_set()
            # The old ownership's compare no longer holds: etcd refuses its writes.
            refused = await etcd.txn([stale], [Op.put(data + item, "3")])
            assert not refused.succeeded
            assert (await etcd.get(data + item)).value == b"2"
            # A guarded write whose ownership etcd finds gone writes nothing.  (Should
            # the balancer see the deletion and acquire the item again before the write
            # is sent, the write is the new ownership's: then try again.)
            for attempt in range(20):
                before = part.fencing_token(item)
                await etcd.delete(held.key)
                try:
                    await part.guarded_txn(item, [Op.put(data + item, f"late-{attempt}")])
                except errors.NotOwnerError:
                    break
                assert part.fencing_token(item) > before
            else:
                pytest.fail("every guarded write came after the item was acquired again")
            assert (await etcd.get(data + item)).value != f"late-{attempt}".encode()
            with pytest.raises(errors.InvalidRequest):
                part.is_owner("not-an-item")
        with pytest.raises(errors.NotOwnerError):
            part.is_owner(item)  # stopped: nothing is owned
        with pytest.raises(errors.NotOwnerError):
            await part.guarded_txn(item, [Op.put(data + item, "5")])


async def test_membership_lost_when_the_session_ends_then_rejoin(
    etcd_endpoint: str, prefix: str
) -> None:
    name = prefix + "p"
    async with AsyncClient(etcd_endpoint) as etcd:
        stay, die = etcd.partitioner(name, ITEMS, ttl=10), etcd.partitioner(name, ITEMS, ttl=10)
        t_stay, t_die = _Tracker(stay), _Tracker(die)
        await stay.start()
        await die.start()
        die_id = die.member_id
        shares = _shares([stay.member_id, die_id])  # type: ignore[list-item]
        await t_die.until(shares[die_id])  # type: ignore[index]
        await t_stay.until(shares[stay.member_id])
        lost_event = die.lost
        seen: list[errors.MembershipLostError] = []
        die.add_lost_callback(seen.append)
        assert die.session is not None
        await etcd.revoke(die.session.lease_id)  # as if its lease expired
        assert await die.wait_lost(5)
        assert seen and seen[0].reason == "session ended" and die.lost_error is seen[0]
        await t_die.until(set())
        lost = [c for c in t_die.seen if c.type is LOST]
        assert {c.item for c in lost} == shares[die_id]  # type: ignore[index]
        assert all(
            isinstance(c.error, errors.OwnershipLostError) and c.error.reason == "session ended"
            for c in lost
        )
        assert not die.running
        await t_stay.until(set(ITEMS))  # the survivor takes everything
        # start() joins again under a new session: the shares are cut anew.
        await die.start()
        assert not lost_event.is_set() and die.running
        shares = _shares([stay.member_id, die.member_id])  # type: ignore[list-item]
        await t_die.until(shares[die.member_id])
        await t_stay.until(shares[stay.member_id])
        await die.stop()
        await stay.stop()


async def test_changes_iterator_and_namespaces(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        tenant = etcd.namespace(prefix + "tenant/")
        part = tenant.partitioner("p", ["a", "b"], ttl=10, member_id="m-1", value="host")
        async with part.changes() as changes:
            await part.start()
            got = [await changes.get(timeout=5), await changes.get(timeout=5)]
            assert sorted((c.type, c.item) for c in got) == [(ACQUIRED, "a"), (ACQUIRED, "b")]
            stored = (await etcd.get(f"{prefix}tenant/p/owners/a")).kv
            assert stored is not None and stored.value == b"m-1"
            member = (await etcd.get(f"{prefix}tenant/p/members/m-1")).kv
            assert member is not None and member.value == b"host"
            with pytest.raises(errors.PartitionerTimeout):
                await changes.get(timeout=0.2)
            await part.stop()
            rest = [c async for c in changes]  # stop() ends the iterator
            assert sorted((c.type, c.item) for c in rest) == [(RELEASED, "a"), (RELEASED, "b")]
        assert (await etcd.get(prefix + "tenant/", prefix=True, count_only=True)).count == 0


async def test_a_taken_member_id_is_refused(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "p"
    async with AsyncClient(etcd_endpoint) as etcd:
        first = etcd.partitioner(name, ITEMS, ttl=10, member_id="same")
        second = etcd.partitioner(name, ITEMS, ttl=10, member_id="same")
        await first.start()
        with pytest.raises(errors.GroupMemberExistsError):
            await second.start()
        assert not second.running
        with pytest.raises(errors.PartitionerError):
            await second.wait_stable(1)
        await first.wait_stable(5)
        assert first.owned() == frozenset(ITEMS)
        await first.stop()
        await second.stop()  # never started: nothing to do
        # The failed start left no session behind: only the first member ever joined.
        assert (await etcd.get(name + "/", prefix=True, count_only=True)).count == 0


async def test_bad_arguments(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        for bad in ("", 7):
            with pytest.raises(errors.InvalidRequest):
                etcd.partitioner(bad, ITEMS)  # type: ignore[arg-type]
        for items in ("abc", ["a", "a"], ["a", ""], ["a", 3]):
            with pytest.raises(errors.InvalidRequest):
                etcd.partitioner("p", items)  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidRequest):
            etcd.partitioner("p", ITEMS, ttl=0)
        with pytest.raises(errors.InvalidRequest):
            etcd.partitioner("p", ITEMS, member_id="a/b")
        session = await etcd.session(ttl=5)
        with pytest.raises(errors.InvalidRequest):
            etcd.partitioner("p", ITEMS, ttl=5, session=session)
        await session.close()
