"""Threaded flavour of the backend: grpc channels, threads, events, queues."""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import grpc

from .._callbacks import report_callback_failure

T = TypeVar("T")

Event = threading.Event
Lock = threading.Lock
StateLock = threading.Lock
"""A lock for a few lines of state shared between threads; never held across a wait."""
QueueEmpty = queue.Empty
FLAVOUR = "sync"


def run_callback(what: str, fn: Callable[..., Any], *args: Any) -> None:
    """Call a user's callback; an exception is logged by the one callback policy
    (:mod:`etcdsync._callbacks`), never raised."""
    try:
        fn(*args)
    except Exception:
        report_callback_failure(what, fn)


class Cancelled(BaseException):
    """Never raised: threads stop by flags and cancelled streams, not by injection."""


def create_channel(
    target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
) -> grpc.Channel:
    """Open a grpc channel (lazily connecting) to one endpoint."""
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)


# Channels a connectivity subscription is driving back to READY, with its callback.
_reconnecting: weakref.WeakKeyDictionary[grpc.Channel, Callable[[grpc.ChannelConnectivity], None]]
_reconnecting = weakref.WeakKeyDictionary()
_reconnecting_lock = threading.Lock()


def keep_connecting(channel: grpc.Channel) -> None:
    """Make sure a failed channel goes on reconnecting until it is READY.

    grpc's sync stack moves a connection attempt forward only while some thread
    polls the channel, and a call on a channel in TRANSIENT_FAILURE fails at once
    without polling.  A client whose every call fails fast therefore never
    reconnects to a restarted member (measured on grpcio 1.60 to 1.66: each attempt
    "timed out before receiving SETTINGS frame", for as long as we watched).  A
    connectivity subscription polls from grpc's own thread, so the attempts go
    through; it ends itself once the channel is READY.
    """
    # A weak reference: the callback must not keep a closed client's channel alive.
    ref = weakref.ref(channel)

    def on_state(state: grpc.ChannelConnectivity) -> None:
        target = ref()
        if state is grpc.ChannelConnectivity.READY and target is not None:
            _stop_reconnecting(target)

    with _reconnecting_lock:
        if channel in _reconnecting:
            return
        _reconnecting[channel] = on_state
    channel.subscribe(on_state, try_to_connect=True)


def _stop_reconnecting(channel: grpc.Channel) -> None:
    with _reconnecting_lock:
        callback = _reconnecting.pop(channel, None)
    if callback is not None:
        # grpc delivers callbacks outside its lock, so this may run inside one.
        channel.unsubscribe(callback)


def close_channel(channel: grpc.Channel) -> None:
    """Close a channel, cancelling the calls still on it."""
    _stop_reconnecting(channel)
    # grpc's polling thread sees that nobody is subscribed only at its next wake-up
    # (every 0.2 s); a channel closed before then kills it with "Channel closed!",
    # which Python reports as an unhandled thread exception.  The flag is private,
    # hence getattr; without it we merely close sooner.
    state = getattr(channel, "_connectivity_state", None)
    _wait_until(lambda: not getattr(state, "polling", False), 1.0)
    channel.close()
    # Closing cancels the calls still on the channel; grpc's "spin" thread delivers
    # their last events, each under the call's lock, and ends with the last one.  Let
    # it finish: a spin thread cut off by the interpreter's exit dies holding a call's
    # lock, and that call's __del__ then waits for it forever in the final garbage
    # collection (Python 3.13 + grpcio 1.85: a CLI run that never exited).  Private
    # again, hence getattr.
    calls = getattr(channel, "_call_state", None)
    _wait_until(lambda: getattr(calls, "managed_calls", 0) == 0, 1.0)


def _wait_until(done: Callable[[], bool], seconds: float) -> None:
    """Poll ``done`` every 5 ms for at most ``seconds`` (grpc's private state has
    nothing to wait on)."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.005)


def channel_state(channel: grpc.Channel, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
    """The channel's connectivity state; ``try_to_connect`` starts connecting an idle one
    (pair it with :func:`keep_connecting` so that the attempt moves forward)."""
    # The sync API has no public getter; this is the one grpc.aio wraps.
    value = channel._channel.check_connectivity_state(try_to_connect)
    for state in grpc.ChannelConnectivity:
        if state.value[0] == value:
            return state
    return grpc.ChannelConnectivity.IDLE


def current_owner() -> object:
    """Who holds a re-entrant lock in this flavour: the calling thread (its ident)."""
    return threading.get_ident()


def sleep(seconds: float) -> None:
    """Pause the current thread."""
    time.sleep(seconds)


def wait_event(event: threading.Event | Latch, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; True if it was set."""
    return event.wait(timeout)


