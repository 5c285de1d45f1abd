"""The loss model shared by every resource held through a lease-bound key.

A Mutex, a read or write lock, a semaphore slot and an election's leadership are
all *held*: from the moment etcd admits the holder (its key is the oldest, or
among the ``limit`` oldest) until the holder lets go (release, resign).  A hold
can also end without the holder letting go - its session's lease expired or was
revoked, renewals failed, the client closed, someone deleted the key - and the
holder must be told.  :class:`AsyncHeldResource` is that one model:

* :attr:`~AsyncHeldResource.lost` is **one event for the object's whole life**:
  cleared when a new hold (or term) begins, set when that hold is lost, left set
  after the loss until the next hold begins.  An event captured before
  ``acquire()`` or ``campaign()`` therefore fires when the hold that call
  obtains is lost.  A release or resign is not a loss.
* :attr:`~AsyncHeldResource.lost_error` says why; the callbacks given to
  :meth:`~AsyncHeldResource.add_lost_callback` receive the same error (until
  :meth:`~AsyncHeldResource.remove_lost_callback`); they run through the one
  callback policy of :mod:`etcdsync._callbacks` (an exception is logged).
* :meth:`~AsyncHeldResource.guarded_txn` runs a txn only while the hold is
  current, enforced by etcd through the fencing compare, and returns the outer
  response's header (its revision is the write's) with the inner outcome.

Subclasses say what the fencing compare is and which errors they raise; they
call :meth:`_begin_hold`, :meth:`_end_hold` and :meth:`_mark_lost` at their
transitions.  See ``recipes_docs/loss.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from ... import errors
from ... import telemetry as _telemetry
from ..._backends._async import Event, StateLock, wait_event
from ..._callbacks import call_callback
from ...models import TxnResponse
from ...ops import Compare, Op
from .recipe_client import AsyncRecipeClient
from .session import AsyncSession

__all__ = ["AsyncHeldResource", "LostCallback"]

_E = TypeVar("_E", bound=errors.EtcdError)

LostCallback = Callable[[_E], Any]
"""Called with the reason (an :class:`~etcdsync.errors.EtcdError`) when a hold is lost."""


class AsyncHeldResource(Generic[_E]):
    """Something held through a lease-bound key, with one loss model.

    The state - which hold is current, whether it is lost and why - is guarded by
    one :class:`StateLock` (``_state_lock``), which subclasses also use for their
    own few fields: the session's end is reported from the keepalive manager's
    task (its thread, in the sync client) and user threads may read the state.
    """

    _client: AsyncRecipeClient
    _telemetry_kind: str | None = None
    """Which metrics the holds feed once telemetry is on: "lock", "election" or none."""

    def __init__(self) -> None:
        self._state_lock = StateLock()
        self._hold = 0
        """Number of the current (or last) hold; bumped by each new hold and each end."""
        self._holding = False  # a hold has begun and not yet ended (lost or not)
        self._lost = Event()
        self._lost_error: _E | None = None
        self._lost_callbacks: list[LostCallback[_E]] = []
        self._hold_session: AsyncSession | None = None
        self._session_hook: Callable[[errors.EtcdError], None] | None = None

    # --- what subclasses define -----------------------------------------------------------

    def _fencing_compare(self) -> Compare:
        """The compare that holds only while the current hold lasts; raises the
        subclass's "not held" error when there is none."""
        raise NotImplementedError

    def _session_lost(self, session: AsyncSession, error: errors.EtcdError) -> _E:
        """The loss to record when the hold's session ends with ``error``."""
        raise NotImplementedError

    def _guard_failed(self) -> _E:
        """The loss to record when etcd finds the fencing compare false."""
        raise NotImplementedError

    def _lost_exception(self, error: _E) -> errors.EtcdError:
        """What :meth:`guarded_txn` raises once the hold is lost with ``error``."""
        raise NotImplementedError

    def _after_loss(self, error: _E) -> None:
        """Runs once per lost hold, before the event is set and the callbacks run
        (e.g. release an in-process claim).  Must not wait."""

    # --- the public loss API -------------------------------------------------------------

    @property
    def lost(self) -> Event:
        """Set when the current hold (or term) is lost without being released.

        One event for the object's whole life: cleared when a new hold begins
        (``acquire()`` / ``campaign()`` succeeds), set when that hold is lost, and
        left set after the loss until the next hold begins.  Loss is detected
        locally and conservatively (see ``recipes_docs/loss.md``): a process that
        is paused cannot notice it - guard writes with the fencing compare.
        """
        return self._lost

    @property
    def lost_error(self) -> _E | None:
        """Why the current (or last) hold was lost, once :attr:`lost` is set; None
        while the hold lasts and after a new one begins."""
        return self._lost_error

    def add_lost_callback(self, fn: LostCallback[_E]) -> None:
        """Call ``fn(error)`` each time a hold of this object is lost (at once if the
        current hold already is).

        It stays registered for later holds until :meth:`remove_lost_callback`.
        It runs in the task or thread that noticed the loss (the keepalive
        manager's, a key watch's, or the caller of a failed :meth:`guarded_txn`):
        keep it short and never block in it (:attr:`lost` is set once every
        callback has returned).  An exception it raises is logged under the
        ``etcdsync.callbacks`` logger; the other callbacks still run.
        """
        with self._state_lock:
            self._lost_callbacks.append(fn)
            error = self._lost_error if self._holding else None
        if error is not None:
            call_callback("lost", fn, error)

    def remove_lost_callback(self, fn: LostCallback[_E]) -> int:
        """Stop calling ``fn``; returns how many registrations were removed (0 if none)."""
        with self._state_lock:
            before = len(self._lost_callbacks)
            self._lost_callbacks = [cb for cb in self._lost_callbacks if cb != fn]
            return before - len(self._lost_callbacks)

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
        """Run a txn (``compare`` / ``success`` / ``failure``) only while the current
        hold lasts, atomically.

        The ops run in a nested txn guarded by the fencing compare, in one request.
        The returned response has the outer request's header - ``revision`` is the
        store's revision after the write (the write's own revision when it wrote
        anything) - with the nested txn's ``succeeded`` (the outcome of
        ``compare``) and ``responses``.  When etcd finds the fencing compare false
        nothing is written, the hold is marked lost (:attr:`lost` set, callbacks
        called) and the subclass's loss error is raised; it is raised at once,
        without a request, when the loss is already known.
        """
        with self._state_lock:
            hold = self._hold
            known = self._lost_error if self._holding else None
        if known is not None:
            raise self._lost_exception(known)
        guard = self._fencing_compare()
        response = await self._client.txn(
            [guard], [Op.txn(compare, success, failure)], [], timeout=timeout
        )
        if not response.succeeded:
            failed = self._guard_failed()
            self._mark_lost(hold, failed)
            with self._state_lock:
                recorded = self._lost_error if self._hold == hold else None
            raise self._lost_exception(recorded or failed)
        inner = response.responses[0]
        assert isinstance(inner, TxnResponse), "the response of a nested txn"
        return TxnResponse(response.header, inner.succeeded, inner.responses)

    # --- transitions ---------------------------------------------------------------------

    def _is_held(self) -> bool:
        """A hold is current and not known to be lost."""
        return self._holding and self._lost_error is None

    def _begin_hold(self, session: AsyncSession, valid: Callable[[], bool] | None = None) -> int:
        """A new hold through ``session`` begins: clear :attr:`lost`, follow the
        session's end.  Returns the hold's number, for :meth:`_mark_lost`; 0 (and
        nothing begins) when ``valid()``, checked atomically with the transition,
        is False."""
        with self._state_lock:
            if valid is not None and not valid():
                return 0
            old_session, old_hook = self._hold_session, self._session_hook
            self._hold += 1
            hold = self._hold
            self._holding = True
            self._lost_error = None
            self._lost.clear()

            def on_session_end(error: errors.EtcdError) -> None:
                self._mark_lost(hold, self._session_lost(session, error))

            self._hold_session, self._session_hook = session, on_session_end
        if old_session is not None and old_hook is not None:
            old_session.remove_done_callback(old_hook)
        if _telemetry.active is not None:
            _telemetry.active.hold_began(self)
        # Called at once if the session has already ended.
        session.add_done_callback(on_session_end)
        return hold

    def _end_hold(self, hold: int | None = None) -> bool:
        """The current hold ends by the holder's will (release, resign): from now on
        nothing counts as its loss.  With ``hold``, only if it is still the current
        one.  :attr:`lost` is left as it is.  True if a hold was current."""
        with self._state_lock:
            if not self._holding or (hold is not None and hold != self._hold):
                return False
            self._holding = False
            self._hold += 1  # late reports about the ended hold are ignored
            session, hook = self._hold_session, self._session_hook
            self._hold_session = self._session_hook = None
            lost = self._lost_error is not None
        if session is not None and hook is not None:
            session.remove_done_callback(hook)
        if _telemetry.active is not None:
            _telemetry.active.hold_ended(self, lost=lost)
        return True

    def _mark_lost(self, hold: int, error: _E) -> bool:
        """Hold number ``hold`` is lost with ``error`` (if it is still current and not
        lost yet): record it, call the callbacks, then set :attr:`lost` - so whoever
        wakes on the event finds every callback run.  True if this call made the
        transition."""
        with self._state_lock:
            if not self._holding or hold != self._hold or self._lost_error is not None:
                return False
            self._lost_error = error
            callbacks = list(self._lost_callbacks)
            # A lost hold has nothing more to learn from its session.
            session, hook = self._hold_session, self._session_hook
            self._hold_session = self._session_hook = None
        if session is not None and hook is not None:
            session.remove_done_callback(hook)
        if _telemetry.active is not None:
            _telemetry.active.hold_lost(self)
        self._after_loss(error)
        for fn in callbacks:
            call_callback("lost", fn, error)
        with self._state_lock:
            # Unless a new hold began meanwhile (a release alone keeps the error).
            if self._lost_error is error:
                self._lost.set()
        return True
