"""asyncio flavour of the backend: grpc.aio channels, tasks, events, queues."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import grpc
from grpc import aio

from .._callbacks import report_callback_failure
from ..errors import ForkedClientError
from . import StreamEnded

T = TypeVar("T")

Event = asyncio.Event
Latch = asyncio.Event
"""A flag set once (the threaded flavour has a lighter Event for objects made by the
thousand; an asyncio Event is already light)."""
Lock = asyncio.Lock
StateLock = threading.Lock
"""A lock for a few lines of state shared with callbacks of other threads (the
sync flavour's keepalive thread, user threads); never held across a wait, so it
is free in the asyncio flavour too."""
QueueEmpty = asyncio.QueueEmpty
Cancelled = asyncio.CancelledError
FLAVOUR = "async"


def create_channel(
    target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
) -> aio.Channel:
    """Open a grpc.aio channel (lazily connecting) to one endpoint."""
    if credentials is None:
        return aio.insecure_channel(target, options=options)
    return aio.secure_channel(target, credentials, options=options)


async def close_channel(channel: aio.Channel) -> None:
    """Close a channel, cancelling the calls still on it."""
    await channel.close(grace=None)


def keep_connecting(channel: aio.Channel) -> None:
    """Make sure a failed channel goes on reconnecting (see the sync backend).

    Nothing to do here: grpc.aio polls every channel from its own thread, so a
    connection attempt always moves forward.
    """


def channel_state(channel: aio.Channel, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
    """The channel's connectivity state; ``try_to_connect`` starts connecting an idle one."""
    return channel.get_state(try_to_connect=try_to_connect)


async def run_callback(what: str, fn: Callable[..., Any], *args: Any) -> None:
    """Call a user's callback (awaiting it if it returns an awaitable); an exception
    is logged by the one callback policy (:mod:`etcdsync._callbacks`), never raised."""
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        report_callback_failure(what, fn)


def current_owner() -> object:
    """Who holds a re-entrant lock in this flavour: the running task (a coroutine
    awaited by it counts as the same owner; a task it starts does not)."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("a re-entrant lock is used from inside a task")
    return task


async def sleep(seconds: float) -> None:
    """Pause the current task."""
    await asyncio.sleep(seconds)


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; True if it was set."""
    if event.is_set():
        return True
    try:
        await _within(event.wait(), timeout)
    except TimeoutError:
        return event.is_set()
    return True


async def _within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``await awaitable`` for at most ``timeout`` seconds, else raise TimeoutError.

    Used instead of ``asyncio.wait_for``, which on Python < 3.12 can swallow a
    cancellation that arrives just as the inner operation completes - a
    cancelled campaign or lock wait would then go on waiting.
    """
    inner = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({inner}, timeout=timeout)
    except BaseException:
        inner.cancel()
        raise
    if not done and inner.cancel():
        raise TimeoutError
    # Finished (possibly just now, too late to cancel): keep its result, e.g. a
    # queue item that must not be lost.
    return inner.result()


async def acquire_lock(lock: asyncio.Lock, timeout: float | None) -> bool:
    """Acquire ``lock`` within ``timeout`` seconds (None: no limit); True if acquired.

    ``timeout=0`` takes the lock only if it is free now.
    """
    if timeout is None or (not lock.locked() and not getattr(lock, "_waiters", True)):
        # A free lock nobody queues for is taken without suspending: no task needed.
        # (With queued waiters acquire() would wait its turn, unbounded: slow path.)
        await lock.acquire()
        return True
    # A task of its own: asyncio.wait lets it run (and take a free lock) before the
    # timeout fires, even for timeout=0, which wait_for does not.
    attempt = asyncio.ensure_future(lock.acquire())
    try:
        await asyncio.wait({attempt}, timeout=max(timeout, 0.0))
    except BaseException:
        _abandon_acquire(lock, attempt)
        raise
    if attempt.done() and not attempt.cancelled():
        return True
    _abandon_acquire(lock, attempt)
    return False


def _abandon_acquire(lock: asyncio.Lock, attempt: asyncio.Future[Any]) -> None:
    # Cancel the pending acquire; should it have won meanwhile, give the lock back.
    attempt.cancel()
    attempt.add_done_callback(lambda done: None if done.cancelled() else lock.release())


class Queue(Generic[T]):
    """An unbounded FIFO between the stream reader and one consumer."""

    def __init__(self) -> None:
        self._q: asyncio.Queue[T] = asyncio.Queue()

    def put(self, item: T) -> None:
        self._q.put_nowait(item)

    async def get(self, timeout: float | None = None) -> T:
        """Next item; raises ``TimeoutError`` when ``timeout`` passes first."""
        if timeout is None:
            return await self._q.get()
        try:
            return await _within(self._q.get(), timeout)
        except TimeoutError:
            raise TimeoutError from None

    def get_nowait(self) -> T:
        return self._q.get_nowait()

    def qsize(self) -> int:
        return self._q.qsize()


class Task:
    """A background task started by :func:`spawn`."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        self._task = task

    def cancel(self) -> None:
        """Ask the task to stop (it is cancelled at its next await)."""
        self._task.cancel()

    def done(self) -> bool:
        return self._task.done()

    async def join(self, timeout: float | None = None) -> bool:
        """Wait for the task to end; True if it ended within ``timeout``."""
        if self._task.done():
            return True
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        return bool(done)


def spawn(fn: Callable[..., Awaitable[None]], *args: Any, name: str) -> Task:
    """Run ``fn(*args)`` as a background task of the running loop.

    In a child forked while an event loop ran, asyncio reports no running loop (it
    checks the process id): that is the fork's doing, and is reported as
    :class:`~etcdsync.errors.ForkedClientError`.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        if _forked:
            raise ForkedClientError(
                "asyncio's event loop does not cross fork(): objects made in the parent "
                "cannot run in this child; create a new client here, in a new event loop"
            ) from None
        raise
    return Task(loop.create_task(_guarded(fn, *args), name=name))


# Set in a child process: see spawn().
_forked = False


def _note_fork() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_note_fork)


async def _guarded(fn: Callable[..., Awaitable[None]], *args: Any) -> None:
    # Cancellation is how a task is told to stop: not an error worth logging.
    with contextlib.suppress(asyncio.CancelledError):
        await fn(*args)


class BidiStream:
    """A bidirectional gRPC stream: ``write`` requests, ``read`` responses."""

    def __init__(
        self,
        channel: aio.Channel,
        method: str,
        serializer: Callable[[Any], bytes],
        deserializer: Callable[[bytes], Any],
        metadata: tuple[tuple[str, str], ...] | None,
    ) -> None:
        self._call = channel.stream_stream(
            method, request_serializer=serializer, response_deserializer=deserializer
        )(metadata=metadata)

    async def write(self, message: Any) -> None:
        try:
            await self._call.write(message)
        except asyncio.InvalidStateError as exc:  # grpc.aio: the call already ended
            raise StreamEnded(str(exc)) from exc

    async def read(self) -> Any | None:
        """Next response, or None when the server closed the stream cleanly."""
        message = await self._call.read()
        if message is aio.EOF:
            return None
        return message

    def cancel(self) -> None:
        """Abort the stream; a pending ``read`` fails with a CANCELLED error."""
        self._call.cancel()


class ServerStream:
    """A server-streaming gRPC call: one request sent, ``read`` its responses."""

    def __init__(
        self,
        channel: aio.Channel,
        method: str,
        serializer: Callable[[Any], bytes],
        deserializer: Callable[[bytes], Any],
        request: Any,
        timeout: float | None,
        metadata: tuple[tuple[str, str], ...] | None,
    ) -> None:
        self._call = channel.unary_stream(
            method, request_serializer=serializer, response_deserializer=deserializer
        )(request, timeout=timeout, metadata=metadata)

    async def read(self) -> Any | None:
        """Next response, or None when the server ended the stream cleanly."""
        message = await self._call.read()
        if message is aio.EOF:
            return None
        return message

    def cancel(self) -> None:
        """Abort the call; a pending ``read`` fails with a CANCELLED error."""
        self._call.cancel()
