"""In-process claims: one holder per key among the holders that share a session.

Every acquire or campaign through one session writes the same key for a given
name (``<name>/<lease id hex>``, Go's layout), so two tasks or threads of one
process that lock the same name through one session would both find "their" key
and both believe they hold it.  Before asking etcd, such a holder therefore
claims the key in its session's :class:`AsyncClaims`: a claim is exclusive within
the process, waiters are served first come, first served, and a claim is
released only once the key it stands for is gone from etcd (or will go with the
lease).

The Mutex waits for a claim (within its acquire's deadline); the Election tries
once and, when the shared session's claim is taken, campaigns on a private
session instead.  A claim whose holder gave up and whose key is being deleted
(in the background, after a timed-out acquire or campaign) is marked
:meth:`~AsyncClaims.releasing`: a claimant that would not wait for a holder
(``try_acquire``, a campaign) waits for such a claim, within its own bound - it
is no other holder, only a cleanup a round trip from done.  Recipes whose keys
are unique per acquire (RWLock, Semaphore) need no claim.  When the session
ends the claims are closed: every waiter stops at once with the session's error
(``SessionExpiredError`` or ``ClientClosedError``), whatever the holder in front
of it does.
"""

from __future__ import annotations

from collections import deque

from ... import errors
from ..._backends._async import Event, StateLock, wait_event
from ..._deadline import Deadline

__all__ = ["AsyncClaims"]


class _Waiter:
    """One claimant in a queue: woken by a hand-over (``granted``) or by close()."""

    __slots__ = ("granted", "wake")

    def __init__(self) -> None:
        self.wake = Event()
        self.granted = False


class _Slot:
    """One claimed key: its holder is implicit, its waiters queue here."""

    __slots__ = ("releasing", "waiters")

    def __init__(self) -> None:
        self.waiters: deque[_Waiter] = deque()
        self.releasing = False  # the holder gave up: its key is being deleted


class AsyncClaims:
    """The keys claimed by the holders of one session, in this process.

    ``await claim(key, timeout)`` takes the key's claim (waiting up to ``timeout``
    seconds; ``0`` only takes a free one, ``None`` waits as long as needed) and
    returns whether it did; ``release(key)`` hands it to the longest waiting
    claimant, if any.  A claim is not tied to a task or thread: whoever holds it
    may release it (the background deletion of a lock key does).  Nothing is kept
    for a key nobody claims.  :meth:`close` (the session ended) stops every
    waiter, and every later claim, with the given error.
    """

    def __init__(self) -> None:
        # A few lines of bookkeeping shared by tasks/threads; never held across a wait.
        self._lock = StateLock()
        self._slots: dict[bytes, _Slot] = {}
        self._error: errors.EtcdError | None = None

    def __contains__(self, key: bytes) -> bool:
        """True while ``key`` is claimed."""
        with self._lock:
            return key in self._slots

    def waiting(self, key: bytes) -> int:
        """How many claimants wait for ``key`` now."""
        with self._lock:
            slot = self._slots.get(key)
            return 0 if slot is None else len(slot.waiters)

    async def claim(
        self, key: bytes, timeout: float | None = None, *, releasing: float | None = -1.0
    ) -> bool:
        """Claim ``key`` within ``timeout`` seconds; True if it is now ours.

        ``releasing``: how long to wait instead when the claim is only
        :meth:`releasing` (its holder gave up, its key is being deleted); None:
        as long as needed, negative (the default): ``timeout`` alike.  Raises the
        error given to :meth:`close` once the claims are closed (at once for a
        waiter queued then).
        """
        Deadline(timeout)  # validates it
        with self._lock:
            if self._error is not None:
                raise self._error
            slot = self._slots.get(key)
            if slot is None:
                self._slots[key] = _Slot()
                return True
            if slot.releasing and (releasing is None or releasing >= 0):
                timeout = releasing
            deadline = Deadline(timeout)
            if deadline.expired():
                return False
            waiter = _Waiter()  # granted by release(): the claim passes straight to us
            slot.waiters.append(waiter)
        try:
            await wait_event(waiter.wake, deadline.remaining())
        except BaseException:
            if not self._give_up(slot, waiter):
                self.release(key)  # handed over just as we were interrupted: pass it on
            raise
        if not self._give_up(slot, waiter):
            return True
        error = self._error
        if error is not None:
            raise error
        return False

    def _give_up(self, slot: _Slot, waiter: _Waiter) -> bool:
        """Leave the queue; False if the claim was handed to us meanwhile."""
        with self._lock:
            if waiter.granted:
                return False
            if waiter in slot.waiters:
                slot.waiters.remove(waiter)
            return True

    def releasing(self, key: bytes) -> None:
        """Mark the claim on ``key`` as being released: its holder gave up and only
        the deletion of its key is left (see :meth:`claim`'s ``releasing``)."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                slot.releasing = True

    def release(self, key: bytes) -> None:
        """Give up the claim on ``key``: the next waiter gets it, or it is free."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return
            slot.releasing = False
            if slot.waiters and self._error is None:
                waiter = slot.waiters.popleft()
                waiter.granted = True
                waiter.wake.set()
            else:
                del self._slots[key]

    def close(self, error: errors.EtcdError) -> None:
        """The session ended: every waiter (now and later) stops with ``error``.

        Claims already held stay held until released (their keys go with the
        lease); nobody is handed one any more.
        """
        with self._lock:
            if self._error is not None:
                return
            self._error = error
            waiters = [waiter for slot in self._slots.values() for waiter in slot.waiters]
            for slot in self._slots.values():
                slot.waiters.clear()
        for waiter in waiters:
            waiter.wake.set()

    def __repr__(self) -> str:
        with self._lock:
            return f"<{type(self).__name__} claimed={sorted(self._slots)!r}>"
