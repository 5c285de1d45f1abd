"""OpenTelemetry traces and metrics for etcdsync: off by default, on with one call.

::

    from etcdsync import telemetry

    telemetry.enable()  # uses OpenTelemetry's global tracer and meter providers

Nothing here imports OpenTelemetry until :func:`enable` is called, and while it is
off each instrumented call costs one module attribute test (``active is None``):
the library keeps its three runtime dependencies and its speed.  Install the API
with the ``etcdsync[otel]`` extra; what is exported, and where, is the SDK's
business (configured by the application, as for any other instrumented library).

What is recorded once enabled (``recipes_docs/observability.md`` has the tables):

* a span per request, from the one request path: ``etcdserverpb.KV/Put``... with
  ``rpc.*`` and ``server.*`` attributes, ``etcdsync.endpoint`` (the member that
  answered, or was tried last), ``etcdsync.retries`` and ``etcdsync.outcome``;
* recipe spans: ``lock.acquire`` (``etcdsync.lock.wait_time``,
  ``etcdsync.lock.queue_position``), ``election.campaign``, ``config.reload``;
* metrics: ``etcdsync.lock.wait`` and ``etcdsync.lock.hold`` histograms,
  ``etcdsync.lock.acquisitions`` / ``.timeouts`` / ``.losses``,
  ``etcdsync.election.leader_changes``, ``etcdsync.watch.reconnects`` and
  ``etcdsync.session.expiries`` counters.

The hooks in the library are one line each and call :data:`active`'s methods;
this module is the only place that knows OpenTelemetry.
"""

from __future__ import annotations

import functools
import inspect
import time
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TypeVar, cast

from . import errors
from ._logfields import is_shutdown

__all__ = ["Telemetry", "active", "disable", "enable", "is_enabled", "traced"]

_F = TypeVar("_F", bound=Callable[..., Any])

INSTRUMENTATION_NAME = "etcdsync"

active: Telemetry | None = None
"""The live instrumentation, or None while telemetry is off (the default)."""


