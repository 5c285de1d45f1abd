"""Run-once leases: take a name for one period, or be told no - never wait.

``await etcd.lease_once("jobs/hourly-report", 3600)`` answers, across a fleet,
"is it my turn to run this job for the next hour?".  The first caller in a
period gets the name; every other caller until the period ends is refused at
once.  The period is a lease of TTL ``period`` that is *not* kept alive: the
winner's key expires with it, and the next caller after that wins the next
period.  With ``holders=N``, N callers win per period (N slots).  These are the
semantics of kazoo's ``NonBlockingLease`` / ``MultiNonBlockingLease``, with the
period timed by etcd's lease clock instead of the callers' wall clocks.

Key layout: slot ``i`` is the key ``<name>/<i>`` (``i`` in ``0 .. holders-1``),
holding the winner's ``value``, bound to the winner's lease.  One txn takes the
lowest free slot: it compares the first free-looking slot's create revision with 0
and puts it, else (nested) tries the next one, and so on (up to 16 per txn); the
innermost failure branch reads the slots.  So exactly one caller takes each free
slot, whatever the races.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import socket

from ... import errors
from ..._deadline import Deadline
from ..._keys import to_bytes
from ...models import GetResponse, KeyValue, TxnResponse
from ...ops import Compare, Op
from ..protocol import AsyncKVClient

__all__ = ["AsyncLeaseOnce", "acquire_lease_once", "default_identity"]

log = logging.getLogger("etcdsync.recipes")

_CHAIN = 16
"""Slots one claim txn tries (nested ``if free then put else ...``): protobuf refuses
messages nested much deeper than 100 levels, two per slot."""


def default_identity() -> str:
    """``<host name>:<process id>``: the value a caller stores by default."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _period_seconds(period: object) -> int:
    if isinstance(period, datetime.timedelta):
        seconds = math.ceil(period.total_seconds())
    elif isinstance(period, int) and not isinstance(period, bool):
        seconds = period
    else:
        raise errors.InvalidRequest(
            f"period must be an int of seconds or a timedelta, got {period!r}"
        )
    if seconds < 1:
        raise errors.InvalidRequest(f"period must be at least 1 second, got {period!r}")
    return seconds


class AsyncLeaseOnce:
    """The answer of :meth:`etcdsync.AsyncClient.lease_once`: true if the name was taken.

    ::

        if await etcd.lease_once("jobs/hourly-report", 3600):
            await make_report()

    ``acquired`` (also the truth value), ``slot`` and ``key`` (the slot taken,
    else None), ``lease_id`` and ``ttl`` (the lease bounding the period: the TTL
    the server granted, which it may raise to its minimum), ``revision`` (the
    revision of the txn that took the slot, or of the read that found every slot
    taken), ``renewed`` (True when the caller already held the slot and took it
    again for a new period) and, for a refusal, ``holders`` (the slot keys seen
    by the deciding request, with their values: who holds the period).
    """

    def __init__(
        self,
        client: AsyncKVClient,
        name: str,
        *,
        acquired: bool,
        slot: int | None = None,
        key: str | None = None,
        lease_id: int = 0,
        ttl: int = 0,
        revision: int = 0,
        renewed: bool = False,
        holders: tuple[KeyValue, ...] = (),
    ) -> None:
        self._client = client
        self.name = name
        self.acquired = acquired
        self.slot = slot
        self.key = key
        self.lease_id = lease_id
        self.ttl = ttl
        self.revision = revision
        self.renewed = renewed
        self.holders = holders

    def __bool__(self) -> bool:
        return self.acquired

    def is_holder(self) -> Compare:
        """A compare that holds while this caller's period lasts: put it in a txn to
        guard the job's writes (``etcd.txn([result.is_holder()], [...])``).

        Raises :class:`~etcdsync.errors.InvalidRequest` when nothing was acquired.
        """
        if not self.acquired or self.key is None:
            raise errors.InvalidRequest(f"the run-once lease {self.name!r} was not acquired")
        return Compare.lease(self.key) == self.lease_id

    async def release(self, *, timeout: float | None = None) -> None:
        """End the period now (revoke its lease): the next caller takes the name.

        Use it when the job failed and another caller may try it in this period.
        Does nothing when nothing was acquired or the period already ended.
        """
        if not self.acquired:
            return
        try:
            await self._client.revoke(self.lease_id, timeout=timeout)
        except errors.LeaseNotFoundError:
            pass  # the period already ended

    def __repr__(self) -> str:
        if self.acquired:
            state = f"acquired slot={self.slot} lease={self.lease_id:x} ttl={self.ttl}"
        else:
            state = "refused"
        return f"<{type(self).__name__} {self.name!r} {state} revision={self.revision}>"


def _slot_of(name: str, kv: KeyValue, holders: int) -> int | None:
    """The slot number of a key under ``<name>/``, or None if it is no slot of ours."""
    suffix = kv.key[len(name.encode()) + 1 :]
    if not suffix.isdigit() or (len(suffix) > 1 and suffix.startswith(b"0")):
        return None
    slot = int(suffix)
    return slot if slot < holders else None


def _claim_txn(
    keys: list[str], value: bytes, lease_id: int, prefix: str
) -> tuple[list[Compare], list[Op], list[Op]]:
    """The txn taking the lowest free slot: nested ``if free then put else next``."""
    inner: list[Op] = [Op.get(prefix, prefix=True)]
    for key in reversed(keys[1:]):
        inner = [
            Op.txn([Compare.create_revision(key) == 0], [Op.put(key, value, lease=lease_id)], inner)
        ]
    first = keys[0]
    return [Compare.create_revision(first) == 0], [Op.put(first, value, lease=lease_id)], inner


