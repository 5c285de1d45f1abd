"""Stopping running work, the part of leader-only work that differs per flavour.

:class:`AsyncWorkCall` / :class:`WorkCall` run ``fn(*args)`` so that a callback
can stop it:

* asyncio: ``fn`` runs in a task of its own; :meth:`AsyncWorkCall.cancel` (from
  any thread) cancels that task - ``CancelledError`` is raised inside ``fn`` at
  its next ``await`` - and :meth:`~AsyncWorkCall.run` then raises
  :class:`CallCancelled`.  Cancelling the caller cancels ``fn`` too.
* threads: ``fn`` runs in the calling thread, as a plain call.  A thread cannot
  be interrupted from outside, so :meth:`WorkCall.cancel` only records the
  request (``fn`` is told some other way, e.g. an event it checks).

:class:`AsyncSignalStop` / :class:`SignalStop` stop the task or thread that
installed them on the first SIGTERM or SIGINT, then restore the previous
handlers (a second signal acts as it would have without them):

* asyncio: handlers of the running loop (``loop.add_signal_handler``); the
  installing task is cancelled, and :meth:`~AsyncSignalStop.stopped` recognises
  that ``CancelledError`` (and takes the cancellation back, Python 3.11+, so an
  enclosing ``asyncio.timeout()`` still counts right);
* threads: ``signal.signal`` handlers, main thread only (Python runs handlers
  there); the handler raises :class:`StopSignal` in the main thread, wherever it is.

While :attr:`~AsyncSignalStop.interruptible` is False (the owner is cleaning up)
a signal is only recorded in :attr:`~AsyncSignalStop.received`.

The two classes of each pair are one another's twins for the generated sync code
(``AsyncWorkCall`` becomes ``WorkCall``).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..errors import InvalidRequest

__all__ = [
    "STOP_SIGNALS",
    "AsyncSignalStop",
    "AsyncWorkCall",
    "CallCancelled",
    "SignalStop",
    "StopSignal",
    "WorkCall",
]

T = TypeVar("T")

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class CallCancelled(Exception):
    """The work was stopped through ``cancel()`` (asyncio flavour only)."""


class StopSignal(BaseException):
    """Raised in the main thread by a :class:`SignalStop` handler (sync flavour).

    A ``BaseException``, like ``KeyboardInterrupt``: ``except Exception`` in the
    interrupted code does not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# --- running work that can be stopped --------------------------------------------------


class AsyncWorkCall:
    """Runs one awaitable-returning call in a task of its own; see the module docs."""

    def __init__(self) -> None:
        self._task: asyncio.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._cancelled = False

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` in a task of its own and return (or raise) its outcome;
        :class:`CallCancelled` if :meth:`cancel` stopped it (or came first)."""
        if self._cancelled:
            raise CallCancelled("cancelled before it started")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        task: asyncio.Future[T] = asyncio.ensure_future(fn(*args))
        self._task = task
        try:
            await asyncio.wait({task})
        except BaseException:
            # The caller was cancelled: the work goes with it.
            task.cancel()
            await asyncio.wait({task})
            raise
        finally:
            self._task = None
        if task.cancelled():
            if self._cancelled:
                raise CallCancelled("the work was cancelled")
            raise asyncio.CancelledError  # cancelled by someone else: pass it on
        return task.result()

    def cancel(self) -> None:
        """Stop the work (now, or as soon as it starts); callable from any thread."""
        self._cancelled = True
        task, loop = self._task, self._loop
        if task is None or loop is None:
            return
        if threading.get_ident() == self._thread:
            task.cancel()
        else:
            loop.call_soon_threadsafe(task.cancel)


class WorkCall:
    """Runs one call in the calling thread; :meth:`cancel` only records the request."""

    def __init__(self) -> None:
        self._cancelled = False

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` and return (or raise) its outcome."""
        return fn(*args)

    def cancel(self) -> None:
        """Record the request: a thread cannot be interrupted from outside."""
        self._cancelled = True


# --- stopping on a signal ----------------------------------------------------------------


class AsyncSignalStop:
    """Cancel the installing task on the first SIGTERM/SIGINT; see the module docs."""

    def __init__(self, signals: Sequence[int] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.received: int | None = None
        """The signal that arrived first, or None."""
        self.interruptible = True
        """Whether a signal interrupts the owner now (else it is only recorded)."""
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[int, Any] = {}
        self._cancelled = False

    def install(self) -> None:
        """Install the handlers for the current task (raises InvalidRequest where the
        loop cannot handle signals: not in the main thread, not on Unix)."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise InvalidRequest("install_signal_handlers needs to run in an asyncio task")
        self._loop, self._task = loop, task
        for signum in self.signals:
            previous = signal.getsignal(signum)
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
            except (ValueError, RuntimeError, NotImplementedError) as exc:
                self.remove()
                raise InvalidRequest(
                    "install_signal_handlers: this event loop cannot handle signals here "
                    f"(the main thread's loop on Unix can): {exc}"
                ) from exc
            self._previous[signum] = previous

    def _on_signal(self, signum: int) -> None:
        if self.received is not None:
            return
        self.received = signum
        self.remove()
        self._interrupt()

    def _interrupt(self) -> None:
        if (
            self.received is not None
            and self.interruptible
            and not self._cancelled
            and self._task is not None
        ):
            self._cancelled = True
            self._task.cancel()

    def stopped(self, exc: BaseException) -> bool:
        """True if ``exc`` is the interruption this object caused (taken back then)."""
        if not self._cancelled or not isinstance(exc, asyncio.CancelledError):
            return False
        uncancel = getattr(self._task, "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()
        return True

    def remove(self) -> None:
        """Restore the previous handlers (idempotent)."""
        loop, previous, self._previous = self._loop, self._previous, {}
        for signum, handler in previous.items():
            if loop is not None:
                loop.remove_signal_handler(signum)
            signal.signal(signum, handler)


class SignalStop:
    """Raise :class:`StopSignal` in the main thread on the first SIGTERM/SIGINT."""

    def __init__(self, signals: Sequence[int] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.received: int | None = None
        """The signal that arrived first, or None."""
        self.interruptible = True
        """Whether a signal interrupts the owner now (else it is only recorded)."""
        self._previous: dict[int, Any] = {}
        self._raised = False

    def install(self) -> None:
        """Install the handlers (raises InvalidRequest outside the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            raise InvalidRequest(
                "install_signal_handlers works in the main thread only (Python runs "
                "signal handlers there)"
            )
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.received is not None:
            return
        self.received = signum
        self.remove()
        self._interrupt()

    def _interrupt(self) -> None:
        # Runs in the signal handler, in the main thread: raising unwinds the owner.
        if self.received is not None and self.interruptible and not self._raised:
            self._raised = True
            raise StopSignal(self.received)

    def stopped(self, exc: BaseException) -> bool:
        """True if ``exc`` is the interruption this object caused."""
        return self._raised and isinstance(exc, StopSignal)

    def remove(self) -> None:
        """Restore the previous handlers (idempotent)."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
