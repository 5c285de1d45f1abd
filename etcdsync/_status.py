"""Translation of gRPC failures into :mod:`etcdsync.errors`.

This module and the connection/stream modules are the only places that know
gRPC status codes.  etcd reports most errors as a status code plus a fixed
message (``"etcdserver: ..."``), so the message decides the precise type and the
code decides the fallback.

It also classifies failures for the retry policy: a failure is *safe to retry*
for a mutation only when the request certainly never reached a server, or the
server certainly rejected it before applying it.
"""

from __future__ import annotations

import re
from typing import Any

import grpc

from . import errors

# etcd's fixed error messages (server/etcdserver/api/v3rpc/rpctypes) -> our types.
_BY_MESSAGE: dict[str, type[errors.EtcdError]] = {
    "etcdserver: key is not provided": errors.KeyEmptyError,
    "etcdserver: value is provided": errors.InvalidRequest,
    "etcdserver: lease is provided": errors.InvalidRequest,
    "etcdserver: invalid sort option": errors.InvalidRequest,
    "etcdserver: too many operations in txn request": errors.TooManyOpsError,
    "etcdserver: duplicate key given in txn request": errors.DuplicateKeyError,
    "etcdserver: mvcc: required revision has been compacted": errors.CompactedError,
    "etcdserver: mvcc: required revision is a future revision": errors.FutureRevisionError,
    "etcdserver: mvcc: database space exceeded": errors.ResourceExhaustedError,
    "etcdserver: requested lease not found": errors.LeaseNotFoundError,
    "etcdserver: too large lease TTL": errors.LeaseTTLTooLargeError,
    "etcdserver: request is too large": errors.RequestTooLargeError,
    "etcdserver: too many requests": errors.ResourceExhaustedError,
    "etcdserver: authentication failed, invalid user ID or password": errors.AuthFailedError,
    "etcdserver: permission denied": errors.PermissionDeniedError,
    "etcdserver: authentication is not enabled": errors.AuthNotEnabledError,
    "etcdserver: invalid auth token": errors.InvalidAuthTokenError,
    "etcdserver: user name is empty": errors.AuthFailedError,
    "etcdserver: user name not found": errors.UserNotFoundError,
    # A user created with no_password can only log in with a client certificate.
    "auth: authentication failed, password was given for no password user": (
        errors.AuthFailedError
    ),
    "etcdserver: user name already exists": errors.UserExistsError,
    "etcdserver: role name not found": errors.RoleNotFoundError,
    "etcdserver: role name already exists": errors.RoleExistsError,
    "etcdserver: role is not granted to the user": errors.NotGrantedError,
    "etcdserver: permission is not granted to the role": errors.NotGrantedError,
    "etcdserver: root user does not exist": errors.AuthError,
    "etcdserver: root user does not have root role": errors.AuthError,
    "etcdserver: member not found": errors.MemberNotFoundError,
    "etcdserver: member ID already exist": errors.MemberExistsError,
    "etcdserver: Peer URLs already exists": errors.MemberExistsError,
    "etcdserver: can only promote a learner member": errors.MemberNotLearnerError,
    "etcdserver: can only promote a learner member which is in sync with leader": (
        errors.LearnerNotReadyError
    ),
    "etcdserver: too many learner members in cluster": errors.TooManyLearnersError,
    "etcdserver: bad leader transferee": errors.InvalidRequest,
    # The lock/election services hit the deadline the client sent on the server side
    # and report Go's context error (code UNKNOWN) just before ours expires.
    "context deadline exceeded": errors.Timeout,
    # The server-side election service (v3electionpb) answers with its own messages.
    "election: not leader": errors.NotElectedError,
    "election: no leader": errors.NoLeaderElectedError,
    "etcdserver: no leader": errors.NoLeaderError,
    "etcdserver: not leader": errors.NotLeaderError,
    "etcdserver: leader changed": errors.Unavailable,
    "etcdserver: server stopped": errors.Unavailable,
    "etcdserver: request timed out": errors.Unavailable,
    "etcdserver: request timed out, possibly due to previous leader failure": errors.Unavailable,
    "etcdserver: request timed out, possibly due to connection lost": errors.Unavailable,
    "etcdserver: unhealthy cluster": errors.Unavailable,
    "etcdserver: rpc not supported for learner": errors.Unavailable,
    "etcdserver: not capable": errors.UnsupportedError,
}

