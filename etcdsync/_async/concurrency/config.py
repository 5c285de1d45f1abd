"""Live config: a consistent, validated view of a prefix that follows every change.

The watcher mirrors the stored bytes with :class:`~.mirror.AsyncPrefixMirror`:
every key under the prefix read at one revision R (paging when the prefix is
large), then a watch from R+1, so no write falls between the read and the watch.
Each watch batch is applied whole: etcd never splits one revision across
batches, so the keys a txn changed together arrive together - never half an
update.  Each new state is decoded
and validated as a whole; a state that fails is rejected, reported, and the
last good snapshot stays in force until a later state passes.  When the watch
cannot continue (its history was compacted while the client was away, or the
server ended it), the watcher reads everything again and watches from there:
the view converges to the store, it never silently skips a change.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ... import errors
from ... import telemetry as _telemetry
from ..._backends._async import Event, StateLock, Task, run_callback, spawn, wait_event
from ..._callbacks import call_callback
from ..._deadline import Deadline
from ..._keys import to_key
from ..._logfields import fields, loss_level
from ...codecs import DEFAULT_DECODER, Decoder, resolve_decoder
from ...config_model_types import error_keys, resolve_model
from ...config_types import ConfigSnapshot, Validator
from .mirror import AsyncPrefixMirror
from .recipe_client import AsyncRecipeClient

__all__ = [
    "AsyncConfigIterator",
    "AsyncConfigWatcher",
    "ConfigSnapshot",
    "Decoder",
    "ErrorCallback",
    "SnapshotCallback",
    "Validator",
]

log = logging.getLogger("etcdsync.config")

SnapshotCallback = Callable[[ConfigSnapshot], Any]
ErrorCallback = Callable[[errors.EtcdError], Any]

# Reload attempts after a failure back off exponentially (with jitter) up to this.
_BACKOFF_START = 0.1
_BACKOFF_MAX = 5.0
# How long stop() waits for the background task or thread to end.
_JOIN_TIMEOUT = 5.0
# How many recent errors ``errors`` keeps.
_ERROR_HISTORY = 20


class _Invalid:
    """A value that failed to decode, cached like a good one (per mod revision)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class _Subscriber:
    """One callback, fed by a task/thread of its own; holds only the newest snapshot."""

    def __init__(self, callback: SnapshotCallback) -> None:
        self.callback = callback
        self.pending: ConfigSnapshot | None = None
        self.wake = Event()
        self.closed = False
        self.task: Task | None = None