def _claimed_slot(response: TxnResponse) -> tuple[int | None, list[KeyValue]]:
    """The position in the chain of the slot the claim txn took (None: none) and, if
    none, the slots its innermost failure branch read."""
    depth = 0
    while not response.succeeded:
        sub = response.responses[0]
        if isinstance(sub, GetResponse):
            return None, sub.kvs
        assert isinstance(sub, TxnResponse)
        response = sub
        depth += 1
    return depth, []


async def acquire_lease_once(
    client: AsyncKVClient,
    name: str,
    period: int | datetime.timedelta,
    *,
    holders: int = 1,
    value: str | bytes | None = None,
    renew: bool = False,
    timeout: float | None = None,
) -> AsyncLeaseOnce:
    """Try to take ``name`` for ``period``; see :meth:`etcdsync.AsyncClient.lease_once`."""
    if not isinstance(name, str) or not name:
        raise errors.InvalidRequest(f"a lease name must be a non-empty str, got {name!r}")
    ttl = _period_seconds(period)
    if not isinstance(holders, int) or isinstance(holders, bool) or holders < 1:
        raise errors.InvalidRequest(f"holders must be an int >= 1, got {holders!r}")
    identity = to_bytes(default_identity() if value is None else value, "value")
    deadline = Deadline(timeout)
    prefix = f"{name}/"
    keys = [f"{prefix}{slot}" for slot in range(holders)]

    def refused(revision: int, seen: list[KeyValue]) -> AsyncLeaseOnce:
        taken = tuple(kv for kv in seen if _slot_of(name, kv, holders) is not None)
        return AsyncLeaseOnce(client, name, acquired=False, revision=revision, holders=taken)

    # One read first: a refused caller (the common case) costs no lease.
    read = await client.get(prefix, prefix=True, timeout=deadline.rpc_timeout())
    slots = {i: kv for kv in read.kvs if (i := _slot_of(name, kv, holders)) is not None}
    mine = next((slot for slot, kv in slots.items() if kv.value == identity), None)
    if mine is not None and not renew:
        return refused(read.revision, read.kvs)  # this identity already has the period
    if mine is None and len(slots) >= holders:
        return refused(read.revision, read.kvs)

    lease = await client.grant(ttl, timeout=deadline.rpc_timeout())
    free = [slot for slot in range(holders) if slot not in slots]
    slot: int | None = None
    revision = read.revision
    seen: list[KeyValue] = read.kvs
    try:
        # Each round takes the lowest free slot among up to _CHAIN that looked free;
        # a round fails only when others took all of them, so few rounds are needed.
        for _ in range(holders // _CHAIN + 2):
            if mine is not None:
                chain = [mine]
                held = slots[mine]
                compare = [
                    Compare.value(held.key) == identity,
                    Compare.mod_revision(held.key) == held.mod_revision,
                ]
                success = [Op.put(held.key, identity, lease=lease.id)]
                failure = [Op.get(prefix, prefix=True)]
            else:
                chain = free[:_CHAIN]
                compare, success, failure = _claim_txn(
                    [keys[i] for i in chain], identity, lease.id, prefix
                )
            result = await _attempt(client, compare, success, failure, prefix, lease.id, deadline)
            if isinstance(result, KeyValue):  # the unknown outcome was ours after all
                slot, revision = _slot_of(name, result, holders), result.mod_revision
                break
            depth, seen = _claimed_slot(result)
            revision = result.revision
            if depth is not None:
                slot = chain[depth]
                break
            taken = {_slot_of(name, kv, holders) for kv in seen}
            free = [i for i in range(holders) if i not in taken]
            if mine is not None or not free:
                break
    except BaseException:
        await _drop(client, lease.id)
        raise
    if slot is None:
        await _drop(client, lease.id)
        return refused(revision, seen)
    return AsyncLeaseOnce(
        client,
        name,
        acquired=True,
        slot=slot,
        key=keys[slot],
        lease_id=lease.id,
        ttl=lease.ttl,
        revision=revision,
        renewed=mine is not None,
    )


async def _attempt(
    client: AsyncKVClient,
    compare: list[Compare],
    success: list[Op],
    failure: list[Op],
    prefix: str,
    lease_id: int,
    deadline: Deadline,
) -> TxnResponse | KeyValue:
    """Run a claim txn.  When its outcome is unknown (``Timeout``/``Unavailable``), the
    slot keys tell: the slot bound to our lease if it landed, else the error again."""
    try:
        return await client.txn(compare, success, failure, timeout=deadline.rpc_timeout())
    except (errors.Timeout, errors.Unavailable):
        found = await client.get(prefix, prefix=True, timeout=deadline.rpc_timeout())
        ours = [kv for kv in found.kvs if kv.lease == lease_id]
        if not ours:
            raise
        return ours[0]


async def _drop(client: AsyncKVClient, lease_id: int) -> None:
    """Revoke a lease that took no slot (best effort: it expires with its period anyway)."""
    try:
        await client.revoke(lease_id)
    except errors.EtcdError as exc:
        log.debug("could not revoke unused run-once lease %x: %s", lease_id, exc)
