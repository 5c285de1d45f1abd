"""Leader election on etcd, in the key layout of Go's ``concurrency`` package.

Each candidate writes ``<name>/<lease id in hex>`` holding its proposal, bound to
its session's lease; the leader is the candidate whose key has the lowest create
revision under ``<name>/``.  A candidate waits only for the deletion of the
candidates created before it, so ``etcdctl elect`` and Go programs share one
election with ours.  The leader's create revision is its fencing token: a write
guarded by :meth:`AsyncElection.is_leader_compare` fails once another candidate
could lead.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ... import errors
from ..._backends._async import Event, spawn, wait_event
from ..._keys import to_bytes
from ...models import GetResponse, KeyValue, TxnResponse
from ...ops import Compare, Op
from ...watch_types import EventType, WatchResponse
from ._waiting import Deadline, session_error, wait_for_deletes
from .recipe_client import AsyncRecipeClient
from .session import DEFAULT_SESSION_TTL, AsyncSession

if TYPE_CHECKING:
    from ..watcher import AsyncWatcher

__all__ = ["AsyncElection", "AsyncElectionObserver", "LostCallback"]

log = logging.getLogger("etcdsync.election")

LostCallback = Callable[[errors.LeadershipLostError], Any]

# Two candidates of this process campaigning through one session would write the
# same key and both "win".  Each (session, election) pair therefore admits one
# candidate at a time; a candidate on a shared session that finds its slot taken
# campaigns on a private session instead.  Guarded by a threading lock in both
# flavours: the critical sections never wait.
_CLAIMS_LOCK = threading.Lock()
_CLAIMS: weakref.WeakKeyDictionary[AsyncSession, set[bytes]] = weakref.WeakKeyDictionary()


def _claim(session: AsyncSession, prefix: bytes) -> bool:
    with _CLAIMS_LOCK:
        taken = _CLAIMS.setdefault(session, set())
        if prefix in taken:
            return False
        taken.add(prefix)
        return True


def _unclaim(session: AsyncSession, prefix: bytes) -> None:
    with _CLAIMS_LOCK:
        _CLAIMS.get(session, set()).discard(prefix)


def _session_hook(
    ref: weakref.ref[AsyncElection], session: AsyncSession
) -> Callable[[errors.EtcdError], None]:
    def on_done(error: errors.EtcdError) -> None:
        election = ref()
        if election is not None:
            election._on_session_end(session, error)

    return on_done


class AsyncElection:
    """A leader election named ``name``; create with ``client.election(name)``.

    ``await campaign(value)`` blocks until this candidate leads;
    ``proclaim(value)`` changes the announced value while leading;
    ``resign()`` steps down; ``leader()`` reads the current leader and
    ``observe()`` follows every leadership change.  Observing needs no session;
    campaigning uses ``session`` if given, else the client's shared session for
    ``ttl`` seconds (default 60).

    Leadership ends without a resign when the session ends (the process froze,
    the network failed, the lease expired) or the leader key is deleted: then
    :attr:`lost` is set, :attr:`lost_error` says why and the callbacks given to
    :meth:`add_lost_callback` are called.  Because another candidate may lead
    before this process learns it, guard every write made as leader with
    :meth:`is_leader_compare` (the fencing token) in one txn.

    ``async with election:`` resigns on exit.
    """

    def __init__(
        self,
        client: AsyncRecipeClient,
        name: str | bytes,
        *,
        session: AsyncSession | None = None,
        ttl: int | None = None,
    ) -> None:
        raw_name = to_bytes(name, "election name")
        if not raw_name:
            raise errors.InvalidRequest("the election name must not be empty")
        if session is not None and ttl is not None:
            raise errors.InvalidRequest("pass either session or ttl, not both")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise errors.InvalidRequest(f"ttl must be a positive int (seconds), got {ttl!r}")
        self._client = client
        self.name = name
        self.prefix = raw_name + b"/"
        """The key prefix every candidate's key starts with (``name + "/"``)."""
        self._given_session = session
        self._ttl = ttl or DEFAULT_SESSION_TTL
        self._lock = threading.Lock()  # state shared with the session's callback thread
        self._term = 0  # bumped per candidacy; callbacks of an older one are ignored
        self._campaigning = False
        self._session: AsyncSession | None = None
        self._owns_session = False
        self._key: bytes | None = None
        self._rev = 0
        self._leader = False
        self._key_watcher: AsyncWatcher | None = None
        self._hooked: weakref.WeakSet[AsyncSession] = weakref.WeakSet()
        self._lost_callbacks: list[LostCallback] = []
        self.lost = Event()
        """Set when the current (or last) leadership ended without a resign."""
        self.lost_error: errors.LeadershipLostError | None = None
        """Why leadership was lost, once :attr:`lost` is set."""

    # --- state -------------------------------------------------------------------------

    @property
    def session(self) -> AsyncSession | None:
        """The session of the current candidacy (None before the first campaign)."""
        return self._session

    @property
    def is_leader(self) -> bool:
        """True while this candidate leads, as far as this process knows."""
        return self._leader

    @property
    def leader_key(self) -> bytes | None:
        """This candidate's key while it leads, else None."""
        return self._key if self._leader else None

    @property
    def leader_revision(self) -> int | None:
        """The create revision of the leader key while leading: the fencing token."""
        return self._rev if self._leader else None

    def is_leader_compare(self) -> Compare:
        """A txn compare that holds only while this candidate's leadership lasts.

        ``client.txn([election.is_leader_compare()], [...])`` applies the writes
        only if the leader key still exists with this term's create revision.
        Raises :class:`~etcdsync.errors.NotElectedError` when not leading.
        """
        key, rev = self._key, self._rev
        if not self._leader or key is None:
            raise errors.NotElectedError(f"not the leader of {self.name!r}")
        return Compare.create_revision(key) == rev

    async def guarded_txn(
        self,
        success: Iterable[Op],
        failure: Iterable[Op] = (),
        compare: Iterable[Compare] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResponse:
        """Run a txn (``compare`` / ``success`` / ``failure``) only while this
        leadership lasts, atomically; return its (inner) response.

        Raises :class:`~etcdsync.errors.NotElectedError` when not leading and
        :class:`~etcdsync.errors.LeadershipLostError` (setting :attr:`lost`) when
        etcd finds the leader key gone: then nothing was written.
        """
        with self._lock:
            term = self._term
        guard = self.is_leader_compare()
        response = await self._client.txn(
            [guard], [Op.txn(compare, success, failure)], timeout=timeout
        )
        if not response.succeeded:
            self._on_lost(term, "key deleted", None)
            raise self.lost_error or errors.NotElectedError(f"not the leader of {self.name!r}")
        inner = response.responses[0]
        assert isinstance(inner, TxnResponse)
        return inner

    async def wait_lost(self, timeout: float | None = None) -> bool:
        """Wait until the current leadership is lost; True if it was within ``timeout``."""
        return await wait_event(self.lost, timeout)

    def add_lost_callback(self, fn: LostCallback) -> None:
        """Call ``fn(error)`` whenever a leadership of this object ends without a resign.

        It runs in the task or thread that noticed (the session's keepalive or the
        key watch): keep it short and never block in it.
        """
        with self._lock:
            self._lost_callbacks.append(fn)

    # --- campaigning -------------------------------------------------------------------

    async def campaign(self, value: str | bytes, *, timeout: float | None = None) -> None:
        """Become a candidate with proposal ``value`` and wait until elected.

        Returns once this candidate leads.  Raises
        :class:`~etcdsync.errors.ElectionTimeout` if not elected within
        ``timeout`` seconds (the candidacy is withdrawn: its key is deleted), the
        session's error (:class:`~etcdsync.errors.SessionExpiredError`...) if the
        session ends while waiting, and
        :class:`~etcdsync.errors.LeadershipLostError` if the key vanished while
        waiting.  Cancelling the call withdraws the candidacy too.  Called while
        already leading, it only changes the value (like :meth:`proclaim`).
        """
        proposal = to_bytes(value, "value")
        deadline = Deadline(timeout)
        if self._leader:
            await self.proclaim(proposal)
            return
        with self._lock:
            if self._campaigning:
                raise errors.ElectionError(f"a campaign for {self.name!r} is already running")
            self._campaigning = True
        try:
            await self._cleanup()
            await self._campaign(proposal, deadline)
        finally:
            self._campaigning = False

    async def _campaign(self, proposal: bytes, deadline: Deadline) -> None:
        session, term = await self._enter()
        key = self.prefix + format(session.lease_id, "x").encode()
        try:
            response = await self._client.txn(
                [Compare.create_revision(key) == 0],
                [Op.put(key, proposal, lease=session.lease_id)],
                [Op.get(key)],
                timeout=deadline.rpc_timeout(),
            )
            if response.succeeded:
                rev = response.revision
            else:
                # Our session already has a key here (an earlier candidacy that was
                # not withdrawn): keep its place in the queue, update its value.
                found = response.responses[0]
                assert isinstance(found, GetResponse) and found.kvs, "txn get of an existing key"
                rev = found.kvs[0].create_revision
                if found.kvs[0].value != proposal:
                    updated = await self._client.txn(
                        [Compare.create_revision(key) == rev],
                        [Op.put(key, proposal, lease=session.lease_id)],
                        timeout=deadline.rpc_timeout(),
                    )
                    if not updated.succeeded:
                        raise self._vanished(session, key)
            with self._lock:
                self._key, self._rev = key, rev
            await wait_for_deletes(
                self._client,
                self.prefix,
                rev - 1,
                session=session,
                timeout=deadline.remaining(),
            )
            # Every older candidate is gone; make sure we still are not (an expired
            # lease deletes our key too, and then nobody older remains either).
            check = await self._client.get(key, timeout=deadline.rpc_timeout())
            if check.kv is None or check.kv.create_revision != rev:
                raise self._vanished(session, key)
            await self._install(session, term, key, rev, check.revision)
        except BaseException as exc:
            await self._withdraw(term)
            if (
                deadline.timeout is not None
                and isinstance(exc, TimeoutError)
                and not isinstance(exc, errors.ElectionTimeout)
            ):
                raise errors.ElectionTimeout(
                    f"not elected leader of {self.name!r} within the timeout"
                ) from exc
            raise

    def _vanished(self, session: AsyncSession, key: bytes) -> errors.EtcdError:
        if session.is_done:
            return session_error(session)
        return errors.LeadershipLostError(
            f"the candidate key {key!r} was deleted while campaigning", reason="key deleted"
        )

    async def _enter(self) -> tuple[AsyncSession, int]:
        """Pick the session of a new candidacy and claim its slot for this election."""
        owns = False
        if self._given_session is not None:
            session = self._given_session
            if session.is_done:
                raise session_error(session)
            if not _claim(session, self.prefix):
                raise errors.ElectionError(
                    f"another candidate of this process campaigns for {self.name!r} with "
                    "this session; give each concurrent candidate its own session"
                )
        else:
            session = await self._client.shared_session(self._ttl)
            if not _claim(session, self.prefix):
                session = await self._client.session(ttl=self._ttl)
                _claim(session, self.prefix)
                owns = True
        with self._lock:
            self._term += 1
            self._session, self._owns_session = session, owns
            self._key, self._rev = None, 0
            return session, self._term

    async def _install(
        self, session: AsyncSession, term: int, key: bytes, rev: int, seen_revision: int
    ) -> None:
        """Record the won leadership and start noticing its loss."""
        with self._lock:
            if term != self._term:
                raise errors.ElectionError("the candidacy was withdrawn while campaigning")
            self.lost = Event()
            self.lost_error = None
            self._leader = True
        with self._lock:
            hook = session not in self._hooked
            self._hooked.add(session)
        if hook:
            # Once per session (the shared one outlives many terms), and weakly: the
            # session must not keep every election that ever used it alive.
            session.add_done_callback(_session_hook(weakref.ref(self), session))
        # require_leader (here and below): a member cut off from its leader never
        # reports the key's deletion; the header makes it end the stream so the watch
        # resumes on a member that has a leader.
        watcher = await self._client.watch(
            key, start_revision=seen_revision + 1, require_leader=True
        )
        with self._lock:
            self._key_watcher = watcher
        spawn(self._follow_key, watcher, session, term, key, rev, name="etcdsync-election-key")

    async def _follow_key(
        self, watcher: AsyncWatcher, session: AsyncSession, term: int, key: bytes, rev: int
    ) -> None:
        """Watch the leader key: its deletion ends the leadership."""
        try:
            while term == self._term:
                try:
                    batch = await watcher.get()
                except errors.CompactedError:
                    # Fell behind a compaction: look at the key instead of guessing.
                    now = await self._client.get(key)
                    if now.kv is None or now.kv.create_revision != rev:
                        await self._key_gone(session, term)
                        return
                    await watcher.cancel()
                    watcher = await self._client.watch(
                        key, start_revision=now.revision + 1, require_leader=True
                    )
                    with self._lock:
                        self._key_watcher = watcher
                    continue
                if any(event.type is EventType.DELETE for event in batch.events):
                    await self._key_gone(session, term)
                    return
        except StopAsyncIteration:
            return  # cancelled by resign or a new campaign
        except errors.EtcdError as exc:
            # The client closed or the watch failed: the session reports real losses.
            log.debug("election %r: leader key watch ended: %s", self.name, exc)
        finally:
            await watcher.cancel()

    async def _key_gone(self, session: AsyncSession, term: int) -> None:
        """The leader key vanished: tell whether its lease went with it."""
        if session.is_done:
            self._on_lost(term, "session ended", session.error)
            return
        try:
            # An expired or revoked lease deletes its keys before this client's
            # keepalive can notice: ask, so the reason is right.
            await self._client.time_to_live(session.lease_id)
        except errors.LeaseNotFoundError as exc:
            self._on_lost(term, "session ended", session.error or exc)
            return
        except errors.EtcdError:
            pass
        self._on_lost(term, "key deleted", None)

    def _on_session_end(self, session: AsyncSession, error: errors.EtcdError) -> None:
        with self._lock:
            term, current = self._term, self._session is session
        if current:
            self._on_lost(term, "session ended", error)

    def _on_lost(self, term: int, reason: str, cause: errors.EtcdError | None) -> None:
        with self._lock:
            if term != self._term or not self._leader:
                return
            self._leader = False
            session = self._session
            error = errors.LeadershipLostError(
                f"leadership of {self.name!r} lost: {reason}", reason=reason
            )
            error.__cause__ = cause
            self.lost_error = error
            callbacks = list(self._lost_callbacks)
            lost = self.lost
        if session is not None:
            _unclaim(session, self.prefix)
        log.warning("%s", error)
        lost.set()
        for fn in callbacks:
            try:
                fn(error)
            except Exception:
                log.exception("election %r: lost callback %r failed", self.name, fn)

    async def _withdraw(self, term: int, *, strict: bool = False) -> None:
        """Delete this candidacy's key (only if it is still ours) and release its slot.

        With ``strict`` a failed delete is raised and the candidacy kept, so that
        the caller can retry; otherwise it is logged (the key then goes with the
        lease).
        """
        with self._lock:
            if term != self._term:
                return
            self._leader = False
            key, rev, session = self._key, self._rev, self._session
        if session is None or self._client.closed:
            return  # nothing to delete with: a closed client revoked its shared sessions
        guessed_key = self.prefix + format(session.lease_id, "x").encode()
        try:
            if key is not None and rev:
                await self._client.txn([Compare.create_revision(key) == rev], [Op.delete(key)])
            elif not session.is_done:
                # The put's outcome is unknown (e.g. it timed out): a key under our
                # name bound to our lease can only be ours.
                await self._client.txn(
                    [Compare.lease(guessed_key) == session.lease_id], [Op.delete(guessed_key)]
                )
        except errors.EtcdError as exc:
            if strict:
                raise
            log.warning("election %r: could not withdraw %r: %s", self.name, key, exc)
        with self._lock:
            if term != self._term:
                return
            self._term += 1
            self._key, self._rev = None, 0
        await self._cleanup()

    async def _cleanup(self) -> None:
        """Release what an ended candidacy still holds: its slot, watch and private session."""
        with self._lock:
            if self._leader:
                return
            watcher, self._key_watcher = self._key_watcher, None
            session, owns = self._session, self._owns_session
            self._owns_session = False
        if watcher is not None:
            await watcher.cancel()
        if session is not None:
            _unclaim(session, self.prefix)
            if owns:
                await session.close()

    # --- while leading -----------------------------------------------------------------

    async def proclaim(self, value: str | bytes) -> None:
        """Announce a new ``value`` as the leader, without a new election.

        The write is guarded by the leader key's create revision.  Raises
        :class:`~etcdsync.errors.NotElectedError` when not leading, and
        :class:`~etcdsync.errors.LeadershipLostError` if leadership turned out to be
        lost (the key is gone).
        """
        proposal = to_bytes(value, "value")
        with self._lock:
            key, rev, session, term = self._key, self._rev, self._session, self._term
            leading = self._leader
        if not leading or key is None or session is None:
            raise errors.NotElectedError(f"not the leader of {self.name!r}")
        response = await self._client.txn(
            [Compare.create_revision(key) == rev],
            [Op.put(key, proposal, lease=session.lease_id)],
        )
        if not response.succeeded:
            self._on_lost(term, "key deleted", None)
            raise self.lost_error or errors.NotElectedError(f"not the leader of {self.name!r}")

    async def resign(self) -> None:
        """Step down (or withdraw a candidacy): delete this candidate's key.

        Only a key with this candidacy's create revision is deleted, so a late or
        repeated resign never removes a newer candidate's key.  Idempotent; the
        :attr:`lost` event and callbacks are not triggered.  If the delete fails
        (e.g. :class:`~etcdsync.errors.Unavailable`) the error is raised and calling
        ``resign()`` again retries it; until then the key lives as long as the lease.
        """
        with self._lock:
            term = self._term
            self._leader = False  # from now on a deletion of our key is no "loss"
        await self._withdraw(term, strict=True)

    # --- observing ---------------------------------------------------------------------

    async def leader(self, *, timeout: float | None = None) -> KeyValue | None:
        """The current leader's key-value (its proposal is ``.value``), or None if none."""
        response = await self._client.get(
            self.prefix,
            prefix=True,
            sort_order="ASCEND",
            sort_target="CREATE",
            limit=1,
            timeout=timeout,
        )
        return response.kv

    def observe(self) -> AsyncElectionObserver:
        """Follow leadership changes: ``async for leader in election.observe():``.

        Yields the current leader first (or waits for one), then every change of
        leader or of its proposal, each once and in order (see
        :class:`AsyncElectionObserver`).
        """
        return AsyncElectionObserver(self._client, self.prefix)

    async def __aenter__(self) -> AsyncElection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.resign()

    def __repr__(self) -> str:
        state = "leader" if self._leader else "campaigning" if self._campaigning else "idle"
        return f"<{type(self).__name__} {self.name!r} {state}>"


class AsyncElectionObserver:
    """Leadership changes of one election, as :class:`~etcdsync.KeyValue` of the leader key.

    Built from one read of every candidate at revision R and one watch from R+1,
    so no change falls between them.  The candidates are replayed revision by
    revision: every leader that held the election at some revision is reported,
    in order, including the proposals it proclaimed; a leader that dies is
    followed by the next candidate (or, if there is none, by the next to
    appear).  A change is a new (key, create revision, value) of the leader.
    Only when the watch falls behind a compaction are intermediate leaders
    skipped: the observer then re-reads the candidates and carries on from the
    current leader (counted in :attr:`resyncs`).

    ``get(timeout)`` returns the next change (raising
    :class:`~etcdsync.errors.Timeout`); iteration ends after :meth:`cancel`;
    :class:`~etcdsync.errors.ClientClosedError` ends it when the client closes.
    """

    def __init__(self, client: AsyncRecipeClient, prefix: bytes) -> None:
        self._client = client
        self._prefix = prefix
        self._watcher: AsyncWatcher | None = None
        self._candidates: dict[bytes, KeyValue] = {}
        self._last: tuple[bytes, int, bytes] | None = None
        self._pending: deque[KeyValue] = deque()
        self._cancelled = False
        self.resyncs = 0
        """How many times a compaction forced a fresh read of the candidates."""

    async def _sync(self, timeout: float | None) -> None:
        response = await self._client.get(self._prefix, prefix=True, timeout=timeout)
        self._candidates = {kv.key: kv for kv in response.kvs}
        watcher = await self._client.watch(
            self._prefix,
            prefix=True,
            start_revision=response.revision + 1,
            require_leader=True,
            timeout=timeout,
        )
        if self._cancelled:  # cancel() ran (from another thread) while we synced
            await watcher.cancel()
            return
        self._watcher = watcher
        self._note_leader()

    def _note_leader(self) -> None:
        if not self._candidates:
            return
        leader = min(self._candidates.values(), key=lambda kv: kv.create_revision)
        identity = (leader.key, leader.create_revision, leader.value)
        if identity != self._last:
            self._last = identity
            self._pending.append(leader)

    def _apply(self, batch: WatchResponse) -> None:
        revision = 0
        for event in batch.events:
            if revision and event.revision != revision:
                self._note_leader()  # the state after each revision counts
            revision = event.revision
            if event.type is EventType.PUT:
                self._candidates[event.key] = event.kv
            else:
                self._candidates.pop(event.key, None)
        self._note_leader()

    async def get(self, timeout: float | None = None) -> KeyValue:
        """The next leadership change; raises :class:`~etcdsync.errors.Timeout` after
        ``timeout`` seconds without one, and ``StopAsyncIteration`` once cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._pending:
            if self._cancelled:
                raise StopAsyncIteration
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                if self._watcher is None:
                    await self._sync(left)
                    continue
                batch = await self._watcher.get(timeout=left)
            except errors.CompactedError:
                await self._drop_watcher()
                self.resyncs += 1
                continue
            except TimeoutError:
                if timeout is None:
                    raise  # a request of the client's timed out, not our wait
                raise errors.Timeout(f"no leadership change within {timeout} s") from None
            self._apply(batch)
        return self._pending.popleft()

    async def _drop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.cancel()

    def __aiter__(self) -> AsyncElectionObserver:
        return self

    async def __anext__(self) -> KeyValue:
        return await self.get()

    async def cancel(self) -> None:
        """Stop observing; iteration ends after the changes already received."""
        self._cancelled = True
        await self._drop_watcher()

    async def __aenter__(self) -> AsyncElectionObserver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cancel()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} prefix={self._prefix!r}>"
