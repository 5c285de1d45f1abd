"""In-process claims: a claim whose holder gave up (its key being deleted in the
background) is waited for by claimants that would not wait for a holder.

Pure bookkeeping, no server.  Canonical asyncio tests; ``tests/_sync/`` is generated.
"""

from __future__ import annotations

import time

import pytest

from etcdsync import errors
from etcdsync._async.concurrency.claims import AsyncClaims
from etcdsync._backends._async import Event, spawn, wait_event

KEY = b"lock/1"


async def test_a_held_claim_is_not_waited_for_by_a_releasing_bound() -> None:
    claims = AsyncClaims()
    assert await claims.claim(KEY)
    # Held by a holder (not releasing): the releasing bound does not apply.
    started = time.monotonic()
    assert not await claims.claim(KEY, 0, releasing=None)
    assert time.monotonic() - started < 0.5


async def test_a_releasing_claim_is_waited_for_within_its_bound() -> None:
    claims = AsyncClaims()
    assert await claims.claim(KEY)
    claims.releasing(KEY)
    assert not await claims.claim(KEY, 0)  # the default: the timeout applies
    started = time.monotonic()
    assert not await claims.claim(KEY, 0, releasing=0.2)  # nobody releases it
    assert time.monotonic() - started >= 0.2

    waiting = Event()
    got: list[bool] = []

    async def claimant() -> None:
        waiting.set()
        got.append(await claims.claim(KEY, 0, releasing=None))

    task = spawn(claimant, name="test-claimant")
    await _until_queued(claims, waiting)
    claims.release(KEY)  # the cleanup is done: handed to the claimant
    assert await task.join(5), "the claimant never got the claim"
    assert got == [True]
    assert KEY in claims
    # Handed over: the new holder's claim is not "releasing" any more.
    assert not await claims.claim(KEY, 0, releasing=None)


async def test_a_releasing_claim_waiter_stops_when_the_session_ends() -> None:
    claims = AsyncClaims()
    assert await claims.claim(KEY)
    claims.releasing(KEY)
    error = errors.ClientClosedError("closed")
    waiting = Event()
    outcome: list[BaseException] = []

    async def claimant() -> None:
        waiting.set()
        try:
            await claims.claim(KEY, 0, releasing=None)
        except errors.EtcdError as exc:
            outcome.append(exc)

    task = spawn(claimant, name="test-claimant")
    await _until_queued(claims, waiting)
    claims.close(error)
    assert await task.join(5), "the claimant outlived close()"
    assert outcome == [error]
    with pytest.raises(errors.ClientClosedError):
        await claims.claim(b"other")


async def _until_queued(claims: AsyncClaims, started: Event) -> None:
    """Wait until the claimant task (which set ``started``) is queued on ``KEY``: the
    queue is plain state with no event of its own, so it is looked at every 10 ms."""
    assert await wait_event(started, 5)
    deadline = time.monotonic() + 5
    while claims.waiting(KEY) == 0:
        assert time.monotonic() < deadline, "the claimant never queued"
        await wait_event(Event(), 0.01)
