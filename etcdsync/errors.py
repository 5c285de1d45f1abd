"""The exceptions etcdsync raises.

Every failure reaches the user as a subclass of :class:`EtcdError`; gRPC status
objects never leak.  The hierarchy groups errors by what a caller can do about
them:

* :class:`ClientError` - the request was wrong; repeating it will not help
  (:class:`InvalidRequest`, :class:`KeyEmptyError`, :class:`RequestTooLargeError`,
  :class:`CompactedError`, :class:`FutureRevisionError`, ...).
* :class:`ConnectionError_` - the server could not be reached or answered that it
  cannot serve now (:class:`ConnectionFailedError`, :class:`Unavailable`,
  :class:`NoLeaderError`); a later retry may succeed.
* :class:`Timeout` - the deadline passed; for a write, its outcome is unknown.
* :class:`AuthError` - authentication or authorisation was refused.
* :class:`ClientClosedError` - the client was used after ``close()``.

Errors are plain exceptions carrying the facts a caller needs as attributes
(``compact_revision``, ``endpoints``, ``key``, ``lease_id``...).  Where a Python
built-in exception has the same meaning, the error also derives from it
(``Timeout`` is a ``TimeoutError``; ``InvalidRequest`` is a ``ValueError``) so
generic handlers keep working.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AuthError",
    "AuthFailedError",
    "AuthNotEnabledError",
    "BarrierError",
    "BarrierFullError",
    "BarrierTimeout",
    "CacheError",
    "CacheTimeout",
    "ClaimLostError",
    "ClientClosedError",
    "ClientError",
    "CompactedError",
    "ConfigError",
    "ConfigValidationError",
    "ConnectionError_",
    "ConnectionFailedError",
    "CounterBoundsError",
    "CounterError",
    "CounterTimeout",
    "CounterValueError",
    "DuplicateKeyError",
    "ElectionError",
    "ElectionTimeout",
    "EtcdError",
    "ForeignKeyError",
    "ForkedClientError",
    "FutureRevisionError",
    "GroupError",
    "GroupMemberExistsError",
    "GroupTimeout",
    "InstanceExistsError",
    "InternalServerError",
    "InvalidAuthTokenError",
    "InvalidRequest",
    "KeyEmptyError",
    "LeadershipLostError",
    "LearnerNotReadyError",
    "LeaseExpiredError",
    "LeaseNotFoundError",
    "LeaseTTLTooLargeError",
    "LockError",
    "LockLostError",
    "LockTimeout",
    "MemberExistsError",
    "MemberNotFoundError",
    "MemberNotLearnerError",
    "MembershipLostError",
    "NoInstancesError",
    "NoLeaderElectedError",
    "NoLeaderError",
    "NotElectedError",
    "NotGrantedError",
    "NotLeaderError",
    "NotMemberError",
    "NotOwnerError",
    "OwnershipLostError",
    "PartitionerError",
    "PartitionerTimeout",
    "PermissionDeniedError",
    "QueueError",
    "QueueOutcomeUnknownError",
    "QueueTimeout",
    "RequestTooLargeError",
    "ResourceExhaustedError",
    "RoleExistsError",
    "RoleNotFoundError",
    "STMConflictError",
    "STMError",
    "STMTimeout",
    "SemaphoreLimitError",
    "ServiceError",
    "ServiceTimeout",
    "SessionExpiredError",
    "SnapshotError",
    "StaleReadError",
    "TLSError",
    "Timeout",
    "TooManyLearnersError",
    "TooManyOpsError",
    "Unavailable",
    "UnsupportedError",
    "UserExistsError",
    "UserNotFoundError",
]


class EtcdError(Exception):
    """Base class of every error raised by etcdsync.

    ``code`` is the gRPC status name (``"UNAVAILABLE"``...) when the error came
    from the server or the transport, else ``None``; ``details`` is the server's
    own message when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details
        self.endpoint = endpoint


# --- the client was misused ------------------------------------------------


class ClientClosedError(EtcdError):
    """The client (or the stream, session, watcher...) was used after close()."""


class ForkedClientError(ClientClosedError):
    """A client created before ``fork()`` was used in the child process.

    gRPC channels cannot cross a fork: in the child every object of an inherited
    client (its watchers, keepalive listeners, sessions and recipes included)
    raises this error, and ``close()`` only drops the child's references.  It is
    a :class:`ClientClosedError` - the client is closed for this process - so
    nothing retries it.  Create a new client in the child, after forking (for
    example in a gunicorn ``post_fork`` hook or at the start of a worker); see
    ``recipes_docs/connection.md`` for what gRPC needs when the parent keeps
    live clients.
    """


