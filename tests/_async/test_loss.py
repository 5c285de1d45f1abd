"""The one loss model of every held resource, against a real etcd.

Mutex, read lock, write lock, semaphore slot and election term share one model
(``etcdsync/_async/concurrency/holding.py``, ``recipes_docs/loss.md``): one
``lost`` event for the object's life, cleared by each new hold or term; lost
callbacks that can be removed and whose exceptions are logged; one
``guarded_txn`` that reports the outer response's header.  Each test runs on every
recipe.  ``tests/_sync/test_loss.py`` is generated from this file.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from etcdsync import AsyncClient, AsyncElection, Compare, Op, errors
from etcdsync._backends._async import Event, spawn, wait_event
from etcdsync.models import GetResponse

TTL = 5
KINDS = ["mutex", "read", "write", "semaphore", "election"]


def _make(etcd: AsyncClient, kind: str, name: str) -> Any:
    """A new holder object of ``kind`` on the client's shared session."""
    if kind == "mutex":
        return etcd.lock(name, ttl=TTL)
    if kind == "read":
        return etcd.rwlock(name, ttl=TTL).read()
    if kind == "write":
        return etcd.rwlock(name, ttl=TTL).write()
    if kind == "semaphore":
        return etcd.semaphore(name, 2, ttl=TTL)
    assert kind == "election"
    return etcd.election(name, ttl=TTL)


async def _take(holder: Any) -> None:
    if isinstance(holder, AsyncElection):
        await holder.campaign("me", timeout=10)
    else:
        await holder.acquire(timeout=10)


async def _let_go(holder: Any) -> None:
    if isinstance(holder, AsyncElection):
        await holder.resign()
    else:
        await holder.release()


async def _lose(etcd: AsyncClient, holder: Any) -> None:
    """End the hold as an expired lease would: revoke its session's lease."""
    session = holder.session
    assert session is not None
    await etcd.revoke(session.lease_id)  # this client's keepalive sees it at once


@pytest.mark.parametrize("kind", KINDS)
async def test_guarded_txn_reports_the_real_header_revision(
    etcd_endpoint: str, prefix: str, kind: str
) -> None:
    name, data = f"{prefix}res", f"{prefix}data"
    async with AsyncClient(etcd_endpoint) as etcd:
        holder = _make(etcd, kind, name)
        await _take(holder)
        try:
            wrote = await holder.guarded_txn([Op.put(data, "1")])
            read = await etcd.get(data)
            assert wrote.succeeded and read.kv is not None and read.kv.value == b"1"
            # The outer response's header: the write's revision, the answering member.
            assert wrote.revision > 0
            assert wrote.revision == read.revision == read.kv.mod_revision
            assert wrote.header.member_id != 0 and wrote.header.cluster_id != 0
            # The caller's own compare fails: the failure branch ran, nothing was
            # written, and the header is still the store's.
            other = await holder.guarded_txn(
                [Op.put(data, "2")], [Op.get(data)], [Compare.value(data) == "nope"]
            )
            assert not other.succeeded and not holder.lost.is_set()
            assert other.revision == wrote.revision
            found = other.responses[0]
            assert isinstance(found, GetResponse) and found.kvs[0].value == b"1"
        finally:
            await _let_go(holder)


@pytest.mark.parametrize("kind", KINDS)
async def test_lost_event_captured_before_the_hold_fires_for_every_hold(
    etcd_endpoint: str, prefix: str, kind: str
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        holder = _make(etcd, kind, f"{prefix}res")
        lost = holder.lost  # captured before the first acquire / campaign
        seen: list[errors.EtcdError] = []
        holder.add_lost_callback(seen.append)
        assert not lost.is_set() and holder.lost_error is None
        for hold in range(2):  # the shared session is replaced after each loss
            await _take(holder)
            assert holder.lost is lost, "one event for the object's whole life"
            assert not lost.is_set() and holder.lost_error is None, "a new hold clears it"
            await _lose(etcd, holder)
            assert await wait_event(lost, 5), f"the event did not fire for hold {hold}"
            assert holder.lost_error is not None
            assert len(seen) == hold + 1 and seen[-1] is holder.lost_error
            with pytest.raises(
                errors.LeadershipLostError if kind == "election" else errors.LockLostError
            ):
                await holder.guarded_txn([Op.put(f"{prefix}data", "late")])
            await _let_go(holder)
            assert lost.is_set(), "a release or resign does not clear the loss"
        assert (await etcd.get(f"{prefix}data")).kv is None


@pytest.mark.parametrize("kind", KINDS)
async def test_removed_lost_callback_is_not_called(
    etcd_endpoint: str, prefix: str, kind: str
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        holder = _make(etcd, kind, f"{prefix}res")
        kept: list[errors.EtcdError] = []
        removed: list[errors.EtcdError] = []
        holder.add_lost_callback(removed.append)
        holder.add_lost_callback(kept.append)
        holder.add_lost_callback(removed.append)
        assert holder.remove_lost_callback(removed.append) == 2
        assert holder.remove_lost_callback(removed.append) == 0
        await _take(holder)
        await _lose(etcd, holder)
        assert await holder.wait_lost(5)
        assert kept == [holder.lost_error]
        assert removed == []
        # Added after the loss, before the release: called at once.
        late: list[errors.EtcdError] = []
        holder.add_lost_callback(late.append)
        assert late == [holder.lost_error]
        await _let_go(holder)


@pytest.mark.parametrize("kind", KINDS)
async def test_raising_lost_callback_is_logged_and_the_others_still_run(
    etcd_endpoint: str, prefix: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="etcdsync.callbacks")

    def broken(error: errors.EtcdError) -> None:
        raise RuntimeError("boom from a lost callback")

    async with AsyncClient(etcd_endpoint) as etcd:
        holder = _make(etcd, kind, f"{prefix}res")
        seen: list[errors.EtcdError] = []
        holder.add_lost_callback(broken)
        holder.add_lost_callback(seen.append)
        await _take(holder)
        await _lose(etcd, holder)
        # The callbacks have all run by the time the event is set.
        assert await holder.wait_lost(5)
        assert seen == [holder.lost_error]
        records = [r for r in caplog.records if r.name == "etcdsync.callbacks"]
        assert len(records) == 1, records
        assert records[0].levelno == logging.ERROR and records[0].exc_info is not None
        assert isinstance(records[0].exc_info[1], RuntimeError)
        assert "boom from a lost callback" in str(records[0].exc_info[1])
        await _let_go(holder)


async def test_session_claims_exclude_hand_over_and_leave_nothing(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        session = await etcd.session(ttl=TTL)
        claims = session.claims
        assert await claims.claim(b"k", 0)
        assert b"k" in claims
        assert not await claims.claim(b"k", 0)  # taken: refused at once
        assert not await claims.claim(b"k", 0.05)  # a waiter that times out...
        assert await claims.claim(b"other", 0)  # (other keys are independent)
        claims.release(b"other")
        got = Event()

        async def waiter() -> None:
            if await claims.claim(b"k", 5):
                got.set()

        spawn(waiter, name="test-claim-waiter")
        claims.release(b"k")
        assert await wait_event(got, 5), "the waiter did not get the released claim"
        assert b"k" in claims  # held by the waiter now...
        claims.release(b"k")
        assert b"k" not in claims  # ...and nothing is left once it lets go
        assert "claimed=[]" in repr(claims)  # not even the timed-out waiter
        await session.close()
