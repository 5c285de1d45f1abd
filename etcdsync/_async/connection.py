"""The connection: channels to the endpoints, failover, auth, deadlines, retries.

Every request of the client goes through :meth:`AsyncConnection.unary` (or opens
a stream with :meth:`AsyncConnection.open_stream`).  This module and the backends
are the only code that sees gRPC errors; callers get :mod:`etcdsync.errors`.

Retry policy (see ``_status.safe_to_retry``): reads are retried on transient
failures; writes only when the request certainly never reached a server or was
rejected before being applied.  Retries are bounded by ``retries`` and by the
call's deadline, with exponential backoff and full jitter.
"""

from __future__ import annotations

import os
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
from .._backends._async import (
    BidiStream,
    Cancelled,
    Lock,
    ServerStream,
    StateLock,
    close_channel,
    create_channel,
    keep_connecting,
)
from .._config import ChannelSettings, TLSConfig, parse_endpoints
from .._methods import AUTHENTICATE, Method

_T = TypeVar("_T")

_RETRY_BACKOFF_START = 0.05
_RETRY_BACKOFF_MAX = 1.0


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
        if timeout is not None and timeout <= 0:
            raise errors.InvalidRequest(f"timeout must be > 0 or None, got {timeout!r}")
        if retries < 0:
            raise errors.InvalidRequest(f"retries must be >= 0, got {retries!r}")
        if tls is None and wants_tls:
            tls = TLSConfig()
        self.timeout = timeout
        self.retries = retries
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
        self._pid = os.getpid()
        self._close_hooks: list[Callable[[], Awaitable[None]]] = []
        self._closing_hooks: list[Callable[[], Awaitable[None]]] = []
        self._shared: dict[object, Any] = {}
        self._shared_lock = StateLock()

    # --- state -----------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The endpoint requests currently go to."""
        return self.endpoints[self._index]

    @property
    def closed(self) -> bool:
        return self._closed

    def check_usable(self) -> None:
        """Raise when the client was closed or crossed a fork."""
        if self._closed:
            raise errors.ClientClosedError("the client is closed")
        if os.getpid() != self._pid:
            raise errors.ForkedClientError(
                "this client was created before fork(); gRPC connections cannot be shared "
                "with a child process: create the client in the child, after forking"
            )

    def deadline_for(self, timeout: float | None) -> float | None:
        """The absolute monotonic deadline for a call (None: no deadline)."""
        effective = self.timeout if timeout is None else timeout
        if effective is not None and effective <= 0:
            raise errors.InvalidRequest(f"timeout must be > 0, got {timeout!r}")
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

    def failover(self, failed_endpoint: str) -> None:
        """Move to the next endpoint after ``failed_endpoint`` failed.

        Several callers may report the same failure; only the first one moves.
        """
        channel = self._channels.get(failed_endpoint)
        if channel is not None:
            # Even when there is nowhere else to go, the member must be reachable
            # again once it is back (grpc's sync stack needs help with that).
            keep_connecting(channel)
        if self.endpoint == failed_endpoint and len(self.endpoints) > 1:
            self._index = (self._index + 1) % len(self.endpoints)

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

    # --- auth ------------------------------------------------------------------------

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """Call metadata: the auth token once authenticated."""
        return self._metadata

    @property
    def token(self) -> str | None:
        """The current auth token (None before authenticating or without auth)."""
        return self._token

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

    async def unary(
        self,
        method: Method,
        request: Any,
        *,
        timeout: float | None = None,
        idempotent: bool,
        endpoint: str | None = None,
    ) -> Any:
        """Send one request and return the response message.

        ``timeout`` overrides the client's default deadline for this call (the
        deadline covers every retry).  ``idempotent`` allows retries after
        failures whose outcome is unknown.  ``endpoint`` pins the call to one
        member (maintenance requests about a given member): it is never sent
        elsewhere, and retries go to the same member.
        """
        self.check_usable()
        deadline = self.deadline_for(timeout)
        pinned = _pin(endpoint)
        endpoint = pinned or self.endpoint
        try:
            # Inside the try: a failed login is translated, and retried elsewhere when
            # the endpoint was unreachable, like any other request.
            if self._user is not None and self._token is None:
                await self._authenticate(None, deadline)
            return await self._attempt(method, request, deadline, self._metadata, pinned)
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
        code, _ = _status.status_of(exc)
        # A deadline that passes without any answer is what a frozen member (SIGSTOP,
        # a stalled disk) or a silent network path looks like: its TCP connection
        # stays up, so gRPC reports nothing else until keepalive pings time out.  The
        # failed call is not repeated (its outcome is unknown), but the following
        # calls go to the next member.  On a healthy cluster that costs nothing: every
        # member serves every request.
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
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
    ) -> Any:
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
                        return await self._attempt(
                            method, request, deadline, self._metadata, pinned
                        )
                    except grpc.RpcError as exc:
                        last_error = exc
                        self._recover_from(exc, endpoint)
                        raise
        except grpc.RpcError as exc:
            error = self._translate(exc, endpoint)  # where the last attempt went
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
        return _status.translate(exc, endpoint=endpoint)

    def translate(self, exc: BaseException) -> errors.EtcdError:
        """Translate a gRPC failure seen on a stream of this connection."""
        return self._translate(exc, self.endpoint)

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
    ) -> AsyncResponseStream:
        """Start a server-streaming call (snapshot, election observe) and return its
        responses.

        ``timeout`` bounds the whole stream (None: no deadline; the caller decides,
        since a subscription must outlive the default call deadline).  ``endpoint``
        pins the call to one member, as in :meth:`unary`.  Streams are not retried.
        """
        self.check_usable()
        if self._user is not None and self._token is None:
            await self.authenticate()
        target = _pin(endpoint) or self.endpoint
        stream = ServerStream(
            self.channel(target),
            method.path,
            method.serializer,
            method.deserializer,
            request,
            timeout,
            self._metadata,
        )
        return AsyncResponseStream(self, stream, target)

    # --- lifecycle -------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop stream managers, then close every channel.  Idempotent."""
        if self._closed:
            return
        closing, self._closing_hooks = self._closing_hooks, []
        for hook in closing:
            await hook()
        self._closed = True
        hooks, self._close_hooks = self._close_hooks, []
        for hook in reversed(hooks):
            await hook()
        channels, self._channels = list(self._channels.values()), {}
        self._callables.clear()
        for channel in channels:
            await close_channel(channel)


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
        try:
            return await self._stream.read()
        except grpc.RpcError as exc:
            if self._cancelled:
                return None  # our own cancel() ended the call: not a failure
            self._conn._recover_from(exc, self.endpoint)
            raise self._conn._translate(exc, self.endpoint) from None

    def cancel(self) -> None:
        """End the call; a pending or later :meth:`read` returns None."""
        self._cancelled = True
        self._stream.cancel()


def _pin(endpoint: str | None) -> str | None:
    """The normalised ``host:port`` of an endpoint a call is pinned to, if any."""
    return parse_endpoints(endpoint)[0][0] if endpoint is not None else None