class UnsupportedError(EtcdError):
    """The server does not implement this request (e.g. an older etcd)."""


# --- the request was wrong --------------------------------------------------


class ClientError(EtcdError):
    """The request itself cannot succeed as written; repeating it will not help."""


class InvalidRequest(ClientError, ValueError):
    """An argument is malformed (wrong type, bad option combination...)."""


class KeyEmptyError(InvalidRequest):
    """A key was required but empty."""


class RequestTooLargeError(ClientError):
    """The request exceeds the server's ``--max-request-bytes`` or gRPC's message limit.

    ``limit`` is the limit that applied when known, ``size`` the request size when
    known.  Nothing was written.
    """

    def __init__(
        self, message: str, *, size: int | None = None, limit: int | None = None, **kw: str | None
    ) -> None:
        super().__init__(message, **kw)
        self.size = size
        self.limit = limit


class TooManyOpsError(ClientError):
    """A txn holds more operations than the server's ``--max-txn-ops``."""


class DuplicateKeyError(ClientError):
    """A txn writes the same key twice in one branch."""


class CompactedError(ClientError):
    """The requested revision has been compacted away.

    ``compact_revision`` is the oldest revision still available when the server
    reported it (watches always do; plain reads do not, and then it is ``None``).
    """

    def __init__(
        self, message: str, *, compact_revision: int | None = None, **kw: str | None
    ) -> None:
        super().__init__(message, **kw)
        self.compact_revision = compact_revision


class FutureRevisionError(ClientError):
    """The requested revision is newer than the store's current revision."""


