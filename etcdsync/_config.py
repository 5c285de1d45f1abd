"""Connection settings shared by both flavours: endpoints, TLS, channel options."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import grpc

from .errors import InvalidRequest

DEFAULT_ENDPOINT = "127.0.0.1:2379"

MAX_TIMEOUT = 1e9
"""The longest finite timeout accepted, in seconds (about 31 years): gRPC turns a
deadline into nanoseconds, and ``1e10`` s overflows them (measured: the call then fails
at once with "deadline exceeded").  ``None`` or ``math.inf`` mean no deadline."""


def check_timeout(
    value: object, what: str = "timeout", *, allow_zero: bool = False
) -> float | None:
    """Validate a timeout in seconds: ``None`` or ``inf`` -> None (no deadline), a
    number > 0 (>= 0 with ``allow_zero``) up to :data:`MAX_TIMEOUT` -> float.

    Anything else - ``nan``, a negative number, ``1e10``, a string, a bool - raises
    :class:`~etcdsync.errors.InvalidRequest` at once.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(
            f"{what} must be a number of seconds or None, not {type(value).__name__}"
        )
    seconds = float(value)
    if seconds == math.inf:
        return None
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidRequest(f"{what} must be {bound} seconds (or None for none), got {value!r}")
    if seconds > MAX_TIMEOUT:
        raise InvalidRequest(
            f"{what} of {value!r} s is too long (at most {MAX_TIMEOUT:g} s); "
            "use None or math.inf for no deadline"
        )
    return seconds


@dataclass(frozen=True)
class TLSConfig:
    """TLS for the client connection.

    ``ca_file`` verifies the server (system roots when omitted); ``cert_file`` and
    ``key_file`` together present a client certificate (mutual TLS);
    ``server_name`` overrides the name checked against the server certificate
    (useful when dialling by IP address).  PEM bytes may be given instead of
    paths through the ``*_pem`` fields.

    Its ``repr`` never shows the private key: ``key_pem`` appears as ``<hidden>``,
    the certificates by their size.
    """

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None
    ca_pem: bytes | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None

    def __repr__(self) -> str:
        shown = []
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            if value is None:
                continue
            if name == "key_pem":
                text = "<hidden>"  # a secret: never in a log line or a traceback
            elif name.endswith("_pem"):
                text = f"<{len(value)} bytes>"
            else:
                text = repr(value)
            shown.append(f"{name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def credentials(self) -> grpc.ChannelCredentials:
        """Build the gRPC channel credentials, reading the files now."""
        ca = self.ca_pem or _read(self.ca_file)
        cert = self.cert_pem or _read(self.cert_file)
        key = self.key_pem or _read(self.key_file)
        if (cert is None) != (key is None):
            raise InvalidRequest("mutual TLS needs both cert_file and key_file")
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )


def _read(path: str | Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"cannot read TLS file {path}: {exc.strerror}") from None


def parse_endpoints(endpoints: str | Sequence[str]) -> tuple[list[str], bool]:
    """Normalise endpoints to ``host:port``; also say whether any asked for https.

    Accepts ``"host:port"``, ``"http://host:port"``, ``"https://host:port"`` and a
    comma-separated string of those.
    """
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out: list[str] = []
    wants_tls = False
    for item in items:
        if not isinstance(item, str):
            raise InvalidRequest(f"endpoint must be a str, got {type(item).__name__}")
        text = item.strip()
        if text.startswith("https://"):
            wants_tls = True
            text = text[len("https://") :]
        elif text.startswith("http://"):
            text = text[len("http://") :]
        text = text.rstrip("/")
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidRequest(f"endpoint {item!r} is not host:port")
        out.append(text)
    if not out:
        raise InvalidRequest("at least one endpoint is required")
    return out, wants_tls


@dataclass(frozen=True)
class ChannelSettings:
    """Connection tuning: gRPC channel options and endpoint upkeep; defaults suit etcd."""

    keepalive_time: float | None = 30.0
    """Seconds between HTTP/2 pings on an idle connection (None: no pings).

    etcd refuses pings more often than its ``--grpc-keepalive-min-time`` (5 s
    by default), so keep this at 5 s or more."""
    keepalive_timeout: float = 10.0
    """Seconds to wait for a ping's answer before the connection is declared dead."""
    max_send_bytes: int = 2 * 1024 * 1024 + 512
    """Largest request gRPC will send (etcd's default ``--max-request-bytes`` is 1.5 MiB)."""
    max_receive_bytes: int = 2**31 - 1
    """Largest response accepted (large ranges; prefer paging with ``iterate``)."""
    connect_timeout: float = 5.0
    """Seconds one connection attempt (TCP, TLS and HTTP/2 handshakes) may take."""
    reconnect_backoff_max: float = 0.5
    """Longest pause, in seconds, between gRPC's attempts to reconnect to a member it
    lost (the pauses grow from 0.1 s, with 20% jitter).  It bounds how long after a
    member is back the client notices: watches and lease renewals resume at the next
    attempt.  One attempt to a dead member costs one TCP connect."""
    auto_sync_interval: float | None = None
    """Seconds between refreshes of the endpoint list from the cluster's member list
    (as ``sync_endpoints()`` does; None: never, the default).  Use it when members
    are added or replaced while clients run; the advertised client URLs must be
    reachable from the client."""
    extra: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    """Raw gRPC channel options appended last."""

    def __post_init__(self) -> None:
        if check_timeout(self.reconnect_backoff_max, "reconnect_backoff_max") is None:
            raise InvalidRequest("reconnect_backoff_max must be finite")
        if self.auto_sync_interval is not None:
            check_timeout(self.auto_sync_interval, "auto_sync_interval")

    def options(self, server_name: str | None) -> list[tuple[str, Any]]:
        opts: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", self.max_send_bytes),
            ("grpc.max_receive_message_length", self.max_receive_bytes),
            # One connection per endpoint: streams and unary calls share it.
            ("grpc.use_local_subchannel_pool", 1),
            # Reconnect quickly after a member restart instead of gRPC's slow default.
            ("grpc.initial_reconnect_backoff_ms", min(100, int(self.reconnect_backoff_max * 1000))),
            ("grpc.max_reconnect_backoff_ms", int(self.reconnect_backoff_max * 1000)),
            # Despite its name, gRPC uses this as the minimum connect timeout, not a
            # backoff: at 100 ms a TLS handshake over any real network would never finish.
            ("grpc.min_reconnect_backoff_ms", int(self.connect_timeout * 1000)),
        ]
        if self.keepalive_time is not None:
            opts += [
                ("grpc.keepalive_time_ms", int(self.keepalive_time * 1000)),
                ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout * 1000)),
                # Recent gRPC cores (measured: 1.85) time an unanswered keepalive ping
                # out by this one (default: a minute), not by keepalive_timeout_ms: without
                # it a frozen or blackholed server keeps streams hanging for a minute.
                ("grpc.http2.ping_timeout_ms", int(self.keepalive_timeout * 1000)),
                # etcd enforces PermitWithoutStream=false: a ping while no call is open
                # counts as abuse, and the third one gets the connection closed with
                # GOAWAY "too_many_pings" (and gRPC then doubles keepalive_time for good).
                # Ping only while calls or streams are open - when it matters.
                ("grpc.keepalive_permit_without_calls", 0),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        if server_name:
            opts.append(("grpc.ssl_target_name_override", server_name))
        opts.extend(self.extra)
        return opts
