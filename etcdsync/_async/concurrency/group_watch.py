"""GroupWatch: every join, leave and update of a group, each once and in order.

The members of a group are the keys ``<name>/<id>``.  The watch mirrors them (one
read at revision R, one watch from R + 1: :class:`~.mirror.AsyncPrefixMirror`)
and compares the members after each revision with those before it: a new key is
a join, a deleted key a leave, a key written again an update.  The mirror's
watch resumes across reconnects and server restarts from the last revision it
delivered, so nothing is lost or repeated; only when it falls behind a
compaction does the mirror read everything again, and the events of that
revision are the net difference (marked ``resync``).
"""

from __future__ import annotations

from collections import deque

from ... import errors
from ..._deadline import Deadline
from ...group_types import GroupMember, MembershipEvent, MembershipEventType, member_from_kv
from ..protocol import AsyncKVClient
from .mirror import AsyncPrefixMirror

__all__ = ["AsyncGroupWatch"]

_JOIN, _LEAVE, _UPDATE = (
    MembershipEventType.JOIN,
    MembershipEventType.LEAVE,
    MembershipEventType.UPDATE,
)


class AsyncGroupWatch:
    """The membership changes of one group, as :class:`~etcdsync.group_types.MembershipEvent`.

    Create with ``group.watch()``; it reads the members at :meth:`start` (``async
    with`` calls it) or at the first :meth:`get`.  ``get(timeout)`` returns the next event
    (raising :class:`~etcdsync.errors.GroupTimeout`); ``async for`` iterates;
    :meth:`cancel` ends the iteration after the events already received;
    :class:`~etcdsync.errors.ClientClosedError` ends it when the client closes.

    Events come in revision order; the events of one revision (a txn, or a lease
    whose expiry removed several members) come leaves first, then joins, then
    updates, each kind in join order.  :attr:`members` is the membership as of
    :attr:`revision`, the last revision the watch has applied (it may run ahead
    of the events not read yet).

    A watch the server ends (its history compacted away, or cancelled) is
    replaced by a fresh read at once; if that read fails, ``get()`` raises the
    client's error and the next ``get()`` tries again.
    """

    def __init__(
        self, client: AsyncKVClient, prefix: bytes, *, include_existing: bool = True
    ) -> None:
        self._prefix = prefix
        self._include_existing = include_existing
        self._mirror = AsyncPrefixMirror(client, prefix, on_revision=self._note)
        self._known: dict[bytes, GroupMember] = {}
        self._loads = 0  # loads (first one included) already reflected in _known
        self._pending: deque[MembershipEvent] = deque()

    @property
    def members(self) -> list[GroupMember]:
        """The members as of :attr:`revision`, in join order."""
        return sorted(self._known.values(), key=lambda member: member.create_revision)

    @property
    def revision(self) -> int:
        """The store revision the watch has applied (0 before its first read)."""
        return self._mirror.revision

    @property
    def resyncs(self) -> int:
        """How many times a compaction (or a watch the server ended) forced a fresh
        read of the members."""
        return self._mirror.reloads

    def _note(self, revision: int) -> None:
        """After each revision (and each load): report how the members changed."""
        loads = self._mirror.reloads + 1
        first = self._loads == 0
        resync = not first and loads > self._loads
        self._loads = loads
        current: dict[bytes, GroupMember] = {}
        for kv in self._mirror.kvs.values():
            member = member_from_kv(self._prefix, kv)
            if member is not None:
                current[kv.key] = member
        previous, self._known = self._known, current
        if first:
            if self._include_existing:
                self._pending.extend(
                    MembershipEvent(_JOIN, member, revision, initial=True)
                    for member in self.members
                )
            return
        leaves: list[GroupMember] = []
        joins: list[GroupMember] = []
        updates: list[GroupMember] = []
        for key, old in previous.items():
            new = current.get(key)
            if new is None:
                leaves.append(old)
            elif new.create_revision != old.create_revision:
                leaves.append(old)  # left and joined again under the same id
                joins.append(new)
            elif new.mod_revision != old.mod_revision:
                updates.append(new)
        joins += [member for key, member in current.items() if key not in previous]
        for kind, changed in ((_LEAVE, leaves), (_JOIN, joins), (_UPDATE, updates)):
            changed.sort(key=lambda member: (member.create_revision, member.key))
            self._pending.extend(
                MembershipEvent(kind, member, revision, resync=resync) for member in changed
            )

    async def start(self, *, timeout: float | None = None) -> AsyncGroupWatch:
        """Read the members now (if not read yet) and start watching from there;
        returns ``self``.  Without it the first :meth:`get` does this: changes made
        before it are not reported as such.  ``async with`` calls it."""
        if self._loads == 0 and not self._mirror.closed:
            try:
                await self._mirror.load(timeout)
            except errors.Timeout as exc:
                if timeout is None:
                    raise
                raise errors.GroupTimeout(f"the members were not read within {timeout} s") from exc
        return self

    async def get(self, timeout: float | None = None) -> MembershipEvent:
        """The next membership event; raises :class:`~etcdsync.errors.GroupTimeout`
        after ``timeout`` seconds without one, and ``StopAsyncIteration`` once
        cancelled."""
        deadline = Deadline(timeout)
        while not self._pending:
            watching = self._mirror.watching
            try:
                await self._mirror.step(deadline.remaining())
            except errors.ClientClosedError:
                raise
            except errors.EtcdError:
                if not watching:
                    raise  # the read failed: the next get() reads again
                continue  # the watch ended (e.g. compacted): the next step re-reads
            except TimeoutError:
                if timeout is None:
                    raise  # a request of the client's timed out, not our wait
                raise errors.GroupTimeout(f"no membership change within {timeout} s") from None
        return self._pending.popleft()

    def __aiter__(self) -> AsyncGroupWatch:
        return self

    async def __anext__(self) -> MembershipEvent:
        return await self.get()

    async def cancel(self) -> None:
        """Stop watching; iteration ends after the events already received."""
        await self._mirror.close()

    async def __aenter__(self) -> AsyncGroupWatch:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cancel()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} prefix={self._prefix!r} revision={self.revision}>"