def enable(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Turn tracing and metrics on for every client of this process.

    ``tracer_provider`` / ``meter_provider`` default to OpenTelemetry's global
    ones (``opentelemetry.trace.set_tracer_provider``...): without an SDK they are
    the API's no-op providers, so this costs next to nothing until the application
    configures one.  Calling it again replaces the providers.  Raises
    :class:`~etcdsync.errors.UnsupportedError` when the OpenTelemetry API is not
    installed (``pip install 'etcdsync[otel]'``).
    """
    global active
    try:
        from opentelemetry import metrics, trace
    except ImportError as exc:
        raise errors.UnsupportedError(
            "OpenTelemetry is not installed: pip install 'etcdsync[otel]'"
        ) from exc
    active = Telemetry(
        trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider),
        metrics.get_meter(INSTRUMENTATION_NAME, meter_provider=meter_provider),
        trace,
    )


def disable() -> None:
    """Turn telemetry off again (spans already started still end)."""
    global active
    active = None


def is_enabled() -> bool:
    """True between :func:`enable` and :func:`disable`."""
    return active is not None


def _outcome(error: BaseException | None) -> str:
    return "ok" if error is None else type(error).__name__


def _text(value: Any) -> str:
    """An attribute value from a name given as str or bytes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _split_endpoint(endpoint: str) -> tuple[str, int | None]:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        return endpoint, None
    return host.strip("[]"), int(port)


class _Rpc:
    """One request's span; counts the attempts the request path makes under it."""

    __slots__ = ("_scope", "_span", "_token", "attempts", "endpoint", "method", "telemetry")

    def __init__(self, telemetry: Telemetry, method: Any) -> None:
        self.telemetry = telemetry
        self.method = method
        self.attempts = 0
        self.endpoint: str | None = None
        self._scope: Any = None
        self._span: Any = None
        self._token: Any = None

    def __enter__(self) -> _Rpc:
        path: str = self.method.path  # "/etcdserverpb.KV/Put"
        service, _, name = path.lstrip("/").partition("/")
        self._scope = self.telemetry.tracer.start_as_current_span(
            f"{service}/{name}",
            kind=self.telemetry.trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = self._scope.__enter__()
        self._token = _current_rpc.set(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _current_rpc.reset(self._token)
        span = self._span
        if self.endpoint is not None:
            host, port = _split_endpoint(self.endpoint)
            span.set_attribute("etcdsync.endpoint", self.endpoint)
            span.set_attribute("server.address", host)
            if port is not None:
                span.set_attribute("server.port", port)
        span.set_attribute("etcdsync.retries", max(self.attempts - 1, 0))
        span.set_attribute("etcdsync.outcome", _outcome(error))
        if error is not None:
            span.record_exception(error)
            span.set_status(self.telemetry.trace.StatusCode.ERROR, str(error))
        self._scope.__exit__(kind, error, tb)


_current_rpc: ContextVar[_Rpc | None] = ContextVar("etcdsync_rpc", default=None)


class Telemetry:
    """The tracer, the meter and the instruments (made by :func:`enable`); the
    library's hooks call its methods."""

    def __init__(self, tracer: Any, meter: Any, trace: Any) -> None:
        self.tracer = tracer
        self.trace = trace  # the opentelemetry.trace module (SpanKind, StatusCode...)
        self.lock_wait = meter.create_histogram(
            "etcdsync.lock.wait", unit="s", description="Time from acquire() to holding the lock"
        )
        self.lock_hold = meter.create_histogram(
            "etcdsync.lock.hold", unit="s", description="Time a lock was held"
        )
        self.lock_acquisitions = meter.create_counter(
            "etcdsync.lock.acquisitions", description="Locks acquired"
        )
        self.lock_timeouts = meter.create_counter(
            "etcdsync.lock.timeouts", description="acquire() calls that timed out"
        )
        self.lock_losses = meter.create_counter(
            "etcdsync.lock.losses", description="Locks lost without being released"
        )
        self.leader_changes = meter.create_counter(
            "etcdsync.election.leader_changes",
            description="Terms begun or ended by this process's candidates "
            "(etcdsync.change: elected, resigned, lost)",
        )
        self.watch_reconnects = meter.create_counter(
            "etcdsync.watch.reconnects", description="Watch streams opened again"
        )
        self.watch_resume_gap = meter.create_histogram(
            "etcdsync.watch.resume_gap",
            unit="s",
            description="Time from a watch stream's failure to its reopening (no event "
            "is lost: the watchers resume from their next revision)",
        )
        self.keepalive_failures = meter.create_counter(
            "etcdsync.keepalive.failures",
            description="Lease keepalive failures (etcdsync.failure: stall - a stream left "
            "renewals unanswered and was replaced; halted - a lease lost for want of renewal)",
        )
        self.session_expiries = meter.create_counter(
            "etcdsync.session.expiries",
            description="Sessions that ended without being closed (lease expired, revoked, "
            "renewals failed)",
        )
        # When each current hold began (lock objects are weakly referenced).
        self._held_since: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    # --- the request path -----------------------------------------------------------------

    def rpc(self, method: Any) -> _Rpc:
        """``with telemetry.active.rpc(method):`` around one request."""
        return _Rpc(self, method)

    def rpc_attempt(self, method: Any, endpoint: str) -> None:
        """One attempt of the current request goes to ``endpoint``."""
        rpc = _current_rpc.get()
        if rpc is not None and rpc.method is method:  # not a login made on the way
            rpc.attempts += 1
            rpc.endpoint = endpoint

    # --- holds (locks, leadership) ----------------------------------------------------------

    def hold_began(self, resource: Any) -> None:
        kind = getattr(resource, "_telemetry_kind", None)
        if kind == "lock":
            self._held_since[resource] = time.monotonic()
        elif kind == "election":
            self._leader_change(resource, "elected")

    def hold_ended(self, resource: Any, *, lost: bool) -> None:
        """A hold ended by the holder's will (release, resign); ``lost`` if it had
        been lost before (counted then)."""
        if lost:
            return
        kind = getattr(resource, "_telemetry_kind", None)
        if kind == "lock":
            self._record_hold(resource, "released")
        elif kind == "election":
            self._leader_change(resource, "resigned")

    def hold_lost(self, resource: Any) -> None:
        kind = getattr(resource, "_telemetry_kind", None)
        if kind == "lock":
            self.lock_losses.add(1, {"etcdsync.lock.name": resource.name})
            self._record_hold(resource, "lost")
        elif kind == "election":
            self._leader_change(resource, "lost")

    def _record_hold(self, lock: Any, outcome: str) -> None:
        since = self._held_since.pop(lock, None)
        if since is not None:
            self.lock_hold.record(
                time.monotonic() - since,
                {"etcdsync.lock.name": lock.name, "etcdsync.outcome": outcome},
            )

    def _leader_change(self, election: Any, change: str) -> None:
        self.leader_changes.add(
            1, {"etcdsync.election.name": _text(election.name), "etcdsync.change": change}
        )

    # --- streams and sessions ---------------------------------------------------------------

    def watch_reconnected(self, gap: float) -> None:
        """A watch stream was opened again ``gap`` seconds after it failed."""
        self.watch_reconnects.add(1)
        self.watch_resume_gap.record(gap)

    def keepalive_failed(self, failure: str, count: int = 1) -> None:
        """``stall`` (a stream replaced) or ``halted`` (``count`` leases lost)."""
        self.keepalive_failures.add(count, {"etcdsync.failure": failure})

    def session_ended(self, error: BaseException) -> None:
        if not is_shutdown(error):  # a close is not an expiry
            self.session_expiries.add(1, {"etcdsync.reason": type(error).__name__})


# --- recipe spans ---------------------------------------------------------------------------

_Describe = Callable[["Telemetry", Any, Any, "BaseException | None", float], dict[str, Any]]


def traced(name: str, describe: _Describe) -> Callable[[_F], _F]:
    """Decorate a recipe method (async or not) so that, while telemetry is on, each
    call is a span ``name`` whose attributes ``describe(telemetry, self, result,
    error, seconds)`` returns (it may record metrics too).  Off: one test, then
    the method itself."""

    def decorate(fn: _F) -> _F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def traced_async(self: Any, *args: Any, **kwargs: Any) -> Any:
                telemetry = active
                if telemetry is None:
                    return await fn(self, *args, **kwargs)
                with _RecipeSpan(telemetry, name, self, describe) as span:
                    span.result = await fn(self, *args, **kwargs)
                    return span.result

            return cast(_F, traced_async)

        @functools.wraps(fn)
        def traced_sync(self: Any, *args: Any, **kwargs: Any) -> Any:
            telemetry = active
            if telemetry is None:
                return fn(self, *args, **kwargs)
            with _RecipeSpan(telemetry, name, self, describe) as span:
                span.result = fn(self, *args, **kwargs)
                return span.result

        return cast(_F, traced_sync)

    return decorate


class _RecipeSpan:
    __slots__ = ("_scope", "_span", "_started", "describe", "name", "owner", "result", "telemetry")

    def __init__(self, telemetry: Telemetry, name: str, owner: Any, describe: _Describe) -> None:
        self.telemetry, self.name, self.owner, self.describe = telemetry, name, owner, describe
        self.result: Any = None
        self._scope: Any = None
        self._span: Any = None
        self._started = 0.0

    def __enter__(self) -> _RecipeSpan:
        self._scope = self.telemetry.tracer.start_as_current_span(
            self.name, record_exception=False, set_status_on_exception=False
        )
        self._span = self._scope.__enter__()
        self._started = time.monotonic()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        seconds = time.monotonic() - self._started
        span = self._span
        try:
            attributes = self.describe(self.telemetry, self.owner, self.result, error, seconds)
        except Exception:  # telemetry never breaks the call it observes
            attributes = {}
        attributes.setdefault("etcdsync.outcome", _outcome(error))
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        if error is not None:
            span.record_exception(error)
            span.set_status(self.telemetry.trace.StatusCode.ERROR, str(error))
        self._scope.__exit__(kind, error, tb)


def describe_lock_acquire(
    telemetry: Telemetry, lock: Any, result: Any, error: BaseException | None, seconds: float
) -> dict[str, Any]:
    """``lock.acquire`` / ``lock.try_acquire``: the wait, the queue position, the
    outcome; records the wait histogram and the acquisition and timeout counters."""
    name = {"etcdsync.lock.name": lock.name}
    # acquire() returns the lock; try_acquire() returns whether it was taken.
    taken = error is None and result is not False
    attributes: dict[str, Any] = {
        **name,
        "etcdsync.lock.wait_time": seconds,
        "etcdsync.lock.queue_position": getattr(lock, "_queue_position", None),
    }
    if taken:
        attributes["etcdsync.lock.key"] = lock.key
        attributes["etcdsync.lock.fencing_token"] = lock.fencing_token
        attributes["etcdsync.outcome"] = "acquired"
        telemetry.lock_wait.record(seconds, name)
        telemetry.lock_acquisitions.add(1, name)
    elif error is None:
        attributes["etcdsync.outcome"] = "busy"
    elif isinstance(error, errors.Timeout):
        attributes["etcdsync.outcome"] = "timeout"
        telemetry.lock_timeouts.add(1, name)
    return attributes


def describe_campaign(
    telemetry: Telemetry, election: Any, result: Any, error: BaseException | None, seconds: float
) -> dict[str, Any]:
    """``election.campaign``: the election, the wait, the term won."""
    key = election.leader_key if error is None else None
    return {
        "etcdsync.election.name": _text(election.name),
        "etcdsync.election.wait_time": seconds,
        "etcdsync.election.key": key.decode("utf-8", "replace") if key else None,
        "etcdsync.election.revision": election.leader_revision if error is None else None,
        **({"etcdsync.outcome": "elected"} if error is None else {}),
    }


def describe_config_reload(
    telemetry: Telemetry, watcher: Any, result: Any, error: BaseException | None, seconds: float
) -> dict[str, Any]:
    """``config.reload``: the prefix read again and the revision it was read at."""
    prefix = watcher.prefix
    return {
        "etcdsync.config.prefix": _text(prefix),
        # The revision the prefix was read at (not yet published when the span ends).
        "etcdsync.config.revision": watcher._mirror.revision if error is None else None,
    }
