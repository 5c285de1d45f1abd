"""Group membership: who is in, announced through lease-bound keys.

A member of the group ``<name>`` is the key ``<name>/<member id>``, bound to the
lease of the member's session and holding the value it announced; by default the
member id is the session's lease id in lowercase hex - the layout of Go's
``concurrency`` keys (``etcdctl get --prefix <name>/`` lists the members).  A
member that dies stops renewing its lease, and etcd deletes its key within the
TTL: it leaves the group without anyone's help.  Members are ordered by join
(the create revision of their key), which is also the membership's fencing
token.  A membership's loss follows the one model of :mod:`.holding`
(``recipes_docs/loss.md``); following the membership is
:class:`~.group_watch.AsyncGroupWatch`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from ... import errors
from ..._backends._async import spawn
from ..._deadline import Deadline
from ..._keys import to_bytes
from ..._logfields import fields, loss_level
from ...group_types import GroupMember, check_member_id, member_from_kv
from ...models import GetResponse, KeyValue, TxnResponse
from ...ops import Compare, Op
from ...watch_types import EventType
from ._waiting import session_error
from .group_watch import AsyncGroupWatch
from .holding import AsyncHeldResource
from .recipe_client import AsyncRecipeClient
from .session import DEFAULT_SESSION_TTL, AsyncSession

if TYPE_CHECKING:
    from ..watcher import AsyncWatcher

__all__ = ["AsyncGroup", "AsyncGroupWatch"]

log = logging.getLogger("etcdsync.group")

SESSION_ENDED = "session ended"
KEY_DELETED = "key deleted"


class AsyncGroup(AsyncHeldResource[errors.MembershipLostError]):
    """The group ``name``, and this object's membership of it; ``client.group(name)``.

    ::

        group = etcd.group("workers", ttl=10)
        await group.join(b"host-7:8080")
        members = await group.members()           # every member, in join order
        async for event in group.watch():         # joins, leaves, updates
            ...
        await group.leave()

    **Membership.**  ``join(value)`` creates the member key ``<name>/<member id>``
    bound to the session's lease (``session=`` if given, else the client's shared
    session for ``ttl`` seconds, default 60); ``update(value)`` changes the
    announced value; ``leave()`` deletes the key.  The member id is the session's
    lease id in hex unless ``member_id=`` names one (a non-empty str without
    ``/``); a taken id raises :class:`~etcdsync.errors.GroupMemberExistsError`.
    One object is one membership: joining twice raises
    :class:`~etcdsync.errors.GroupError`.  Two objects of one process that join
    the same group through the shared session would write the same key: the
    second one then joins through a private session of its own (with an explicit
    ``session=`` it is refused).

    **Loss.**  A membership ends without ``leave()`` when the session ends (the
    process froze, the network failed, the lease expired or was revoked) or
    someone deletes the member key: then :attr:`lost` is set, :attr:`lost_error`
    is a :class:`~etcdsync.errors.MembershipLostError` and the callbacks of
    :meth:`add_lost_callback` run - the one loss model of every held resource
    (``recipes_docs/loss.md``).  :meth:`guarded_txn` writes only while the
    membership lasts (fenced by :meth:`is_member_compare`).

    Reading the membership (:meth:`members`, :meth:`watch`) needs no join.
    ``async with group:`` leaves on exit.
    """

    def __init__(
        self,
        client: AsyncRecipeClient,
        name: str | bytes,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
    ) -> None:
        raw_name = to_bytes(name, "group name")
        if not raw_name:
            raise errors.InvalidRequest("the group name must not be empty")
        if session is not None and ttl is not None:
            raise errors.InvalidRequest("pass either session or ttl, not both")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise errors.InvalidRequest(f"ttl must be a positive int (seconds), got {ttl!r}")
        super().__init__()
        self._client = client
        self.name = name
        self.prefix = raw_name + b"/"
        """The key prefix of every member key (``name + "/"``)."""
        self._given_session = session
        self._ttl = ttl or DEFAULT_SESSION_TTL
        # Guarded by _state_lock (shared with the keepalive's callback thread):
        self._joining = False
        self._session: AsyncSession | None = None
        self._owns_session = False
        self._claimed: tuple[AsyncSession, bytes] | None = None
        self._member: GroupMember | None = None
        self._key_watcher: AsyncWatcher | None = None

    def _use_session(self, session: AsyncSession | None) -> None:
        """Join through ``session`` from the next join on (a partitioner gives each of
        its runs a session of its own)."""
        self._given_session = session

    # --- state -------------------------------------------------------------------------

    @property
    def session(self) -> AsyncSession | None:
        """The session of the current (or last) membership; None before the first join."""
        return self._session

    @property
    def is_member(self) -> bool:
        """True while this object's membership lasts, as far as this process knows."""
        return self._is_held()

    @property
    def member(self) -> GroupMember | None:
        """This object's member (id, key, value, join revision) while it is a member."""
        with self._state_lock:
            return self._member if self._is_held() else None

    @property
    def member_id(self) -> str | None:
        """This object's member id while it is a member, else None."""
        member = self.member
        return None if member is None else member.id

    @property
    def join_revision(self) -> int | None:
        """The create revision of the member key while a member: the fencing token."""
        member = self.member
        return None if member is None else member.create_revision

    def is_member_compare(self) -> Compare:
        """A txn compare that holds only while this membership lasts (the member key
        exists with this join's create revision).  Raises
        :class:`~etcdsync.errors.NotMemberError` when not a member."""
        with self._state_lock:
            member, held = self._member, self._is_held()
        if not held or member is None:
            raise errors.NotMemberError(f"not a member of {self.name!r}")
        return Compare.create_revision(member.key) == member.create_revision

    async def guarded_txn(
        self,
        success: Iterable[Op],
        failure: Iterable[Op] = (),
        compare: Iterable[Compare] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResponse:
        """Run a txn (``compare`` / ``success`` / ``failure``) only while this
        membership lasts, atomically (see :meth:`AsyncHeldResource.guarded_txn`).

        Raises :class:`~etcdsync.errors.NotMemberError` when not a member and
        :class:`~etcdsync.errors.MembershipLostError` (setting :attr:`lost`) when
        the membership is lost or etcd finds the member key gone: then nothing
        was written.
        """
        return await super().guarded_txn(success, failure, compare, timeout=timeout)

    # --- the loss model's declarations ----------------------------------------------------

    def _fencing_compare(self) -> Compare:
        return self.is_member_compare()

    def _loss(self, reason: str, cause: errors.EtcdError | None) -> errors.MembershipLostError:
        error = errors.MembershipLostError(
            f"membership of {self.name!r} lost: {reason}", reason=reason
        )
        error.__cause__ = cause
        return error

    def _session_lost(
        self, session: AsyncSession, error: errors.EtcdError
    ) -> errors.MembershipLostError:
        return self._loss(SESSION_ENDED, error)

    def _guard_failed(self) -> errors.MembershipLostError:
        session = self._session
        if session is not None and session.is_done:
            return self._loss(SESSION_ENDED, session.error)
        return self._loss(KEY_DELETED, None)

    def _lost_exception(self, error: errors.MembershipLostError) -> errors.EtcdError:
        raised = errors.MembershipLostError(error.message, reason=error.reason)
        raised.__cause__ = error
        return raised

    def _after_loss(self, error: errors.MembershipLostError) -> None:
        # Expected when this process closed its session or client (INFO), else a WARNING.
        member = self._member
        log.log(
            loss_level(error),
            "%s",
            error,
            extra=fields(
                "group",
                self.name,
                key=member.key if member is not None else None,
                lease_id=member.lease if member is not None else None,
                event="lost",
            ),
        )
        # The key is gone (or goes with the lease): the session may serve another
        # member of this group in this process.
        self._release_claim()

    # --- joining -------------------------------------------------------------------------

    async def join(
        self,
        value: str | bytes = b"",
        *,
        member_id: str | None = None,
        timeout: float | None = None,
    ) -> GroupMember:
        """Join the group announcing ``value``; return this member.

        Creates ``<name>/<member id>`` bound to the session's lease, in one txn
        that fails if the key exists: a key of this session (an earlier join that
        was not left) is taken over, its value updated; a key of anyone else
        raises :class:`~etcdsync.errors.GroupMemberExistsError`.  Raises
        :class:`~etcdsync.errors.GroupError` if this object is a member already,
        :class:`~etcdsync.errors.GroupTimeout` after ``timeout`` seconds (nothing
        is left behind), and the session's error
        (:class:`~etcdsync.errors.SessionExpiredError`...) if it has ended.
        """
        proposal = to_bytes(value, "value")
        if member_id is not None:
            check_member_id(member_id)
        deadline = Deadline(timeout)
        with self._state_lock:
            if self._joining or self._holding:
                raise errors.GroupError(
                    f"already a member of {self.name!r} (update() changes the value; "
                    "one object is one membership)"
                )
            self._joining = True
        try:
            await self._cleanup()
            return await self._join(proposal, member_id, deadline)
        except errors.Timeout as exc:
            if deadline.at is None or isinstance(exc, errors.GroupTimeout):
                raise
            raise errors.GroupTimeout(f"could not join {self.name!r} within {timeout} s") from exc
        finally:
            with self._state_lock:
                self._joining = False

    async def _join(self, value: bytes, member_id: str | None, deadline: Deadline) -> GroupMember:
        session, key = await self._enter(member_id)
        created = True  # a key of ours may exist from here on (even if the txn fails)
        try:
            response = await self._client.txn(
                [Compare.create_revision(key) == 0],
                [Op.put(key, value, lease=session.lease_id)],
                [Op.get(key)],
                timeout=deadline.rpc_timeout(),
            )
            if response.succeeded:
                kv = KeyValue(key, value, response.revision, response.revision, 1, session.lease_id)
            else:
                found = response.responses[0]
                assert isinstance(found, GetResponse), "txn get of an existing key"
                if not found.kvs:
                    raise errors.GroupError(f"the member key {key!r} vanished while joining")
                kv = found.kvs[0]
                if kv.lease != session.lease_id:
                    created = False  # not ours: nothing to delete
                    raise errors.GroupMemberExistsError(
                        f"member id {key[len(self.prefix) :].decode()!r} of {self.name!r} is "
                        "taken by another member",
                        member_id=key[len(self.prefix) :].decode("utf-8", "surrogateescape"),
                    )
                if kv.value != value:
                    # An earlier join through this session: keep its place, new value.
                    updated = await self._client.txn(
                        [Compare.create_revision(key) == kv.create_revision],
                        [Op.put(key, value, lease=session.lease_id)],
                        timeout=deadline.rpc_timeout(),
                    )
                    if not updated.succeeded:
                        raise self._vanished(session, key)
                    kv = KeyValue(
                        key,
                        value,
                        kv.create_revision,
                        updated.revision,
                        kv.version + 1,
                        session.lease_id,
                    )
            member = member_from_kv(self.prefix, kv)
            assert member is not None, "a member key"
            with self._state_lock:
                self._member = member
            await self._install(session, member, response.revision)
            return member
        except BaseException:
            self._end_hold()  # if the membership had begun: it never was returned
            with self._state_lock:
                self._member = None
            if created:
                await self._delete_key(session, key, None, None)
            await self._cleanup()
            raise

    def _vanished(self, session: AsyncSession, key: bytes) -> errors.EtcdError:
        if session.is_done:
            return session_error(session)
        return errors.MembershipLostError(
            f"the member key {key!r} was deleted while joining", reason=KEY_DELETED
        )

    async def _enter(self, member_id: str | None) -> tuple[AsyncSession, bytes]:
        """Pick the session of a new membership and claim its key in-process."""
        owns = False
        if self._given_session is not None:
            session = self._given_session
            if session.is_done:
                raise session_error(session)
            key = self._member_key(session, member_id)
            if not await session.claims.claim(self._claim_key(key), 0):
                raise self._taken_in_process(key, member_id)
        else:
            session = await self._client.shared_session(self._ttl)
            key = self._member_key(session, member_id)
            if not await session.claims.claim(self._claim_key(key), 0):
                if member_id is not None:
                    raise self._taken_in_process(key, member_id)
                # Another member of this process uses the shared session's id: join
                # through a session of our own instead.
                session = await self._client.session(ttl=self._ttl)
                key = self._member_key(session, None)
                await session.claims.claim(self._claim_key(key), 0)  # a new session
                owns = True
        with self._state_lock:
            self._session, self._owns_session = session, owns
            self._claimed = (session, self._claim_key(key))
        return session, key

    def _member_key(self, session: AsyncSession, member_id: str | None) -> bytes:
        suffix = format(session.lease_id, "x") if member_id is None else member_id
        return self.prefix + suffix.encode("utf-8")

    def _claim_key(self, key: bytes) -> bytes:
        # The server-side key: equal group names in two namespaces are two groups.
        return self._client.key_prefix + key

    def _taken_in_process(self, key: bytes, member_id: str | None) -> errors.EtcdError:
        shown = key[len(self.prefix) :].decode("utf-8", "surrogateescape")
        if member_id is None:
            return errors.GroupError(
                f"another member of this process is in {self.name!r} through this session "
                f"(as {shown!r}); give each concurrent member its own session"
            )
        return errors.GroupMemberExistsError(
            f"member id {shown!r} of {self.name!r} is taken by another member of this process",
            member_id=shown,
        )

    def _release_claim(self) -> None:
        with self._state_lock:
            claimed, self._claimed = self._claimed, None
        if claimed is not None:
            session, key = claimed
            session.claims.release(key)

    async def _install(
        self, session: AsyncSession, member: GroupMember, seen_revision: int
    ) -> None:
        """Begin the membership and start noticing its loss: the session's end, the
        key's deletion (a watch on the member key)."""
        hold = self._begin_hold(session)
        # require_leader: a member cut off from its leader would never report the
        # key's deletion; with it the watch moves to a member that has a leader.
        watcher = await self._client.watch(
            member.key, start_revision=seen_revision + 1, require_leader=True
        )
        with self._state_lock:
            self._key_watcher = watcher
        spawn(self._follow_key, watcher, session, hold, member, name="etcdsync-group-key")

    async def _follow_key(
        self, watcher: AsyncWatcher, session: AsyncSession, hold: int, member: GroupMember
    ) -> None:
        """Watch the member key: its deletion ends the membership."""
        try:
            while self._hold == hold:
                try:
                    batch = await watcher.get()
                except errors.CompactedError:
                    # Fell behind a compaction: look at the key instead of guessing.
                    now = await self._client.get(member.key)
                    if now.kv is None or now.kv.create_revision != member.create_revision:
                        await self._key_gone(session, hold)
                        return
                    await watcher.cancel()
                    watcher = await self._client.watch(
                        member.key, start_revision=now.revision + 1, require_leader=True
                    )
                    with self._state_lock:
                        self._key_watcher = watcher
                    continue
                for event in batch.events:
                    if event.type is EventType.DELETE:
                        await self._key_gone(session, hold)
                        return
                    with self._state_lock:
                        if self._hold == hold and self._member is not None:
                            self._member = member_from_kv(self.prefix, event.kv) or self._member
        except StopAsyncIteration:
            return  # cancelled by leave() or a new join
        except errors.EtcdError as exc:
            # The client closed or the watch failed: the session reports real losses.
            log.debug("group %r: member key watch ended: %s", self.name, exc)
        finally:
            await watcher.cancel()

    async def _key_gone(self, session: AsyncSession, hold: int) -> None:
        """The member key vanished: tell whether its lease went with it."""
        if session.is_done:
            self._mark_lost(hold, self._loss(SESSION_ENDED, session.error))
            return
        try:
            # An expired or revoked lease deletes its keys before this client's
            # keepalive can notice: ask, so the reason is right.
            await self._client.time_to_live(session.lease_id)
        except errors.LeaseNotFoundError as exc:
            self._mark_lost(hold, self._loss(SESSION_ENDED, session.error or exc))
            return
        except errors.EtcdError:
            pass
        self._mark_lost(hold, self._loss(KEY_DELETED, None))

    async def _check_key(self) -> None:
        """The member key is missing from a view that has seen this join (a
        partitioner's mirror noticed it before the key watch): end the membership
        with the right reason."""
        with self._state_lock:
            if not self._is_held():
                return
            hold, session = self._hold, self._session
        if session is not None:
            await self._key_gone(session, hold)

    # --- while a member ----------------------------------------------------------------

    async def update(self, value: str | bytes, *, timeout: float | None = None) -> GroupMember:
        """Announce a new ``value``; return the updated member.

        The write is guarded by the membership (one :meth:`guarded_txn`); the other
        members see an ``UPDATE``.  Raises :class:`~etcdsync.errors.NotMemberError`
        when not a member and :class:`~etcdsync.errors.MembershipLostError` if the
        membership is (or turns out to be) lost.
        """
        proposal = to_bytes(value, "value")
        with self._state_lock:
            member, session, held = self._member, self._session, self._is_held()
        if not held or member is None or session is None:
            raise errors.NotMemberError(f"not a member of {self.name!r}")
        response = await self.guarded_txn(
            [Op.put(member.key, proposal, lease=session.lease_id)], timeout=timeout
        )
        updated = GroupMember(
            member.id,
            member.key,
            proposal,
            member.create_revision,
            response.revision,
            member.lease,
        )
        with self._state_lock:
            if self._member is member:
                self._member = updated
        return updated

    async def leave(self, *, timeout: float | None = None) -> None:
        """Leave the group: delete the member key (only if it is still this join's).

        Idempotent; :attr:`lost` and the callbacks are not triggered.  If the
        delete fails (e.g. :class:`~etcdsync.errors.Unavailable`, or
        :class:`~etcdsync.errors.GroupTimeout` after ``timeout`` seconds) the
        error is raised and calling ``leave()`` again retries it; until then the
        key lives as long as the lease (the membership has ended locally).
        """
        deadline = Deadline(timeout)
        with self._state_lock:
            member, session = self._member, self._session
        self._end_hold()  # from now on a deletion of the key is no loss
        if member is not None and session is not None and not self._client.closed:
            try:
                await self._delete_key(session, member.key, member.create_revision, deadline)
            except errors.Timeout as exc:
                if deadline.at is None:
                    raise
                raise errors.GroupTimeout(
                    f"could not leave {self.name!r} within {timeout} s"
                ) from exc
        with self._state_lock:
            if self._member is member:
                self._member = None
        await self._cleanup()

    async def _forget(self) -> None:
        """End the membership without deleting the key: its owner is about to revoke
        the lease (a partitioner's stop: the member key and the owner keys then go
        in one revision)."""
        self._end_hold()
        with self._state_lock:
            self._member = None
        await self._cleanup()

    async def _delete_key(
        self,
        session: AsyncSession,
        key: bytes,
        create_revision: int | None,
        deadline: Deadline | None,
    ) -> None:
        """Delete our member key: guarded by its create revision, or (when a failed
        join cannot tell) by our lease.  Raises on failure when ``deadline`` is
        given (a leave), logs it otherwise (a failed join: the key goes with the
        lease)."""
        if create_revision is not None:
            guard = Compare.create_revision(key) == create_revision
        elif session.is_done:
            return
        else:
            guard = Compare.lease(key) == session.lease_id
        try:
            await self._client.txn(
                [guard],
                [Op.delete(key)],
                timeout=None if deadline is None else deadline.rpc_timeout(),
            )
        except errors.ClientClosedError:
            pass  # a closing client revokes its sessions: the key goes with the lease
        except errors.EtcdError as exc:
            if deadline is not None:
                raise
            log.warning("group %r: could not delete %r: %s", self.name, key, exc)

    async def _cleanup(self) -> None:
        """Release what an ended membership still holds: its key watch, its claim and
        its private session."""
        with self._state_lock:
            if self._is_held():
                return
            watcher, self._key_watcher = self._key_watcher, None
            session, owns = self._session, self._owns_session
            self._owns_session = False
        if watcher is not None:
            await watcher.cancel()
        self._release_claim()
        if session is not None and owns:
            await session.close()

    # --- reading the membership ----------------------------------------------------------

    async def members(self, *, timeout: float | None = None) -> list[GroupMember]:
        """The current members, in join order (create revision), with their values.

        Raises :class:`~etcdsync.errors.GroupTimeout` when etcd does not answer
        within ``timeout`` seconds.
        """
        try:
            response = await self._client.get(
                self.prefix,
                prefix=True,
                sort_order="ascend",
                sort_target="create",
                timeout=timeout,
            )
        except errors.Timeout as exc:
            if timeout is None:
                raise
            raise errors.GroupTimeout(
                f"the members of {self.name!r} were not read within {timeout} s"
            ) from exc
        found = (member_from_kv(self.prefix, kv) for kv in response.kvs)
        return [member for member in found if member is not None]

    def watch(self, *, include_existing: bool = True) -> AsyncGroupWatch:
        """Follow the membership: ``async for event in group.watch():``.

        Yields a :class:`~etcdsync.group_types.MembershipEvent` per join, leave and
        update, each once and in revision order, across reconnects and server
        restarts; with ``include_existing`` (default) it starts with a ``JOIN``
        (``initial=True``) for every current member.  The members are read at
        ``async with`` (or ``await watch.start()``), else at the first ``get()``.
        See :class:`~.group_watch.AsyncGroupWatch`.
        """
        return AsyncGroupWatch(self._client, self.prefix, include_existing=include_existing)

    async def __aenter__(self) -> AsyncGroup:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.leave()

    def __repr__(self) -> str:
        member = self.member
        state = f"member {member.id!r}" if member is not None else "not a member"
        return f"<{type(self).__name__} {self.name!r} {state}>"