_BY_CODE: dict[grpc.StatusCode, type[errors.EtcdError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: errors.ClientError,
    grpc.StatusCode.NOT_FOUND: errors.ClientError,
    grpc.StatusCode.ALREADY_EXISTS: errors.ClientError,
    grpc.StatusCode.FAILED_PRECONDITION: errors.ClientError,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: errors.AuthError,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Timeout,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhaustedError,
    grpc.StatusCode.UNIMPLEMENTED: errors.UnsupportedError,
    grpc.StatusCode.CANCELLED: errors.Unavailable,
}

# gRPC's own wording when no transport could be established: nothing was sent.
_NEVER_SENT_MARKERS = (
    "failed to connect to all addresses",
    "no address available",
    "DNS resolution failed",
    "Connection refused",
    "connections to all backends failing",
)

# Server answers that reject a request before it is proposed to raft.
_REJECTED_BEFORE_APPLY = {
    "etcdserver: too many requests",
    "etcdserver: invalid auth token",
    "etcdserver: revision of auth store is old",
}

_MESSAGE_TOO_LARGE_MARKERS = ("larger than max", "message too large", "Sent message larger")
# gRPC states both numbers: "... larger than max (3145738 vs. 2097664)".
_SIZE_VS_LIMIT = re.compile(r"\((\d+) vs\. (\d+)\)")


def status_of(exc: BaseException) -> tuple[grpc.StatusCode | None, str]:
    """Return (code, details) of a gRPC failure, or (None, str(exc))."""
    code_fn: Any = getattr(exc, "code", None)
    details_fn: Any = getattr(exc, "details", None)
    if callable(code_fn) and callable(details_fn):
        try:
            return code_fn(), details_fn() or ""
        except Exception:  # a half-built call object; fall back to its text
            pass
    return None, str(exc)


def is_rpc_error(exc: BaseException) -> bool:
    """True for the exceptions grpc and grpc.aio raise for a failed call."""
    return isinstance(exc, grpc.RpcError)


# gRPC reports a connection torn down under a call as INTERNAL with these words.
_BROKEN_TRANSPORT_MARKERS = ("Stream removed", "RST_STREAM", "Socket closed", "GOAWAY")


def broken_transport(exc: BaseException) -> bool:
    """True when the call failed because its connection broke (outcome unknown)."""
    code, details = status_of(exc)
    return code is grpc.StatusCode.INTERNAL and any(m in details for m in _BROKEN_TRANSPORT_MARKERS)


def never_sent(exc: BaseException) -> bool:
    """True when the request certainly never reached a server."""
    code, details = status_of(exc)
    return code is grpc.StatusCode.UNAVAILABLE and any(m in details for m in _NEVER_SENT_MARKERS)


def safe_to_retry(exc: BaseException, *, idempotent: bool) -> bool:
    """Decide whether repeating the request cannot cause a second effect.

    Reads (``idempotent=True``) are repeated on any transient failure.  Writes are
    repeated only when nothing reached the server, or the server rejected the
    request before proposing it; a write that timed out or lost its connection
    mid-flight has an unknown outcome and is surfaced to the caller instead.
    """
    code, details = status_of(exc)
    if never_sent(exc) or details in _REJECTED_BEFORE_APPLY:
        return True
    if not idempotent:
        return False
    if code is grpc.StatusCode.UNAVAILABLE or broken_transport(exc):
        return True
    # A member that could not serve in time or without a leader: ask another one.
    return details in _MEMBER_FAILED_MESSAGES


def is_auth_token_error(exc: BaseException) -> bool:
    """True when the server refused our token (expired or from an old auth revision)."""
    _, details = status_of(exc)
    return details in (
        "etcdserver: invalid auth token",
        "etcdserver: revision of auth store is old",
    )


# A cancel reason can be a whole Go status text: "rpc error: code = X desc = <message>".
_GO_STATUS = re.compile(r"^rpc error: code = (\w+) desc = (.*)$", re.DOTALL)
# Go's code names, as in a cancel reason, for the codes the table above maps.
_GO_CODES = {"".join(part.capitalize() for part in code.name.split("_")): code for code in _BY_CODE}


def translate_reason(reason: str) -> errors.EtcdError:
    """Build the error for a server message that arrived without a status (a watch's
    cancel reason, for instance)."""
    message, code = reason, None
    parsed = _GO_STATUS.match(reason)
    if parsed is not None:
        code, message = _GO_CODES.get(parsed.group(1)), parsed.group(2)
    cls = _BY_MESSAGE.get(message) or (_BY_CODE.get(code) if code else None) or errors.EtcdError
    return cls(reason, details=message, code=code.name if code else None)


def is_auth_refusal(error: errors.EtcdError) -> bool:
    """True for a refusal that a fresh auth token may lift: an expired token, or the
    "permission denied" etcd gives a watch created on a stream whose token expired."""
    return isinstance(error, (errors.InvalidAuthTokenError, errors.PermissionDeniedError))


def lost_connection(error: errors.EtcdError) -> bool:
    """True when a stream failed because its connection did (refused, reset, closed):
    not an answer of the member (``"etcdserver: no leader"`` and the like)."""
    if isinstance(error, errors.ConnectionFailedError):
        return True
    details = error.details or ""
    return (
        isinstance(error, errors.Unavailable)
        and error.code in ("UNAVAILABLE", "INTERNAL")
        and not details.startswith(("etcdserver:", "election:"))
    )


# A member's own answers that it could not serve the request in time or without a
# leader: cut off from its peers, it holds a write until etcd's request timeout
# (5 s + 2 election timeouts) and then answers with one of these.  etcd 3.5 sends
# its Go context's "context deadline exceeded" with code UNKNOWN, not DEADLINE_EXCEEDED.
_MEMBER_FAILED_MESSAGES = frozenset(
    {
        "context deadline exceeded",
        "etcdserver: request timed out",
        "etcdserver: request timed out, possibly due to previous leader failure",
        "etcdserver: request timed out, possibly due to connection lost",
        "etcdserver: leader changed",
        "etcdserver: no leader",
        "etcdserver: server stopped",
        "etcdserver: unhealthy cluster",
        "etcdserver: rpc not supported for learner",
    }
)


def member_failed(exc: BaseException) -> bool:
    """True when a call's failure says its member cannot serve now: unreachable
    (UNAVAILABLE), silent until the deadline (DEADLINE_EXCEEDED), or answering that
    its own request deadline passed or that it has no leader.  The following calls
    should go to another member."""
    code, details = status_of(exc)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return True
    return details in _MEMBER_FAILED_MESSAGES


# gRPC's words for a failed TLS handshake, most specific first -> (reason, what to
# tell).  The client's checks: hostname, then chain (unknown CA or expired); the
# server's refusal of our certificate arrives as a TLS alert.
_TLS_FAILURES = (
    (
        # The first: grpcio >= ~1.6x; the second: older grpcio ("Peer name X is not in
        # peer certificate").
        ("Hostname Verification Check failed", "is not in peer certificate"),
        "hostname",
        "the server's certificate does not name the host dialled "
        "(TLSConfig.server_name sets the name to check)",
    ),
    (
        ("certificate has expired", "certificate is not yet valid", "CERTIFICATE_EXPIRED"),
        "expired",
        "a certificate is outside its validity period",
    ),
    (
        ("CERTIFICATE_VERIFY_FAILED",),
        "unknown CA",
        "the server's certificate is not signed by a CA this client trusts (TLSConfig.ca_file)",
    ),
    (
        ("ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED", "ALERT_UNKNOWN_CA"),
        "client certificate",
        "the server refused the client certificate, or wanted one "
        "(TLSConfig.cert_file and key_file)",
    ),
    (
        ("Tls handshake failed", "Handshake failed", "Handshake read failed", "SSL_ERROR_"),
        "handshake",
        "it broke off (does the server serve TLS on this port?)",
    ),
)


# TLS 1.3 checks the client's certificate after the client has finished its side of the
# handshake, so etcd 3.4 (Go's TLS) refusing ours reaches gRPC as a record it cannot
# read on a connection that never got going: the client certificate, in that context only.
_REFUSED_AFTER_HANDSHAKE = ("failed to connect to all addresses", "TSI_DATA_CORRUPTED")


def tls_failure(details: str) -> tuple[str, str] | None:
    """(reason, explanation) when gRPC's ``details`` tell of a failed TLS handshake."""
    for markers, reason, explanation in _TLS_FAILURES:
        if any(marker in details for marker in markers):
            return reason, explanation
    if all(marker in details for marker in _REFUSED_AFTER_HANDSHAKE):
        return next((r, e) for _, r, e in _TLS_FAILURES if r == "client certificate")
    return None


def translate(exc: BaseException, *, endpoint: str | None = None) -> errors.EtcdError:
    """Build the etcdsync error that describes a gRPC failure."""
    code, details = status_of(exc)
    code_name = code.name if code is not None else None
    kw: dict[str, Any] = {"code": code_name, "details": details, "endpoint": endpoint}
    where = f" ({endpoint})" if endpoint else ""
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and any(
        m in details for m in _MESSAGE_TOO_LARGE_MARKERS
    ):
        sizes = _SIZE_VS_LIMIT.search(details)
        return errors.RequestTooLargeError(
            f"request too large for gRPC: {details}{where}",
            size=int(sizes.group(1)) if sizes else None,
            limit=int(sizes.group(2)) if sizes else None,
            **kw,
        )
    cls = _BY_MESSAGE.get(details)
    if cls is None and broken_transport(exc):
        cls = errors.Unavailable
    if cls is None and code is not None:
        cls = _BY_CODE.get(code)
    if cls is None:
        cls = errors.InternalServerError
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"deadline exceeded{where}: {details}"
    elif never_sent(exc):
        kw["endpoints"] = (endpoint,) if endpoint else ()
        tls = tls_failure(details)
        if tls is not None:
            return errors.TLSError(
                f"TLS handshake failed{where}: {tls[1]}: {details}", reason=tls[0], **kw
            )
        cls = errors.ConnectionFailedError
        message = f"could not connect{where}: {details}"
    else:
        message = f"{details or code_name}{where}"
    return cls(message, **kw)