_LATCHES = threading.Lock()  # makes a latch's "set once" atomic; held for two lines


class Latch:
    """A flag set once, that threads can wait for: an Event for objects made by the
    thousand (a watcher's "created").  One lock, held from birth until set, instead
    of an Event's Condition, lock and waiter deque: ~100 bytes instead of ~1 KiB."""

    __slots__ = ("_is_set", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._is_set = False

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        with _LATCHES:
            if self._is_set:
                return
            self._is_set = True
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout`` passes; True if set."""
        if self._is_set:
            return True
        if acquire_lock(self._lock, timeout):
            self._lock.release()  # the next waiter passes too
            return True
        return self._is_set


def acquire_lock(lock: threading.Lock, timeout: float | None) -> bool:
    """Acquire ``lock`` within ``timeout`` seconds (None: no limit); True if acquired."""
    return lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))


class Queue(Generic[T]):
    """An unbounded FIFO between the stream reader thread and one consumer."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[T] = queue.SimpleQueue()

    def put(self, item: T) -> None:
        self._q.put(item)

    def get(self, timeout: float | None = None) -> T:
        """Next item; raises ``TimeoutError`` when ``timeout`` passes first."""
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None

    def get_nowait(self) -> T:
        return self._q.get_nowait()

    def qsize(self) -> int:
        return self._q.qsize()


class Task:
    """A background thread started by :func:`spawn`."""

    def __init__(self, thread: threading.Thread) -> None:
        self._thread = thread

    def cancel(self) -> None:
        """Threads cannot be interrupted: owners stop them by closing their stream."""

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True if it ended within ``timeout``."""
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()


def spawn(fn: Callable[..., None], *args: Any, name: str) -> Task:
    """Run ``fn(*args)`` in a daemon thread (it must end when its owner closes)."""
    thread = threading.Thread(target=fn, args=args, name=name, daemon=True)
    thread.start()
    return Task(thread)


_END = object()


class BidiStream:
    """A bidirectional gRPC stream over sync grpc: requests are fed from a queue."""

    def __init__(
        self,
        channel: grpc.Channel,
        method: str,
        serializer: Callable[[Any], bytes],
        deserializer: Callable[[bytes], Any],
        metadata: tuple[tuple[str, str], ...] | None,
    ) -> None:
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._feeder: threading.Thread | None = None
        self._call = channel.stream_stream(
            method, request_serializer=serializer, response_deserializer=deserializer
        )(self._requests(), metadata=metadata)

    def _requests(self) -> Iterator[Any]:
        # grpc runs this generator on a daemon thread of its own (the feeder).
        self._feeder = threading.current_thread()
        while True:
            item = self._outbox.get()
            if item is _END:
                return
            yield item

    def write(self, message: Any) -> None:
        """Queue ``message``; never raises :class:`StreamEnded` (a write after the end
        is dropped, and the reader learns the end)."""
        self._outbox.put(message)

    def read(self) -> Any | None:
        """Next response, or None when the server closed the stream cleanly."""
        try:
            return next(self._call)
        except StopIteration:
            return None

    def cancel(self) -> None:
        """Abort the stream; a pending ``read`` fails with a CANCELLED error.

        Returns once grpc's feeder thread has ended (within :data:`FEEDER_EXIT`):
        a feeder still running when the interpreter exits dies holding the call's
        lock, and the call's ``__del__`` then waits for that lock forever during the
        final garbage collection (seen on Python 3.13 + grpcio 1.85: one CLI run in
        a few hundred never exited).
        """
        self._outbox.put(_END)
        self._call.cancel()
        feeder = self._feeder
        if feeder is not None and feeder is not threading.current_thread():
            feeder.join(FEEDER_EXIT)


FEEDER_EXIT = 1.0
"""How long cancelling a stream waits for grpc's feeder thread to end (it ends within
milliseconds once the call is cancelled and the request queue ended)."""


class ServerStream:
    """A server-streaming gRPC call over sync grpc: ``read`` its responses."""

    def __init__(
        self,
        channel: grpc.Channel,
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

    def read(self) -> Any | None:
        """Next response, or None when the server ended the stream cleanly."""
        try:
            return next(self._call)
        except StopIteration:
            return None

    def cancel(self) -> None:
        """Abort the call; a pending ``read`` fails with a CANCELLED error."""
        self._call.cancel()
