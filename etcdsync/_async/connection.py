"""The connection: channels to the endpoints, failover, auth, deadlines, retries.

Every request of the client goes through :meth:`AsyncConnection.unary` (or opens
a stream with :meth:`AsyncConnection.open_stream`).  This module and the backends
are the only code that sees gRPC errors; callers get :mod:`etcdsync.errors`.

Retry policy (see ``_status.safe_to_retry``): reads are retried on transient
failures; writes only when the request certainly never reached a server or was
rejected before being applied.  Retries are bounded by ``retries`` and by the
call's deadline, with exponential backoff and full jitter.

What else the connection decides (``recipes_docs/connection.md`` tells the why and
the measured numbers):

* **First connect**: with several endpoints, the first request waits until one of
  them completes its HTTP/2 handshake, preferring the configured order, so a frozen
  first member (SIGSTOP, a dead network path) does not fail a fresh process.
* **Ordering guard** (Go's ``client/v3/ordering``): a serializable read answered
  below a revision this client had already seen is read again elsewhere, or raises
  :class:`~etcdsync.errors.StaleReadError`.
* **Reconnect policy** for streams: :meth:`AsyncConnection.pause_before_reconnect`
  ends a stream's backoff as soon as the member's channel is connected again.
* **Fork**: in a child process every use raises
  :class:`~etcdsync.errors.ForkedClientError`; ``close()`` there drops references
  without calling into gRPC.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from .. import _status, errors
from .. import telemetry as _telemetry
from .._backends._async import (
    BidiStream,
    Cancelled,
    Event,
    Lock,
    ServerStream,
    StateLock,
    Task,
    channel_state,
    close_channel,
    create_channel,
    keep_connecting,
    sleep,
    spawn,
    wait_event,
)
from .._config import ChannelSettings, TLSConfig, check_timeout, parse_endpoints
from .._methods import AUTHENTICATE, KV_RANGE, KV_TXN, MEMBER_LIST, Method

_T = TypeVar("_T")

log = logging.getLogger("etcdsync.connection")

_RETRY_BACKOFF_START = 0.05
_RETRY_BACKOFF_MAX = 1.0
# Streams (watch, keepalive, server streams) reopen after growing, jittered pauses
# from START to MAX - cut short when the member's channel connects again.
STREAM_BACKOFF_START = 0.05
STREAM_BACKOFF_MAX = 1.0
# How often a paused stream looks at its member's channel.
_RECOVERY_POLL = 0.025
# First connect: how often the endpoints' channels are looked at, and how long an
# earlier endpoint still connecting is preferred over a later one already connected.
_RACE_POLL = 0.01
_RACE_PREFERENCE = 0.1
# How long a second close() waits for the first (which bounds each of its revokes):
# bounded so a close from a signal handler that interrupted the first cannot hang.
_SECOND_CLOSE_WAIT = 30.0
# Stream metadata asking the member to end the stream when it has no leader.
REQUIRE_LEADER = (("hasleader", "true"),)

_READY = grpc.ChannelConnectivity.READY
_FAILED = grpc.ChannelConnectivity.TRANSIENT_FAILURE

# What a child process inherits from a parent's client and must never hand back to
# gRPC (closing or freeing them there can hang or abort): kept here until it exits.
_INHERITED: list[Any] = []

FORK_ADVICE = (
    "gRPC connections cannot cross a fork: create a new client in the child, after "
    "forking, and keep no client open in the parent while it forks. Otherwise start the "
    "children with multiprocessing's 'forkserver' or 'spawn' method (a threaded parent "
    "may instead set GRPC_POLL_STRATEGY=poll in its environment, before grpc is "
    "imported): in plain fork() children of a parent with live streams, gRPC aborted "
    "86 in 100 new clients of a threaded parent, 27 in 100 of an asyncio one (see "
    "recipes_docs/connection.md)"
)


class AsyncConnection:
    """Channels to etcd endpoints with failover; used by every API mixin."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float | None,
        tls: TLSConfig | None,
        user: str | None,
        password: str | None,
        retries: int,
        settings: ChannelSettings,
    ) -> None:
        self.endpoints, wants_tls = parse_endpoints(endpoints)
        if (user is None) != (password is None):
            raise errors.InvalidRequest("give both user and password, or neither")
        _check_credential("user", user)
        _check_credential("password", password)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise errors.InvalidRequest(f"retries must be an int >= 0, got {retries!r}")
        if tls is None and wants_tls:
            tls = TLSConfig()
        self.timeout = check_timeout(timeout)
        self.retries = retries
        self._settings = settings
        self._credentials = tls.credentials() if tls is not None else None
        self._options = settings.options(tls.server_name if tls else None)
        self._user = user
        self._password = password
        self._token: str | None = None
        self._metadata: tuple[tuple[str, str], ...] | None = None
        self._index = 0
        self._channels: dict[str, Any] = {}
        self._callables: dict[tuple[str, str], Any] = {}
        self._auth_lock = Lock()
        self._closed = False
        # close() in progress: a second caller waits for the first to finish (below).
        self._closing = False
        self._close_done = Event()
        self._pid = os.getpid()
        self._close_hooks: list[Callable[[], Awaitable[None]]] = []
        self._closing_hooks: list[Callable[[], Awaitable[None]]] = []
        self._shared: dict[object, Any] = {}
        self._shared_lock = StateLock()
        # First connect: done at once when there is nothing to choose from.
        self._chosen = len(self.endpoints) == 1
        self._choose_lock = Lock()
        # The ordering guard: the newest revision any response has shown this client.
        self.seen_revision = 0
        self._revision_lock = StateLock()
        self._sync_task: Task | None = None
        self._sync_stop = Event()
        # The endpoints whose latest connection attempt failed its TLS handshake (until
        # one of their calls succeeds): a stream gives up once every endpoint is here.
        self._tls_refused: dict[str, errors.TLSError] = {}

    # --- state -----------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The endpoint requests currently go to."""
        return self.endpoints[self._index]

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def forked(self) -> bool:
        """True in a child process that inherited this connection through fork()."""
        return os.getpid() != self._pid

    def check_process(self) -> None:
        """Raise :class:`~etcdsync.errors.ForkedClientError` in a forked child."""
        if os.getpid() != self._pid:
            raise errors.ForkedClientError(
                f"this client was created in process {self._pid}, before fork(); {FORK_ADVICE}"
            )

    def check_usable(self) -> None:
        """Raise when the client crossed a fork or was closed."""
        self.check_process()
        if self._closed:
            raise errors.ClientClosedError("the client is closed")

    def effective_timeout(self, timeout: object) -> float | None:
        """A call's timeout in seconds: the client's default for None, no deadline for
        ``inf``; anything but a sane number raises InvalidRequest."""
        return self.timeout if timeout is None else check_timeout(timeout)

    def deadline_for(self, timeout: object) -> float | None:
        """The absolute monotonic deadline for a call (None: no deadline)."""
        effective = self.effective_timeout(timeout)
        return None if effective is None else time.monotonic() + effective

    def on_close(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` first when the connection closes (stream managers stop there)."""
        self._close_hooks.append(hook)

    def shared(self, key: object, factory: Callable[[], _T]) -> _T:
        """The one object made by ``factory`` for ``key`` on this connection.

        Stream managers (the watch streams, the keepalive stream) and the shared
        session pool live here, so a client and every namespaced view of it share
        them.  ``factory`` runs at most once per key (threads may race here) and
        must do no I/O.
        """
        found = self._shared.get(key)
        if found is None:
            with self._shared_lock:
                found = self._shared.get(key)
                if found is None:
                    found = self._shared[key] = factory()
        return found

    def on_closing(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` at the start of :meth:`close`, while requests still work and
        before the :meth:`on_close` hooks (the shared sessions revoke their leases
        there, before the keepalive stream stops)."""
        self._closing_hooks.append(hook)

    # --- channels ----------------------------------------------------------------

    def channel(self, endpoint: str | None = None) -> Any:
        """The channel of ``endpoint`` (default: the current one), created on first use."""
        endpoint = endpoint or self.endpoint
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = create_channel(endpoint, self._credentials, self._options)
            self._channels[endpoint] = channel
        return channel

    def _state(self, endpoint: str, *, connect: bool = False) -> grpc.ChannelConnectivity | None:
        """The connectivity of ``endpoint``'s channel (None: no channel yet, or closed)."""
        channel = self.channel(endpoint) if connect else self._channels.get(endpoint)
        if channel is None or self._closed:
            return None
        try:
            return channel_state(channel, connect)
        except Exception:  # closed under us by close(): nothing to report
            return None

    def endpoint_ready(self) -> bool:
        """True when the current endpoint's channel is connected (an idle one is told
        to connect)."""
        return self._state(self.endpoint, connect=True) is _READY

    def failover(self, failed_endpoint: str) -> None:
        """Move to another endpoint after ``failed_endpoint`` failed: the next one in
        order that is connected, else the next one not known to be failing, else
        simply the next one.

        Several callers may report the same failure; only the first one moves.
        """
        channel = self._channels.get(failed_endpoint)
        if channel is not None and not self.forked:
            # Even when there is nowhere else to go, the member must be reachable
            # again once it is back (grpc's sync stack needs help with that).
            keep_connecting(channel)
        count = len(self.endpoints)
        if self.endpoint != failed_endpoint or count == 1:
            return
        order = [(self._index + step) % count for step in range(1, count)]
        states = {index: self._state(self.endpoints[index]) for index in order}
        ready = [i for i in order if states[i] is _READY]
        hopeful = [i for i in order if states[i] is not _FAILED]
        self._index = (ready or hopeful or order)[0]

    def set_endpoints(self, endpoints: Sequence[str]) -> None:
        """Replace the endpoint list (``sync_endpoints``), staying on the current
        endpoint when it is still listed, else moving to the first new one.

        Channels to dropped endpoints stay open until close(): streams already open
        there keep running until they break, then reconnect via :attr:`endpoint`.
        """
        new, wants_tls = parse_endpoints(endpoints)
        if wants_tls and self._credentials is None:
            raise errors.InvalidRequest(
                f"endpoints {', '.join(endpoints)} use https but the client has no TLS config"
            )
        current = self.endpoint
        # Other tasks/threads read endpoints[_index] at any time: keep every
        # intermediate state valid (index 0 exists in both lists).
        self._index = 0
        self.endpoints = new
        self._index = new.index(current) if current in new else 0

    def _callable(self, method: Method, endpoint: str | None = None) -> Any:
        key = (endpoint or self.endpoint, method.path)
        fn = self._callables.get(key)
        if fn is None:
            fn = self.channel(key[0]).unary_unary(
                method.path,
                request_serializer=method.serializer,
                response_deserializer=method.deserializer,
            )
            self._callables[key] = fn
        return fn

    # --- first connect -----------------------------------------------------------------

    async def _choose_endpoint(self, deadline: float | None) -> None:
        """Before the first request: start connecting to every endpoint and go on with
        the first one, in the configured order, whose connection is up.

        A member that accepts TCP but answers nothing (frozen, or a dead network path)
        never completes the HTTP/2 handshake, so it is never chosen while another
        member answers.  An earlier endpoint still connecting is preferred for
        ``_RACE_PREFERENCE`` seconds over a later one already connected.  When none
        connects (all refused, or the deadline comes), the current endpoint stays and
        the request fails as it would have.
        """
        async with self._choose_lock:
            if self._chosen:
                return
            try:
                await self._race(deadline)
            finally:
                self._chosen = True

    async def _race(self, deadline: float | None) -> None:
        now = time.monotonic()
        limit = now + self._settings.connect_timeout
        if deadline is not None:
            limit = min(limit, deadline)
        endpoints = list(self.endpoints)
        for endpoint in endpoints:
            keep_connecting(self.channel(endpoint))  # the sync stack needs a poller
        first_ready_at: float | None = None
        while not self._closed:
            states = [self._state(endpoint, connect=True) for endpoint in endpoints]
            ready = [i for i, state in enumerate(states) if state is _READY]
            now = time.monotonic()
            if ready:
                first_ready_at = first_ready_at or now
                earlier_pending = any(states[i] is not _FAILED for i in range(ready[0]))
                if not earlier_pending or now - first_ready_at >= _RACE_PREFERENCE:
                    if endpoints[ready[0]] in self.endpoints:
                        self._index = self.endpoints.index(endpoints[ready[0]])
                    return
            elif all(state is _FAILED for state in states):
                return  # every member refused: let the request fail fast
            if now >= limit:
                return
            await sleep(_RACE_POLL)

    # --- auth ------------------------------------------------------------------------

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """Call metadata: the auth token once authenticated."""
        return self._metadata

    @property
    def token(self) -> str | None:
        """The current auth token (None before authenticating or without auth)."""
        return self._token

    @property
    def has_auth(self) -> bool:
        """True when the client logs in with a user name and password."""
        return self._user is not None

    async def authenticate(self, *, stale_token: str | None = None) -> None:
        """Fetch a token for the configured user (once, even under concurrency).

        Raises :class:`~etcdsync.errors.AuthFailedError` for a wrong user or password.
        """
        try:
            await self._authenticate(stale_token, self.deadline_for(None))
        except grpc.RpcError as exc:
            raise self._translate(exc, self.endpoint) from None

    async def _authenticate(self, stale_token: str | None, deadline: float | None) -> None:
        """:meth:`authenticate` within a call's deadline, raising gRPC errors for retry."""
        if self._user is None:
            return
        async with self._auth_lock:
            if self._token is not None and self._token != stale_token:
                return  # another caller refreshed it meanwhile
            request = AUTHENTICATE.request(name=self._user, password=self._password)
            response = await self._attempt(AUTHENTICATE, request, deadline, None)
            self._token = response.token
            self._metadata = (("token", response.token),)

    # --- calls -------------------------------------------------------------------------

    def unary(
        self,
        method: Method,
        request: Any,
        *,
        timeout: float | None = None,
        idempotent: bool,
        endpoint: str | None = None,
    ) -> Awaitable[Any]:
        """Send one request and return the response message.

        ``timeout`` overrides the client's default deadline for this call (the
        deadline covers every retry; ``inf``: none).  ``idempotent`` allows retries
        after failures whose outcome is unknown.  ``endpoint`` pins the call to one
        member (maintenance requests about a given member): it is never sent
        elsewhere, and retries go to the same member.
        """
        # Not a coroutine itself: with telemetry off (the default) the call costs one
        # test more than the request path's own coroutine (``_unary``), no frame.
        telemetry = _telemetry.active
        if telemetry is None:
            return self._unary(method, request, timeout, idempotent, endpoint)
        return self._traced_unary(telemetry, method, request, timeout, idempotent, endpoint)

    async def _traced_unary(
        self,
        telemetry: _telemetry.Telemetry,
        method: Method,
        request: Any,
        timeout: float | None,
        idempotent: bool,
        endpoint: str | None,
    ) -> Any:
        with telemetry.rpc(method):  # etcdsync.telemetry.enable(): one span per request
            return await self._unary(method, request, timeout, idempotent, endpoint)

    async def _unary(
        self,
        method: Method,
        request: Any,
        timeout: float | None,
        idempotent: bool,
        endpoint: str | None,
    ) -> Any:
        self.check_usable()
        deadline = self.deadline_for(timeout)
        pinned = _pin(endpoint)
        if not self._chosen and pinned is None:
            await self._choose_endpoint(deadline)
        if self._settings.auto_sync_interval is not None and self._sync_task is None:
            self._sync_task = spawn(self._auto_sync, name="etcdsync-endpoint-sync")
        floor = self.seen_revision
        response, served_by = await self._call(method, request, deadline, idempotent, pinned)
        self.note_served(served_by)
        if self._in_order(response, floor, None if pinned else (method, request)):
            return response
        return await self._read_again(method, request, deadline, floor, response, served_by)

    async def _call(
        self,
        method: Method,
        request: Any,
        deadline: float | None,
        idempotent: bool,
        pinned: str | None,
    ) -> tuple[Any, str]:
        """One request with the retry policy; returns the response and who served it."""
        endpoint = pinned or self.endpoint
        try:
            # Inside the try: a failed login is translated, and retried elsewhere when
            # the endpoint was unreachable, like any other request.
            if self._user is not None and self._token is None:
                await self._authenticate(None, deadline)
            return await self._attempt(method, request, deadline, self._metadata, pinned), endpoint
        except grpc.RpcError as exc:
            # Fail over even when not retrying, so the next call avoids a dead endpoint.
            self._recover_from(exc, endpoint)
            if not self._should_retry(exc, idempotent):
                raise self._translate(exc, endpoint) from None
            first_error: BaseException = exc
        return await self._retry(
            method, request, deadline, idempotent, first_error, endpoint, pinned
        )

    async def _attempt(
        self,
        method: Method,
        request: Any,
        deadline: float | None,
        metadata: tuple[tuple[str, str], ...] | None,
        pinned: str | None = None,
    ) -> Any:
        if _telemetry.active is not None:  # counts the attempts (retries) of the span
            _telemetry.active.rpc_attempt(method, pinned or self.endpoint)
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        # No local for the callable: a frame kept by an error's traceback must not hold
        # the channel (grpc.aio keeps its poller thread while any channel object lives).
        try:
            return await self._callable(method, pinned)(
                request, timeout=remaining, metadata=metadata
            )
        except grpc.RpcError as exc:
            raise exc.with_traceback(None) from None  # drop gRPC frames: they hold the call
        except Cancelled:
            # grpc.aio cancels the calls of a channel that close() closes: that is the
            # client closing, not the caller's task being cancelled.
            if not self._closed:
                raise
        # Raised outside the handler so the error does not chain gRPC's cancelled call.
        raise errors.ClientClosedError("the client was closed during the call")

    def _should_retry(self, exc: BaseException, idempotent: bool) -> bool:
        if self.retries == 0 or self._closed:
            return False
        if self._user is not None and _status.is_auth_token_error(exc):
            return True
        return _status.safe_to_retry(exc, idempotent=idempotent)

    def _recover_from(self, exc: BaseException, endpoint: str) -> None:
        # A deadline that passes without any answer is what a frozen member (SIGSTOP,
        # a stalled disk) or a silent network path looks like: its TCP connection
        # stays up, so gRPC reports nothing else until keepalive pings time out.  The
        # failed call is not repeated (its outcome is unknown), but the following
        # calls go to the next member.  On a healthy cluster that costs nothing: every
        # member serves every request.  A member cut off from its peers answers alike
        # once etcd's own request timeout passes ("context deadline exceeded", code
        # UNKNOWN, or "etcdserver: request timed out"), as does one without a leader.
        if _status.member_failed(exc):
            self.failover(endpoint)

    async def _retry(
        self,
        method: Method,
        request: Any,
        deadline: float | None,
        idempotent: bool,
        first_error: BaseException,
        first_endpoint: str,
        pinned: str | None = None,
    ) -> tuple[Any, str]:
        tried = [first_endpoint]
        last_error = first_error
        endpoint = first_endpoint
        budget = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries)
            | stop_after_delay(budget if budget is not None else float("inf")),
            wait=wait_random_exponential(multiplier=_RETRY_BACKOFF_START, max=_RETRY_BACKOFF_MAX),
            retry=retry_if_exception(lambda e: self._should_retry(e, idempotent)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    self.check_usable()
                    endpoint = pinned or self.endpoint
                    if endpoint not in tried:
                        tried.append(endpoint)
                    try:
                        if self._user is not None and (
                            self._token is None or _status.is_auth_token_error(last_error)
                        ):
                            await self._authenticate(self._token, deadline)
                        response = await self._attempt(
                            method, request, deadline, self._metadata, pinned
                        )
                        return response, endpoint
                    except grpc.RpcError as exc:
                        last_error = exc
                        self._recover_from(exc, endpoint)
                        raise
        except grpc.RpcError as exc:
            error = self._translate(exc, endpoint)  # where the last attempt went
            if isinstance(error, errors.TLSError):
                _, explanation = _status.tls_failure(error.details or "") or ("", "")
                raise errors.TLSError(
                    f"could not connect to any endpoint (tried {', '.join(tried)}): TLS "
                    f"handshake failed: {explanation}: {error.details}",
                    reason=error.reason,
                    endpoints=tried,
                    code=error.code,
                    details=error.details,
                ) from None
            if isinstance(error, errors.ConnectionFailedError):
                raise errors.ConnectionFailedError(
                    f"could not connect to any endpoint (tried {', '.join(tried)}): "
                    f"{error.details}",
                    endpoints=tried,
                    code=error.code,
                    details=error.details,
                ) from None
            raise error from None
        raise self._translate(last_error, self.endpoint)  # pragma: no cover - stop reraises

    def _translate(self, exc: BaseException, endpoint: str) -> errors.EtcdError:
        if self._closed:
            return errors.ClientClosedError("the client was closed during the call")
        error = _status.translate(exc, endpoint=endpoint)
        if isinstance(error, errors.TLSError):
            self._tls_refused[endpoint] = error
        return error

    def translate(self, exc: BaseException, endpoint: str | None = None) -> errors.EtcdError:
        """Translate a gRPC failure seen on a stream of this connection (opened on
        ``endpoint``; default: the current one)."""
        return self._translate(exc, endpoint or self.endpoint)

    # --- TLS refusals ----------------------------------------------------------------------

    def tls_refused_everywhere(self, error: errors.EtcdError) -> bool:
        """True when ``error`` is a certificate refused in a TLS handshake and the
        latest attempt on every endpoint had a certificate refused too: a stream stops
        reconnecting and raises it, as a unary call does (certificates do not fix
        themselves).  A handshake that merely broke off (``reason="handshake"``: a
        member may have died mid-handshake) does not count: streams keep trying."""
        return _tls_verdict(error) and all(
            _tls_verdict(self._tls_refused.get(endpoint)) for endpoint in self.endpoints
        )

    def note_served(self, endpoint: str) -> None:
        """Note that ``endpoint`` answered: its TLS works (again)."""
        if self._tls_refused:
            self._tls_refused.pop(endpoint, None)

    # --- the ordering guard --------------------------------------------------------------

    def observe_revision(self, revision: int) -> None:
        """Note a revision this client has seen (a response header, a watch event)."""
        if revision > self.seen_revision:
            with self._revision_lock:
                if revision > self.seen_revision:
                    self.seen_revision = revision

    def _in_order(self, response: Any, floor: int, sent: tuple[Method, Any] | None) -> bool:
        """Note the response's revision; False for a serializable read answered below
        ``floor``, the newest revision seen when the request was sent.

        ``sent`` is the (method, request) answered (None: a call pinned to a member,
        which the guard ignores); its kind (:func:`_read_kind`) is looked at only for
        an answer below ``floor`` - rare, and reading a txn's ops costs more than the
        rest of the check.
        """
        header = getattr(response, "header", None)
        if header is None:
            return True
        revision: int = header.revision
        if revision >= floor:
            self.observe_revision(revision)
            return True
        serializable = None if sent is None else _read_kind(*sent)
        if serializable:
            return False  # a member behind what we already saw: read elsewhere
        if serializable is False:
            # A linearizable answer cannot be stale: the cluster's history itself went
            # back (restored from a snapshot).  Start the guard again from there.
            with self._revision_lock:
                if self.seen_revision == floor:  # unless a newer answer came meanwhile
                    self.seen_revision = revision
        return True

    async def _read_again(
        self,
        method: Method,
        request: Any,
        deadline: float | None,
        floor: int,
        response: Any,
        served_by: str,
    ) -> Any:
        """Repeat a serializable read that a lagging member answered below ``floor``:
        on the other members in turn (a lone member gets time to catch up), at most
        ``retries`` times within the deadline, then raise StaleReadError."""
        revision: int = response.header.revision
        delay = _RETRY_BACKOFF_START
        for _ in range(self.retries):
            self.failover(served_by)  # the following calls avoid it too
            if self.endpoint == served_by:
                pause = random.uniform(delay / 2, delay)
                if deadline is not None and time.monotonic() + pause >= deadline:
                    break
                await sleep(pause)
                delay = min(delay * 2, _RETRY_BACKOFF_MAX)
            if deadline is not None and time.monotonic() >= deadline:
                break
            self.check_usable()
            response, served_by = await self._call(method, request, deadline, True, None)
            if self._in_order(response, floor, (method, request)):
                return response
            revision = response.header.revision
        raise errors.StaleReadError(
            f"serializable read answered at revision {revision} by {served_by}, behind "
            f"revision {floor} this client already saw; no member tried had caught up",
            revision=revision,
            seen_revision=floor,
            endpoint=served_by,
        )

    # --- endpoint auto-sync -------------------------------------------------------------

    async def _auto_sync(self) -> None:
        """Every ``auto_sync_interval`` seconds, replace the endpoints with the client
        URLs of the started voting members (as ``sync_endpoints()``)."""
        interval = self._settings.auto_sync_interval
        assert interval is not None
        while not await wait_event(self._sync_stop, interval):
            try:
                response = await self.unary(MEMBER_LIST, MEMBER_LIST.request(), idempotent=True)
                urls: list[str] = []
                for member in response.members:
                    if member.name and not member.isLearner:
                        urls.extend(u for u in member.clientURLs if u not in urls)
                if urls:
                    self.set_endpoints(urls)
            except errors.ClientClosedError:
                return
            except errors.EtcdError as exc:
                log.debug("endpoint auto-sync failed: %s", exc)

    # --- streams --------------------------------------------------------------------------

    async def open_stream(
        self, method: Method, *, extra_metadata: tuple[tuple[str, str], ...] = ()
    ) -> BidiStream:
        """Open a bidirectional stream on the current endpoint.

        ``extra_metadata`` is sent with the stream's headers, e.g.
        ``(("hasleader", "true"),)`` asks the member to end the stream when it
        loses its leader.
        """
        self.check_usable()
        if not self._chosen:
            await self._choose_endpoint(self.deadline_for(None))
        if self._user is not None and self._token is None:
            await self.authenticate()
        metadata = (self._metadata or ()) + extra_metadata
        return BidiStream(
            self.channel(),
            method.path,
            method.serializer,
            method.deserializer,
            metadata or None,
        )

    async def server_stream(
        self,
        method: Method,
        request: Any,
        *,
        timeout: float | None,
        endpoint: str | None = None,
        extra_metadata: tuple[tuple[str, str], ...] = (),
    ) -> AsyncResponseStream:
        """Start a server-streaming call (snapshot, election observe) and return its
        responses.

        ``timeout`` bounds the whole stream (None or ``inf``: no deadline; the caller
        decides, since a subscription must outlive the default call deadline).
        ``endpoint`` pins the call to one member, as in :meth:`unary`.  The stream
        itself is not retried: its owner reopens it (see :meth:`resume_stream`).
        """
        self.check_usable()
        timeout = check_timeout(timeout)
        target = _pin(endpoint)
        if target is None and not self._chosen:
            await self._choose_endpoint(self.deadline_for(timeout))
        if self._user is not None and self._token is None:
            await self.authenticate()
        target = target or self.endpoint
        stream = ServerStream(
            self.channel(target),
            method.path,
            method.serializer,
            method.deserializer,
            request,
            timeout,
            ((self._metadata or ()) + extra_metadata) or None,
        )
        return AsyncResponseStream(self, stream, target)

    # --- the reconnect policy of streams --------------------------------------------------

    @staticmethod
    def stream_backoff(attempt: int) -> float:
        """The pause before reopening a stream after ``attempt`` failed tries in a row:
        growing from 50 ms to 1 s, jittered (clients restarted together spread out)."""
        delay = min(STREAM_BACKOFF_START * 2.0 ** min(attempt, 16), STREAM_BACKOFF_MAX)
        return random.uniform(delay / 2, delay)

    async def pause_before_reconnect(
        self, delay: float, stop: Event | None, *, connection_lost: bool
    ) -> bool:
        """Wait before reopening a broken stream: ``delay`` seconds at most, less once
        the current endpoint's channel is connected again after being down.  True
        when it ended for that reason (reconnect now).

        ``connection_lost``: the stream broke because its connection did (so a
        channel found connected now has recovered, or is another member's).  Ends
        early when ``stop`` is set.  Two backoffs in series - gRPC's reconnection
        and this pause - made a watch resume seconds after its member was back;
        this one now ends within ``_RECOVERY_POLL`` of the connection coming up.
        """
        until = time.monotonic() + delay
        down = connection_lost
        while True:
            if self.endpoint_ready():
                if down:
                    return True
            else:
                down = True
            left = until - time.monotonic()
            if left <= 0:
                return False
            step = min(left, _RECOVERY_POLL)
            if stop is None:
                await sleep(step)
            elif await wait_event(stop, step):
                return False

    async def resume_stream(
        self,
        error: errors.EtcdError,
        endpoint: str,
        attempt: int,
        deadline: float | None,
        stop: Event | None,
    ) -> bool:
        """After a server stream opened on ``endpoint`` failed with ``error``: True once
        it may be opened again - a stale token refreshed, or an unreachable or leaderless
        member left behind, and a pause taken - False when the error is final (the
        request itself failed, the deadline would pass, the client closed)."""
        if self._closed or self.forked or self.tls_refused_everywhere(error):
            return False
        if isinstance(error, errors.InvalidAuthTokenError) and self._user is not None:
            try:
                await self.authenticate(stale_token=self._token)
            except errors.EtcdError as exc:
                log.debug("re-authentication for a stream failed: %s", exc)
            connection_lost = False
        elif isinstance(error, errors.ConnectionError_) and not isinstance(
            error, errors.ResourceExhaustedError
        ):
            self.failover(endpoint)
            connection_lost = _status.lost_connection(error)
        else:
            return False
        delay = self.stream_backoff(attempt)
        if deadline is not None and time.monotonic() + delay >= deadline:
            return False
        await self.pause_before_reconnect(delay, stop, connection_lost=connection_lost)
        return not (self._closed or (stop is not None and stop.is_set()))

    # --- lifecycle -------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop stream managers, then close every channel.  Idempotent.

        In a forked child it only drops this process's references: no request is
        sent (the sessions' leases belong to the parent) and nothing is handed back
        to gRPC, whose state there is a copy of the parent's.
        """
        if self._closed:
            return
        if self._closing and not self.forked:
            # Another thread or task is closing: wait until it has finished, so this
            # caller neither returns early nor closes the channels under its revokes
            # (a CLI closes from its signal thread while its main thread closes too).
            await wait_event(self._close_done, _SECOND_CLOSE_WAIT)
            return
        if self.forked:
            self._closed = True
            _INHERITED.extend((self._channels, self._shared, self._close_hooks))
            self._channels, self._shared = {}, {}
            self._callables.clear()
            self._close_hooks, self._closing_hooks = [], []
            return
        self._closing = True
        try:
            await self._close_everything()
        finally:
            self._close_done.set()

    async def _close_everything(self) -> None:
        closing, self._closing_hooks = self._closing_hooks, []
        for hook in closing:
            await hook()
        self._closed = True
        self._sync_stop.set()
        hooks, self._close_hooks = self._close_hooks, []
        for hook in reversed(hooks):
            await hook()
        channels, self._channels = list(self._channels.values()), {}
        self._callables.clear()
        for channel in channels:
            await close_channel(channel)
        if self._sync_task is not None:
            await self._sync_task.join(5.0)  # its request ended with the channels


class AsyncResponseStream:
    """The responses of one server-streaming call; failures arrive as etcdsync errors."""

    def __init__(self, conn: AsyncConnection, stream: ServerStream, endpoint: str) -> None:
        self._conn = conn
        self._stream = stream
        self.endpoint = endpoint
        self._cancelled = False

    async def read(self) -> Any | None:
        """The next response; None at the end of the stream or after :meth:`cancel`."""
        if self._cancelled:
            return None
        self._conn.check_process()
        try:
            response = await self._stream.read()
        except grpc.RpcError as exc:
            if self._cancelled:
                return None  # our own cancel() ended the call: not a failure
            self._conn._recover_from(exc, self.endpoint)
            raise self._conn._translate(exc, self.endpoint) from None
        except Cancelled:
            # grpc.aio raises CancelledError from a call cancelled under the reader.
            if not self._cancelled:
                raise
            return None
        self._conn.note_served(self.endpoint)
        return response

    def cancel(self) -> None:
        """End the call; a pending or later :meth:`read` returns None."""
        self._cancelled = True
        if not self._conn.forked:
            self._stream.cancel()


def _check_credential(what: str, value: object) -> None:
    """Refuse a user name or password that cannot be sent (etcd takes UTF-8 strings)
    now, typed, without quoting it: an encoder's error would show part of it."""
    if value is None:
        return
    if not isinstance(value, str):
        raise errors.InvalidRequest(f"{what} must be a str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
        return
    except UnicodeEncodeError:
        pass  # raised below, so the encoder's error is not even the context
    raise errors.InvalidRequest(f"{what} is not valid UTF-8 text")


def _tls_verdict(error: errors.EtcdError | None) -> bool:
    """True for a TLS handshake that refused a certificate (not one that broke off)."""
    return isinstance(error, errors.TLSError) and error.reason != "handshake"


def _pin(endpoint: str | None) -> str | None:
    """The normalised ``host:port`` of an endpoint a call is pinned to, if any."""
    return parse_endpoints(endpoint)[0][0] if endpoint is not None else None


def _read_kind(method: Method, request: Any) -> bool | None:
    """For the ordering guard: True for a serializable read (a member may answer it
    from an older state), False for any other KV request (its answer is current),
    None for requests the guard ignores."""
    if method is KV_RANGE:
        return bool(request.serializable)
    if method is KV_TXN:
        # As etcd decides: a txn is served locally when all its ops are serializable ranges.
        for op in (*request.success, *request.failure):
            if op.WhichOneof("request") != "request_range" or not op.request_range.serializable:
                return False
        return True
    return None