class AsyncConfigWatcher:
    """A live, read-only view of the keys under ``prefix``; ``client.config(prefix)``.

    ``await start()`` (or ``async with``) loads the snapshot and follows every
    change until :meth:`stop`.  :attr:`snapshot` is the current
    :class:`~etcdsync.config_types.ConfigSnapshot`: an immutable mapping from key
    (relative to the prefix) to decoded value, with the ``revision`` it reflects.

    ``decode`` turns stored bytes into values: ``"json"`` (default), ``"auto"``,
    ``"text"``, ``"raw"`` or any ``callable(bytes)``.  ``model`` (a dataclass, or
    a class with pydantic's ``model_validate``) makes each state one typed
    instance, built once per state from its keys nested on ``/`` (``db/host`` is
    ``value.db.host``): :attr:`value` and each snapshot's ``.value``
    (:mod:`etcdsync.config_model_types`).  ``validate(snapshot)`` vets each new
    state as a whole, after the model: raising (or returning ``False``) rejects it.  A state that
    fails to decode or validate is not applied: the last good snapshot stays,
    the reason is kept in :attr:`rejected`, :attr:`last_error` and
    :attr:`errors`, and the :meth:`on_error` callbacks are called.  A later
    state that passes is applied as usual.

    Follow changes with :meth:`subscribe` (callbacks run in a task or thread of
    their own), :meth:`wait_for_change`, or by iterating the watcher.  A
    snapshot is published only when the decoded content changed.
    """

    def __init__(
        self,
        client: AsyncRecipeClient,
        prefix: str | bytes,
        *,
        decode: str | Decoder = DEFAULT_DECODER,
        validate: Validator | None = None,
        page_size: int = 1000,
        model: object = None,
    ) -> None:
        if validate is not None and not callable(validate):
            raise errors.InvalidRequest(f"validate must be callable, got {validate!r}")
        self._client = client
        self.prefix = prefix
        self._prefix = to_key(prefix)
        self._decode = resolve_decoder(decode)
        self._validate = validate
        self._model = model
        self._build = None if model is None else resolve_model(model)
        # The mirrored bytes: touched only by start() and then the background task/thread.
        self._mirror = AsyncPrefixMirror(client, self._prefix, page_size=page_size)
        # State shared with user threads (sync flavour); sections never wait.
        self._lock = StateLock()
        self._snapshot: ConfigSnapshot | None = None
        self._changed = Event()  # replaced at each publish; the old one is set
        self._subscribers: list[_Subscriber] = []
        self._error_callbacks: list[ErrorCallback] = []
        # Touched only by start() and then the background task/thread.
        self._decoded: dict[bytes, tuple[int, Any]] = {}
        self._task: Task | None = None
        self._stop = Event()
        self._started = False
        self._stopped = False
        self._end_error: errors.EtcdError | None = None
        self.errors: deque[errors.EtcdError] = deque(maxlen=_ERROR_HISTORY)
        """The most recent problems (rejected states, watch failures), oldest first."""
        self.last_error: errors.EtcdError | None = None
        """The most recent problem, or None."""
        self.rejected: errors.ConfigValidationError | None = None
        """Why the store's latest state is not applied, or None when the view is current."""

    # --- the view -------------------------------------------------------------------------

    @property
    def snapshot(self) -> ConfigSnapshot:
        """The current good snapshot; raises ConfigError before :meth:`start`."""
        snapshot = self._snapshot
        if snapshot is None:
            raise errors.ConfigError("the config watcher is not started: await start() first")
        return snapshot

    @property
    def revision(self) -> int:
        """The revision of the current snapshot."""
        return self.snapshot.revision

    @property
    def value(self) -> Any:
        """The model instance of the current snapshot (``model=``), else None;
        raises ConfigError before :meth:`start`."""
        return self.snapshot.value

    @property
    def reloads(self) -> int:
        """How many full reloads (after compaction or a failed watch) have happened."""
        return self._mirror.reloads

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop` (or the client's close)."""
        return self._started and not self._stopped and self._end_error is None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, *, timeout: float | None = None) -> AsyncConfigWatcher:
        """Load the snapshot and start following changes; returns ``self``.

        Raises :class:`~etcdsync.errors.ConfigValidationError` if the current state
        fails to decode or validate (nothing is started then), and the client's
        errors if the store cannot be read within ``timeout`` seconds.
        """
        if self._started:
            if self._stopped:
                raise errors.ConfigError("a stopped config watcher cannot be restarted")
            return self
        revision = await self._mirror.load(timeout)
        try:
            snapshot = self._candidate(revision)  # raises: nothing to keep yet
        except BaseException:
            await self._mirror.reset()
            raise
        self._snapshot = snapshot
        self._started = True
        self._task = spawn(self._run, name="etcdsync-config")
        return self

    async def stop(self) -> None:
        """Stop following changes; the last snapshot stays readable.  Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        await self._mirror.close()
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
        for sub in subscribers:
            self._close_subscriber(sub)
        self._wake_waiters()
        if self._task is not None:
            self._task.cancel()
            await self._task.join(_JOIN_TIMEOUT)

    async def close(self) -> None:
        """Same as :meth:`stop`."""
        await self.stop()

    async def __aenter__(self) -> AsyncConfigWatcher:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- loading and applying -------------------------------------------------------------

    def _candidate(self, revision: int) -> ConfigSnapshot:
        """Decode and validate the mirrored state; raises ConfigValidationError."""
        values: dict[str, Any] = {}
        bad: dict[str, Exception] = {}
        decoded: dict[bytes, tuple[int, Any]] = {}
        cut = len(self._prefix)
        for key, kv in self._mirror.kvs.items():
            cached = self._decoded.get(key)
            if cached is not None and cached[0] == kv.mod_revision:
                value = cached[1]
            else:
                try:
                    value = self._decode(kv.value)
                except Exception as exc:
                    value = _Invalid(exc)
            decoded[key] = (kv.mod_revision, value)
            name = key[cut:].decode("utf-8", "surrogateescape")
            if isinstance(value, _Invalid):
                bad[name] = value.error
            else:
                values[name] = value
        self._decoded = decoded  # only live keys stay cached
        if bad:
            detail = "; ".join(f"{name!r}: {exc}" for name, exc in sorted(bad.items()))
            error = errors.ConfigValidationError(
                f"config {self.prefix!r} at revision {revision}: {len(bad)} value(s) "
                f"failed to decode: {detail}",
                revision=revision,
                keys=tuple(sorted(bad)),
            )
            error.__cause__ = next(iter(bad.values()))
            raise error
        instance = None
        if self._build is not None:
            try:
                instance = self._build(values)
            except Exception as exc:
                raise errors.ConfigValidationError(
                    f"config {self.prefix!r} at revision {revision} does not fit the model "
                    f"{getattr(self._model, '__name__', self._model)}: {exc}",
                    revision=revision,
                    keys=error_keys(exc),
                ) from exc
        snapshot = ConfigSnapshot(values, revision, instance)
        if self._validate is not None:
            try:
                verdict = self._validate(snapshot)
            except Exception as exc:
                raise errors.ConfigValidationError(
                    f"config {self.prefix!r} at revision {revision} rejected by the "
                    f"validator: {exc!r}",
                    revision=revision,
                ) from exc
            if verdict is False:
                raise errors.ConfigValidationError(
                    f"config {self.prefix!r} at revision {revision} rejected by the "
                    "validator (it returned False)",
                    revision=revision,
                )
        return snapshot

    def _evaluate(self, revision: int) -> None:
        """Publish the mirrored state if it is valid and differs from the current one."""
        try:
            snapshot = self._candidate(revision)
        except errors.ConfigValidationError as exc:
            self.rejected = exc
            self._report(exc)
            return
        self.rejected = None
        current = self._snapshot
        if current is not None and current.to_dict() == snapshot.to_dict():
            return  # same content (e.g. a value rewritten unchanged): nothing to announce
        self._publish(snapshot)

    async def _run(self) -> None:
        """Follow the mirror; reload (with backoff after failures) when its watch fails."""
        delay = _BACKOFF_START
        while not self._stop.is_set():
            reloading = not self._mirror.watching
            try:
                changed = await (self._reload() if reloading else self._mirror.step())
            except StopAsyncIteration:
                return  # stop() closed the mirror
            except errors.ClientClosedError as exc:
                self._end(exc)
                return
            except errors.EtcdError as exc:
                # Compacted history or a watch the server ended: the mirror dropped
                # its watch and the next step reads the whole state again.  A failed
                # reload is retried after a pause.
                self._report(exc)
                if reloading:
                    await wait_event(self._stop, random.uniform(delay / 2, delay))
                    delay = min(delay * 2, _BACKOFF_MAX)
                continue
            if reloading:
                delay = _BACKOFF_START
                log.info(
                    "config %r reloaded at revision %d",
                    self.prefix,
                    self._mirror.revision,
                    extra=fields("config", self.prefix, event="reloaded"),
                )
            if changed:
                self._evaluate(self._mirror.revision)

    @_telemetry.traced("config.reload", _telemetry.describe_config_reload)
    async def _reload(self) -> bool:
        """The mirror's step that reads the whole prefix again (a span when traced)."""
        return await self._mirror.step()

    # --- publishing -----------------------------------------------------------------------

    def _publish(self, snapshot: ConfigSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot
            changed, self._changed = self._changed, Event()
            subscribers = list(self._subscribers)
            for sub in subscribers:
                sub.pending = snapshot
                sub.wake.set()
        changed.set()

    def _wake_waiters(self) -> None:
        with self._lock:
            changed, self._changed = self._changed, Event()
        changed.set()

    def _report(self, error: errors.EtcdError) -> None:
        self.last_error = error
        self.errors.append(error)
        extra = fields("config", self.prefix, event="error")
        if isinstance(error, errors.ConfigValidationError):
            # Its message names the prefix already.
            log.warning("%s", error, extra=extra)
        else:
            log.log(loss_level(error), "config %r: %s", self.prefix, error, extra=extra)
        with self._lock:
            callbacks = list(self._error_callbacks)
        for fn in callbacks:
            call_callback("config-error", fn, error)

    def _end(self, error: errors.EtcdError) -> None:
        """The client closed: nothing more will come."""
        self._end_error = error
        self._report(error)
        self._wake_waiters()

    # --- following changes ------------------------------------------------------------------

    def subscribe(self, callback: SnapshotCallback, *, initial: bool = False) -> Callable[[], None]:
        """Call ``callback(snapshot)`` with each new snapshot; returns an unsubscribe function.

        Each subscriber runs in a task (thread, in the sync client) of its own, so a
        slow one delays neither the watch nor the others; one that falls behind
        skips to the newest snapshot instead of queueing old ones.  With
        ``initial=True`` it is first called with the current snapshot.  In the
        asyncio client the callback may be a coroutine function.
        """
        if not callable(callback):
            raise errors.InvalidRequest(f"callback must be callable, got {callback!r}")
        sub = _Subscriber(callback)
        with self._lock:
            if self._stopped:
                raise errors.ConfigError("the config watcher is stopped")
            self._subscribers.append(sub)
            if initial and self._snapshot is not None:
                sub.pending = self._snapshot
                sub.wake.set()
        sub.task = spawn(self._deliver, sub, name="etcdsync-config-subscriber")

        def unsubscribe() -> None:
            with self._lock:
                if sub in self._subscribers:
                    self._subscribers.remove(sub)
            self._close_subscriber(sub)

        return unsubscribe

    def _close_subscriber(self, sub: _Subscriber) -> None:
        with self._lock:
            sub.closed = True
            sub.wake.set()

    async def _deliver(self, sub: _Subscriber) -> None:
        while True:
            await wait_event(sub.wake, None)
            with self._lock:
                if sub.closed:
                    return
                snapshot, sub.pending = sub.pending, None
                sub.wake.clear()
            if snapshot is None:
                continue
            # A coroutine callback is awaited (asyncio flavour); an exception is logged.
            await run_callback("config-subscriber", sub.callback, snapshot)

    def on_error(self, callback: ErrorCallback) -> None:
        """Call ``callback(error)`` for each problem: a rejected state
        (:class:`~etcdsync.errors.ConfigValidationError`), a watch failure that forces
        a reload (e.g. :class:`~etcdsync.errors.CompactedError`), a failed reload.
        Runs in the watcher's task or thread: keep it short."""
        if not callable(callback):
            raise errors.InvalidRequest(f"callback must be callable, got {callback!r}")
        with self._lock:
            self._error_callbacks.append(callback)

    async def wait_for_change(
        self, after_revision: int | None = None, *, timeout: float | None = None
    ) -> ConfigSnapshot:
        """Wait for a snapshot newer than ``after_revision`` (default: the current one).

        Returns at once if the current snapshot already is.  Raises
        :class:`~etcdsync.errors.Timeout` after ``timeout`` seconds, and
        :class:`~etcdsync.errors.ClientClosedError` once the watcher is stopped or
        the client closed.
        """
        after = self.snapshot.revision if after_revision is None else after_revision
        deadline = Deadline(timeout)
        while True:
            with self._lock:
                snapshot, changed = self._snapshot, self._changed
            assert snapshot is not None
            if snapshot.revision > after:
                return snapshot
            if self._stopped:
                raise errors.ClientClosedError("the config watcher was stopped")
            if self._end_error is not None:
                raise self._end_error
            if deadline.expired():
                raise errors.Timeout(
                    f"config {self.prefix!r} did not change after revision {after} "
                    f"within {timeout} s"
                )
            await wait_event(changed, deadline.remaining())

    def __aiter__(self) -> AsyncConfigIterator:
        return AsyncConfigIterator(self)

    def __repr__(self) -> str:
        where = f"revision={self._snapshot.revision}" if self._snapshot else "not started"
        return f"<{type(self).__name__} {self.prefix!r} {where}>"


class AsyncConfigIterator:
    """Iterates snapshots: the current one first, then each new one (skipping to the
    newest when the consumer is slower than the changes).  Ends when the watcher is
    stopped; raises :class:`~etcdsync.errors.ClientClosedError` if the client closes."""

    def __init__(self, watcher: AsyncConfigWatcher) -> None:
        self._watcher = watcher
        self._last: int | None = None

    def __aiter__(self) -> AsyncConfigIterator:
        return self

    async def __anext__(self) -> ConfigSnapshot:
        if self._last is None:
            snapshot = self._watcher.snapshot
        else:
            try:
                snapshot = await self._watcher.wait_for_change(self._last)
            except errors.ClientClosedError:
                if self._watcher._stopped:
                    raise StopAsyncIteration from None
                raise
        self._last = snapshot.revision
        return snapshot
