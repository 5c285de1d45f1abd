"""Leader-only work: a term of leadership, ``leadership()`` and ``run()``.

``async with election.leadership(value) as term:`` campaigns on entry and
resigns on exit; the :class:`AsyncTerm` it gives is *this* term: its fencing
token (``term.revision``, the leader key's create revision), ``term.lost`` (an
event of its own, set when this term is lost), ``term.check()`` and
``term.guarded_txn()``.

``await election.run(work, value)`` campaigns, runs ``await work(term)`` while
leading and resigns when it ends.  In the asyncio client the work runs in a task
of its own that is **cancelled** as soon as the client learns the term is lost
(``term.lost`` is set first); in the sync client it runs in the calling thread,
which cannot be interrupted: the work is told through ``term.lost`` and
``term.check()``.  With ``forever=True`` a lost term is followed by a new
campaign (after a backoff that grows while terms keep failing), through
revoked sessions and outages, until the work returns or raises; with
``install_signal_handlers=True`` SIGTERM and SIGINT resign and make ``run()``
return None.

This module is typed against :class:`AsyncLeaderElection` (what it needs of an
election), not the election class, which delegates ``leadership()`` and
``run()`` here.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from ... import errors
from ..._backends._async import Event, StateLock, sleep, wait_event
from ..._backends.interrupt import AsyncSignalStop, AsyncWorkCall, CallCancelled
from ..._keys import to_bytes
from ..._logfields import fields, loss_level
from ...models import TxnResponse
from ...ops import Compare, Op
from .session import AsyncSession

__all__ = ["AsyncLeaderElection", "AsyncLeadership", "AsyncTerm", "run_leadership"]

log = logging.getLogger("etcdsync.election")

_R = TypeVar("_R")

# Between campaigns of run(forever=True): a delay drawn in [d/2, d], d doubling
# from BACKOFF_START after each failed campaign or short term, up to BACKOFF_MAX.
BACKOFF_START = 0.2
BACKOFF_MAX = 5.0


class AsyncLeaderElection(Protocol):
    """What leader-only work needs of an election (:class:`~.election.AsyncElection`)."""

    name: str | bytes

    @property
    def session(self) -> AsyncSession | None: ...

    @property
    def leader_key(self) -> bytes | None: ...

    @property
    def leader_revision(self) -> int | None: ...

    @property
    def lost_error(self) -> errors.LeadershipLostError | None: ...

    async def campaign(self, value: str | bytes, *, timeout: float | None = None) -> None: ...

    async def resign(self) -> None: ...

    async def guarded_txn(
        self,
        success: Iterable[Op],
        failure: Iterable[Op] = (),
        compare: Iterable[Compare] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResponse: ...

    def add_lost_callback(self, fn: Callable[[errors.LeadershipLostError], object]) -> None: ...

    def remove_lost_callback(self, fn: Callable[[errors.LeadershipLostError], object]) -> int: ...


class AsyncTerm:
    """One term of leadership: from the won campaign to the resign or the loss.

    ``revision`` is the fencing token (the leader key's create revision, growing
    with every term) and ``key`` the leader key.  :attr:`lost` is an event of
    this term only: set when the term is lost (the session ended, the key was
    deleted), never cleared, and never set by a resign.  The term stays the
    same object after it ends: :meth:`check` and :meth:`guarded_txn` then raise.
    """

    def __init__(
        self,
        election: AsyncLeaderElection,
        value: bytes,
        key: bytes,
        revision: int,
        session: AsyncSession | None,
    ) -> None:
        self.election = election
        self.name = election.name
        """The election's name."""
        self.value = value
        """The proposal this term was won with."""
        self.key = key
        """The leader key (``<name>/<lease id in hex>``)."""
        self.revision = revision
        """The fencing token: the leader key's create revision."""
        self.session = session
        """The session the leader key is bound to."""
        self.started = time.monotonic()
        self._lock = StateLock()
        self._lost = Event()
        self._lost_error: errors.LeadershipLostError | None = None
        self._ended = False
        self._on_loss: list[Callable[[], None]] = []

    # --- state -----------------------------------------------------------------------------

    @property
    def lost(self) -> Event:
        """Set when this term is lost without a resign; never cleared."""
        return self._lost

    @property
    def lost_error(self) -> errors.LeadershipLostError | None:
        """Why this term was lost (``reason``: "session ended", "key deleted"), or None."""
        return self._lost_error

    @property
    def active(self) -> bool:
        """True while this term lasts, as far as this process knows."""
        return not self._ended and self._lost_error is None

    def is_leader_compare(self) -> Compare:
        """A txn compare that holds only while this term lasts (the leader key still
        exists with this term's create revision)."""
        return Compare.create_revision(self.key) == self.revision

    def check(self) -> None:
        """Raise :class:`~etcdsync.errors.LeadershipLostError` if this term is over.

        Raised with the loss's ``reason`` (the loss chained) once the term is
        lost, with ``reason="resigned"`` once it ended by a resign.  A cheap local
        check, as conservative as :attr:`lost`: guard writes with
        :meth:`guarded_txn` as well.
        """
        error = self._lost_error
        if error is not None:
            raised = errors.LeadershipLostError(error.message, reason=error.reason)
            raised.__cause__ = error
            raise raised
        if self._ended:
            raise errors.LeadershipLostError(
                f"the term {self.revision} of {self.name!r} has ended (resigned)",
                reason="resigned",
            )

    async def wait_lost(self, timeout: float | None = None) -> bool:
        """Wait until :attr:`lost` is set; True if it was within ``timeout`` seconds."""
        return await wait_event(self._lost, timeout)

    async def guarded_txn(
        self,
        success: Iterable[Op],
        failure: Iterable[Op] = (),
        compare: Iterable[Compare] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResponse:
        """Run a txn (``compare`` / ``success`` / ``failure``) only while this term
        lasts, atomically: the election's ``guarded_txn`` (the ops run in a nested
        txn behind the fencing compare, in one request).

        Returns the response with the real header and the outcome of
        ``compare``.  Raises :class:`~etcdsync.errors.LeadershipLostError` when
        the term is over or etcd finds the leader key gone (nothing is written
        then; the term is marked lost).
        """
        self.check()
        if self.election.leader_revision != self.revision:
            # Our term ended and the election object began another one meanwhile.
            raise errors.LeadershipLostError(
                f"the term {self.revision} of {self.name!r} is no longer current",
                reason="resigned",
            )
        return await self.election.guarded_txn(success, failure, compare, timeout=timeout)

    # --- transitions (called by the election's callbacks and the runners) ------------------

    def _mark_lost(self, error: errors.LeadershipLostError) -> None:
        with self._lock:
            if self._lost_error is not None or self._ended:
                return
            self._lost_error = error
            hooks = list(self._on_loss)
        self._lost.set()
        for hook in hooks:
            hook()

    def _on_loss_call(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` when this term is lost (at once if it already is)."""
        with self._lock:
            lost = self._lost_error is not None
            if not lost:
                self._on_loss.append(hook)
        if lost:
            hook()

    def _end(self) -> None:
        with self._lock:
            self._ended = True
            self._on_loss = []

    def __repr__(self) -> str:
        state = "lost" if self._lost_error is not None else "ended" if self._ended else "active"
        return f"<{type(self).__name__} {self.name!r} revision={self.revision} {state}>"


async def _begin_term(
    election: AsyncLeaderElection, value: bytes, timeout: float | None
) -> AsyncTerm:
    """Campaign until elected and return the new term, following its loss."""
    await election.campaign(value, timeout=timeout)
    try:
        key, revision = election.leader_key, election.leader_revision
        term = AsyncTerm(election, value, key or b"", revision or 0, election.session)
        if key is None or revision is None:
            # Lost between the campaign's return and now.
            error = election.lost_error or errors.LeadershipLostError(
                f"leadership of {election.name!r} lost at once", reason="session ended"
            )
            term._mark_lost(error)
            return term
        # Called at once if the term is lost already; runs in the task or thread
        # that notices a loss (the keepalive's, the key watch's).
        election.add_lost_callback(term._mark_lost)
    except BaseException:
        try:
            await election.resign()
        except errors.EtcdError as exc:
            log.log(
                loss_level(exc),
                "election %r: resign failed (%s)",
                election.name,
                exc,
                extra=fields("election", election.name, event="resign-failed"),
            )
        raise
    return term


async def _end_term(term: AsyncTerm, *, quiet: bool) -> None:
    """Stop following the term and resign; a failed resign is logged when ``quiet``
    (the key then goes with the lease), else raised."""
    term.election.remove_lost_callback(term._mark_lost)
    term._end()
    try:
        await term.election.resign()
    except errors.EtcdError as exc:
        if not quiet:
            raise
        # After a close at shutdown the lease is being revoked anyway: INFO, not WARNING.
        log.log(
            loss_level(exc),
            "election %r: resign failed (%s); the key goes with its lease",
            term.name,
            exc,
            extra=fields("election", term.name, key=term.key, event="resign-failed"),
        )


class AsyncLeadership:
    """``async with election.leadership(value, timeout=...) as term:`` - elected on
    entry, resigned on exit (see :meth:`~.election.AsyncElection.leadership`)."""

    def __init__(
        self,
        election: AsyncLeaderElection,
        value: str | bytes,
        *,
        timeout: float | None = None,
    ) -> None:
        self._election = election
        self._value = to_bytes(value, "value")
        self._timeout = timeout
        self._term: AsyncTerm | None = None

    @property
    def term(self) -> AsyncTerm | None:
        """The term of the current (or last) ``async with`` block."""
        return self._term

    async def __aenter__(self) -> AsyncTerm:
        if self._term is not None and not self._term._ended:
            raise errors.ElectionError("this leadership block is already entered")
        self._term = await _begin_term(self._election, self._value, self._timeout)
        return self._term

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        term = self._term
        if term is not None and not term._ended:
            # A failed resign is raised only when it is the block's sole error.
            await _end_term(term, quiet=exc is not None)


def _is_retryable(exc: errors.EtcdError) -> bool:
    """Whether a failed campaign of run(forever=True) is worth repeating."""
    if isinstance(exc, errors.ClientClosedError):
        return False
    return isinstance(
        exc,
        (
            errors.LeaseNotFoundError,  # the session ended (SessionExpiredError...)
            errors.NotElectedError,  # LeadershipLostError: the key vanished meanwhile
            errors.ConnectionError_,
            errors.Timeout,
            errors.InternalServerError,
        ),
    )


class _Runner(Generic[_R]):
    """The loop of ``election.run()``: campaign, work, resign; again if ``forever``."""

    def __init__(
        self,
        election: AsyncLeaderElection,
        work: Callable[[AsyncTerm], Awaitable[_R]],
        value: bytes,
        *,
        timeout: float | None,
        forever: bool,
        fixed_session: bool,
        stopper: AsyncSignalStop | None,
    ) -> None:
        self.election = election
        self.name = election.name
        self.work = work
        self.value = value
        self.timeout = timeout
        self.forever = forever
        self.fixed_session = fixed_session
        self.stopper = stopper
        self.delay = BACKOFF_START

    def _stop_requested(self) -> bool:
        return self.stopper is not None and self.stopper.received is not None

    def _interruptible(self, on: bool) -> None:
        if self.stopper is not None:
            self.stopper.interruptible = on

    async def _pause(self, why: str) -> None:
        delay = random.uniform(self.delay / 2, self.delay)
        log.warning(
            "election %r: %s; campaigning again in %.1f s",
            self.name,
            why,
            delay,
            extra=fields("election", self.name, event="campaign-again"),
        )
        await sleep(delay)
        self.delay = min(self.delay * 2, BACKOFF_MAX)

    async def run(self) -> _R | None:
        while not self._stop_requested():
            try:
                term = await _begin_term(self.election, self.value, self.timeout)
            except errors.EtcdError as exc:
                if not self.forever or not _is_retryable(exc):
                    raise
                if self.fixed_session and isinstance(exc, errors.LeaseNotFoundError):
                    raise  # an explicit session that ended is not replaced
                await self._pause(f"campaign failed ({exc})")
                continue
            done, result = await self._lead(term)
            if done:
                return result
            if self._stop_requested():
                break
            if not self.forever:
                error = term.lost_error
                raised = errors.LeadershipLostError(
                    f"leadership of {self.name!r} lost while the work ran"
                    + (f": {error.reason}" if error is not None and error.reason else ""),
                    reason=error.reason if error is not None else None,
                )
                raise raised from error
            if time.monotonic() - term.started > BACKOFF_MAX * 2:
                self.delay = BACKOFF_START  # a long term: not a failing loop
            reason = term.lost_error.reason if term.lost_error is not None else "lost"
            await self._pause(f"leadership lost ({reason})")
        return None

    async def _lead(self, term: AsyncTerm) -> tuple[bool, _R | None]:
        """Run the work for ``term`` and resign.  (True, result) when the work ended
        on its own; (False, None) when the term was lost."""
        call = AsyncWorkCall()
        term._on_loss_call(call.cancel)  # asyncio: cancel the work; threads: nothing
        try:
            if term.lost.is_set():
                raise CallCancelled("lost before the work started")
            result = await call.run(self.work, term)
        except CallCancelled:
            await self._finish(term)
            return False, None
        except Exception as exc:
            await self._finish(term)
            if term.lost.is_set():
                log.warning(
                    "election %r: the work ended with %r after the term was lost",
                    self.name,
                    exc,
                )
                return False, None
            raise
        except BaseException:
            await self._finish(term)  # interrupted: cancelled, a signal, Ctrl-C
            raise
        lost = term.lost.is_set()
        await self._finish(term)
        return (False, None) if lost else (True, result)

    async def _finish(self, term: AsyncTerm) -> None:
        self._interruptible(False)  # a signal now must not interrupt the resign
        try:
            await _end_term(term, quiet=True)
        finally:
            self._interruptible(True)


async def run_leadership(
    election: AsyncLeaderElection,
    work: Callable[[AsyncTerm], Awaitable[_R]],
    value: str | bytes,
    *,
    timeout: float | None = None,
    forever: bool = False,
    install_signal_handlers: bool = False,
    fixed_session: bool = False,
) -> _R | None:
    """Campaign, run ``work(term)`` while leading, resign; see the election's ``run()``."""
    proposal = to_bytes(value, "value")
    if not callable(work):
        raise errors.InvalidRequest(f"work must be callable, got {work!r}")
    if forever and timeout is not None:
        raise errors.InvalidRequest("run(forever=True) campaigns until elected: no timeout")
    stopper = AsyncSignalStop() if install_signal_handlers else None
    runner = _Runner(
        election,
        work,
        proposal,
        timeout=timeout,
        forever=forever,
        fixed_session=fixed_session,
        stopper=stopper,
    )
    if stopper is not None:
        stopper.install()
    try:
        return await runner.run()
    except BaseException as exc:
        if stopper is not None and stopper.stopped(exc):
            log.info(
                "election %r: stopped by signal %s",
                election.name,
                stopper.received,
                extra=fields("election", election.name, event="stopped"),
            )
            return None
        raise
    finally:
        if stopper is not None:
            stopper.remove()