class LeaseNotFoundError(ClientError):
    """The lease does not exist (never granted, revoked or expired)."""

    def __init__(self, message: str, *, lease_id: int | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.lease_id = lease_id


class LeaseExpiredError(LeaseNotFoundError):
    """A lease a listener or recipe relied on is gone (expired, revoked or halted).

    ``reason`` says why, when known: ``"expired"``, ``"revoked"``, ``"keepalive halted"``
    or ``"client closed"`` (the values of :class:`etcdsync.LeaseLostReason`).
    """

    def __init__(
        self,
        message: str,
        *,
        lease_id: int | None = None,
        reason: str | None = None,
        **kw: str | None,
    ) -> None:
        super().__init__(message, lease_id=lease_id, **kw)
        self.reason = reason


class LeaseTTLTooLargeError(ClientError):
    """The requested lease TTL exceeds the server's maximum."""


# --- the server could not serve the request ---------------------------------


class ConnectionError_(EtcdError):
    """The server could not be reached or could not serve now; retrying may work."""


class ConnectionFailedError(ConnectionError_):
    """No endpoint could be connected to.

    ``endpoints`` lists every endpoint that was tried, in order.
    """

    def __init__(self, message: str, *, endpoints: Sequence[str] = (), **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.endpoints = tuple(endpoints)


class TLSError(ConnectionFailedError):
    """The TLS handshake with the server failed, so nothing was sent.

    ``reason`` says what was wrong (the values of :data:`TLS_REASONS`):
    ``"unknown CA"`` - the server's certificate is not signed by a CA the client
    trusts (``TLSConfig.ca_file``); ``"expired"`` - a certificate is out of its
    validity period; ``"hostname"`` - the server's certificate does not name the
    host dialled (``TLSConfig.server_name``); ``"client certificate"`` - the server
    refused the client's certificate, or wanted one; ``"handshake"`` - any other
    handshake failure (a plaintext server, a protocol mismatch).  Retrying helps only
    once the certificates or the configuration change.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str = "handshake",
        endpoints: Sequence[str] = (),
        **kw: str | None,
    ) -> None:
        super().__init__(message, endpoints=endpoints, **kw)
        self.reason = reason


TLS_REASONS = ("unknown CA", "expired", "hostname", "client certificate", "handshake")
"""The values of :attr:`TLSError.reason`."""


class Unavailable(ConnectionError_):
    """The server or the connection failed while the request was in flight.

    For a write this means the outcome is unknown: it may or may not have been
    applied.
    """


class NoLeaderError(Unavailable):
    """The member has no leader (lost quorum or partitioned)."""


class NotLeaderError(Unavailable):
    """The request must go to the leader and this member is not it."""


class ResourceExhaustedError(ConnectionError_):
    """The server is overloaded or out of space (too many requests, NOSPACE alarm)."""


class InternalServerError(EtcdError):
    """The server failed in a way not covered by a more specific error."""


class Timeout(EtcdError, TimeoutError):
    """The call's deadline passed before the server answered.

    For a write the outcome is unknown: it may have been applied.
    """


class StaleReadError(ConnectionError_):
    """Every member tried served a read older than a revision this client had
    already seen (the ordering guard, as Go's ``client/v3/ordering``).

    Only serializable reads can be stale: a member cut off from its leader, or
    one still catching up, answers them from its own, older state.  ``revision``
    is the revision of the stale answer, ``seen_revision`` the newest revision
    this client had seen when the read started.  Nothing was written; retrying
    later (or a linearizable read) may succeed.
    """

    def __init__(
        self, message: str, *, revision: int = 0, seen_revision: int = 0, **kw: str | None
    ) -> None:
        super().__init__(message, **kw)
        self.revision = revision
        self.seen_revision = seen_revision


# --- authentication ---------------------------------------------------------


class AuthError(EtcdError):
    """Authentication or authorisation was refused."""


class AuthFailedError(AuthError):
    """The user name or password is wrong."""


class InvalidAuthTokenError(AuthError):
    """The auth token is invalid or expired (the client re-authenticates once)."""


class PermissionDeniedError(AuthError):
    """The authenticated user lacks permission for this key or operation."""


class AuthNotEnabledError(AuthError):
    """Authentication was requested but the server has auth disabled."""


# --- recipes: sessions and locks ---------------------------------------------


class SessionExpiredError(LeaseExpiredError):
    """The session a recipe relied on has ended: its lease expired, was revoked or
    could not be renewed in time (``reason`` says which).

    A waiter stops waiting with this error; a holder must assume it lost what it
    held (lock, leadership).
    """


class LockError(EtcdError):
    """A lock (mutex, readers-writer lock, semaphore) was misused or failed."""


class LockTimeout(LockError, Timeout):
    """The lock was not acquired within the timeout; no queued key was left behind."""


class LockLostError(LockError):
    """The lock is no longer held: its key was deleted or its session ended.

    Raised by guarded writes whose ownership check failed and by a waiter whose
    queued key vanished.
    """


class SemaphoreLimitError(LockError):
    """Two semaphores of one name disagree on their ``limit``.

    Each semaphore key records the limit its holder used; an acquire that finds a
    key with another limit among the holders it reads raises this (and leaves no
    key behind).  ``key`` is that key, ``limit`` the limit it records and
    ``expected`` the limit of the acquire that found it.
    """

    def __init__(
        self, message: str, *, key: bytes, limit: int, expected: int, **kw: str | None
    ) -> None:
        super().__init__(message, **kw)
        self.key = key
        self.limit = limit
        self.expected = expected


class ForeignKeyError(ClientError):
    """A key without a lease sits under the prefix of a lock, semaphore or election.

    The prefix belongs to the recipe: every key under it is a contender's
    lease-bound key, ordered by create revision.  A key written there without a
    lease (data such as ``jobs/nightly/last-run`` next to ``lock("jobs/nightly")``)
    would be the oldest contender for good - the lock held, the leadership taken,
    by nobody - so a recipe that finds one among the keys it must wait for raises
    this instead of waiting forever (leaving nothing of its own behind).  ``key``
    is the offending key, ``prefix`` the recipe's prefix: move the data elsewhere.
    """

    def __init__(self, message: str, *, key: bytes, prefix: bytes, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.key = key
        self.prefix = prefix


# --- recipes: elections and live config ---------------------------------------


class ElectionError(EtcdError):
    """An election was misused or failed."""


class ElectionTimeout(ElectionError, Timeout):
    """``campaign()`` was not elected within its timeout; its candidacy was withdrawn."""


class NotElectedError(ElectionError):
    """This candidate is not the leader: never elected, resigned, or lost leadership.

    Raised by ``proclaim()`` and ``is_leader_compare()``; a guarded write whose
    leadership compare failed means the same.
    """


class LeadershipLostError(NotElectedError):
    """Leadership ended without a resign.

    ``reason`` says why: ``"session ended"`` (the lease expired, was revoked or
    could not be renewed; the cause is chained) or ``"key deleted"`` (someone
    deleted the leader key).  Another candidate may already lead.
    """

    def __init__(self, message: str, *, reason: str | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.reason = reason


class ConfigError(EtcdError):
    """A live config view was misused or could not be loaded."""


class ConfigValidationError(ConfigError, ValueError):
    """A state of a live config was rejected; the last good config stays in force.

    ``revision`` is the store revision of the rejected state; ``keys`` the keys
    (relative to the prefix) whose values failed to decode or did not fit the
    ``model=``, empty when the validator refused the whole snapshot.  The
    decoder's, model's or validator's exception is chained as the cause.
    """

    def __init__(
        self,
        message: str,
        *,
        revision: int | None = None,
        keys: tuple[str, ...] = (),
        **kw: str | None,
    ) -> None:
        super().__init__(message, **kw)
        self.revision = revision
        self.keys = keys


# --- recipes: STM, counters -----------------------------------------------------


class STMError(EtcdError):
    """A software transactional memory run (``etcd.stm(fn)``) was misused or failed."""


class STMConflictError(STMError):
    """Every attempt of an STM run conflicted with other writers; nothing was committed.

    ``attempts`` is how many times the function ran.
    """

    def __init__(self, message: str, *, attempts: int = 0, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.attempts = attempts


class STMTimeout(STMError, Timeout):
    """An STM run's deadline passed before it committed; nothing was committed.

    ``attempts`` is how many times the function ran.  (A ``Timeout`` or
    ``Unavailable`` that is not an ``STMError`` came from the commit request
    itself: its outcome is unknown.)
    """

    def __init__(self, message: str, *, attempts: int = 0, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.attempts = attempts


class CounterError(EtcdError):
    """A distributed counter was misused or failed."""


class CounterBoundsError(CounterError):
    """A change would have taken the counter past one of its bounds; nothing changed.

    ``value`` is the counter's value when the change was refused (None for a
    refused ``set``), ``requested`` the value the change would have produced and
    ``bound`` the bound it crossed.
    """

    def __init__(
        self,
        message: str,
        *,
        value: int | None,
        requested: int,
        bound: int,
        **kw: str | None,
    ) -> None:
        super().__init__(message, **kw)
        self.value = value
        self.requested = requested
        self.bound = bound


class CounterValueError(CounterError, ValueError):
    """The counter's key holds something other than a decimal integer.

    ``key`` is the key and ``raw`` the value found there.
    """

    def __init__(self, message: str, *, key: bytes, raw: bytes, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.key = key
        self.raw = raw


class CounterTimeout(CounterError, Timeout):
    """A counter change could not be made before its deadline; nothing changed."""


# --- recipes: barriers and queues -----------------------------------------------


class BarrierError(EtcdError):
    """A barrier or double barrier was misused or failed."""


class BarrierTimeout(BarrierError, Timeout):
    """``wait()``, ``enter()`` or ``leave()`` did not complete within its timeout.

    A timed-out ``enter()`` has withdrawn its participant key (unless the barrier
    opened at that very moment: then ``enter()`` returns normally instead).
    """


class BarrierFullError(BarrierError):
    """``DoubleBarrier.enter()`` found ``count`` participants inside already (Go's
    ``ErrTooManyClients``); nothing of this participant was left behind."""


class QueueError(EtcdError):
    """A queue was misused or failed."""


class QueueTimeout(QueueError, Timeout):
    """``get()`` found no item within its timeout; nothing was taken."""


class QueueOutcomeUnknownError(QueueError):
    """A queue write (put, take, claim, consume) could not be settled: its request
    failed without an answer and the queue's receipt could not be read back before
    the deadline or the session's end.

    ``key`` is the item's key when it is known.  A later call on the same queue
    object settles a pending take first and returns its item if it was taken.
    """

    def __init__(self, message: str, *, key: bytes | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.key = key


class ClaimLostError(QueueError):
    """The claim on an at-least-once queue item ended before ``consume()``: its
    session's lease expired or was revoked, or it was released.  Nothing was
    deleted; the item is (or was) available to other consumers again."""


# --- recipes: groups and partitioners ---------------------------------------------


class GroupError(EtcdError):
    """A group membership was misused or failed."""


class GroupTimeout(GroupError, Timeout):
    """A group call (``join()``, ``leave()``, a membership watch's ``get()``) did
    not complete within its timeout.  A timed-out ``join()`` left no member key
    behind (or its key goes with the lease)."""


class GroupMemberExistsError(GroupError):
    """``join()`` found its member id taken by another member: another process, or
    another group object of this process.  ``member_id`` is the id."""

    def __init__(self, message: str, *, member_id: str | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.member_id = member_id


class NotMemberError(GroupError):
    """This group object is not a member: it never joined, it left, or it lost its
    membership.  Raised by ``update()`` and ``is_member_compare()``."""


class MembershipLostError(NotMemberError):
    """A membership ended without a ``leave()``.

    ``reason`` says why: ``"session ended"`` (the lease expired, was revoked or
    could not be renewed; the cause is chained) or ``"key deleted"`` (someone
    deleted the member key).  The other members see this member leave.
    """

    def __init__(self, message: str, *, reason: str | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.reason = reason


class PartitionerError(EtcdError):
    """A partitioner was misused or failed."""


class PartitionerTimeout(PartitionerError, Timeout):
    """``start()``, ``wait_stable()`` or a change iterator's ``get()`` did not
    complete within its timeout."""


class NotOwnerError(PartitionerError):
    """This partitioner does not own ``item`` (never acquired, handed over, or lost):
    raised by ``is_owner(item)``, ``fencing_token(item)`` and ``guarded_txn(item, ...)``."""

    def __init__(self, message: str, *, item: str | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.item = item


class OwnershipLostError(NotOwnerError):
    """The ownership of ``item`` ended without a hand-over.

    ``reason``: ``"session ended"`` (the member's lease is gone: every owner key
    went with it), ``"key deleted"`` (someone deleted the owner key, or a guarded
    write found it gone) or ``"membership lost"`` (the member key was deleted).
    Another member may own the item already.
    """

    def __init__(
        self,
        message: str,
        *,
        item: str | None = None,
        reason: str | None = None,
        **kw: str | None,
    ) -> None:
        super().__init__(message, item=item, **kw)
        self.reason = reason


# --- recipes: prefix caches and service discovery ---------------------------------


class CacheError(EtcdError):
    """A prefix cache was used before ``start()`` (or after ``stop()``)."""


class CacheTimeout(CacheError, Timeout):
    """``start()``, ``wait_for()`` or an event stream's ``get()`` did not complete
    within its timeout."""


class ServiceError(EtcdError):
    """Service discovery was misused or failed."""


class ServiceTimeout(ServiceError, Timeout):
    """A registration, a read of the instances or a service watch did not complete
    within its timeout."""


class NoInstancesError(ServiceError):
    """``choose(name)`` found no live instance of the service ``name``."""

    def __init__(self, message: str, *, name: str | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.name = name


class InstanceExistsError(ServiceError):
    """The instance id is registered already: by another live process (when
    ``replace=False``) or by another registration of this process."""

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        instance_id: str | None = None,
        **kw: str | None,
    ) -> None:
        super().__init__(message, **kw)
        self.name = name
        self.instance_id = instance_id


# --- cluster membership -------------------------------------------------------


class MemberNotFoundError(ClientError):
    """No member has the given id (never added, or already removed)."""


class MemberExistsError(ClientError):
    """A member with this id or these peer URLs is already in the cluster."""


class MemberNotLearnerError(ClientError):
    """Only a learner can be promoted; this member already votes."""


class LearnerNotReadyError(EtcdError):
    """The learner has not caught up with the leader's log yet.

    Nothing changed; promote again once it has (retrying after a short wait is the
    expected way to handle this error).
    """


class TooManyLearnersError(ClientError):
    """The cluster already has as many learners as etcd allows (one)."""


# --- auth administration ---------------------------------------------------------


class UserNotFoundError(AuthError):
    """The user does not exist."""


class UserExistsError(AuthError):
    """A user with this name already exists."""


class RoleNotFoundError(AuthError):
    """The role does not exist."""


class RoleExistsError(AuthError):
    """A role with this name already exists."""


class NotGrantedError(AuthError):
    """The role is not granted to the user, or the permission not granted to the role."""


# --- server-side election service and snapshots ------------------------------------


class NoLeaderElectedError(ElectionError):
    """The election has no leader right now."""


class SnapshotError(EtcdError):
    """A snapshot stream ended early or failed its integrity check; the file is unusable."""
