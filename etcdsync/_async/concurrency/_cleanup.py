"""Cleaning up after a failed acquire or campaign, within the caller's deadline.

A contender that gives up - timed out, cancelled, failed - must not leave its
queued key behind while its session lives: the key would hold its place (and,
once the oldest, the lock or leadership) for nobody.  Nor may it leave work
behind that cannot succeed.  The cleanup follows one policy, shared by the
locks and the election:

* a request the server **refused as a whole** (its first attempt answered with a
  typed refusal: permission denied, invalid request - :func:`nothing_written`)
  wrote nothing: there is nothing to clean up and **no request** is made;
* a session that has ended makes **no request**: its keys go (or went) with
  its lease;
* once the caller's **deadline has passed**, no request is started on its
  behalf: the error is raised at once and the delete runs **in the
  background**;
* before the deadline, the delete runs **now**, bounded by what is left of it
  (at least :data:`~etcdsync._deadline.CLEANUP_MIN_TIMEOUT`), when the operation
  failed for a reason that says nothing against the connection (a typed
  refusal of a later request);
* a cancelled (or interrupted) operation waits for its cleanup request at most
  :data:`INTERRUPTED_CLEANUP_TIMEOUT` before it ends;
* it runs **in the background** at once when a request just failed (a silent
  or failing endpoint would fail the cleanup alike), and when the delete run
  now failed: retried with backoff until it succeeds, the session ends or the
  client closes;
* a delete the server **refuses** (:func:`is_final`: permission denied...) is
  never retried: it would be refused again, every few seconds, for the
  session's life.  The key is left to the session's lease (it goes when the
  session is closed or expires) and a warning says so.

An in-process claim on the key (:mod:`.claims`) is released once the key is
gone, left to the lease, or refused for good (a later holder of the same
session then finds the key and takes its place, which is safe: nobody holds it).
"""

from __future__ import annotations

import logging
import time

from ... import errors
from ..._backends._async import spawn, wait_event
from ..._deadline import Deadline
from ...ops import Compare, Op
from .recipe_client import AsyncRecipeClient
from .session import AsyncSession, is_final

__all__ = [
    "INTERRUPTED_CLEANUP_TIMEOUT",
    "cleanup_now",
    "delete_in_background",
    "delete_key",
    "is_final",
    "nothing_written",
]

log = logging.getLogger("etcdsync.recipes")

INTERRUPTED_CLEANUP_TIMEOUT = 1.0
"""At most this long, an operation that was cancelled (or interrupted) waits for its
cleanup request before it ends; the cleanup then goes on in the background."""

# Backoff of the background deletion of a key whose delete request failed, and the
# timeout of its attempts, which grows alike: a delete sent while the cluster elects
# a new leader is dropped by raft and answered only at the request's deadline, so a
# long first timeout (5 s) kept the next contender waiting 5.6 s after a leader
# crash where a short one frees the key within about 1.5 s; a slow server still
# gets attempts long enough to answer.
_FIRST_DELAY = 0.2
_MAX_DELAY = 5.0
_FIRST_ATTEMPT_TIMEOUT = 1.0
_MAX_ATTEMPT_TIMEOUT = 5.0
# How long a key whose put had an unknown outcome is looked for after a delete
# found none (the put may still be on its way).
_SETTLE = 10.0


def nothing_written(exc: BaseException, attempts: int) -> bool:
    """True when a write request failed with ``exc`` after ``attempts`` attempts and
    certainly wrote nothing: the server refused it as a whole on its only attempt
    (a txn is applied entirely or not at all).  After a repeated attempt an
    earlier one, whose outcome is unknown, may have written."""
    return attempts == 1 and is_final(exc)


def cleanup_now(exc: BaseException, deadline: Deadline) -> tuple[bool, float | None]:
    """Whether the cleanup after ``exc`` runs now rather than in the background, and
    the timeout of its request: what is left of the caller's deadline (at least a
    short grace), and at most :data:`INTERRUPTED_CLEANUP_TIMEOUT` after a
    cancellation or interrupt.

    Once the deadline has passed it goes to the background: no request is started
    after the caller's deadline, and the caller's error is raised at once."""
    if not isinstance(exc, Exception):
        timeout = deadline.cleanup_timeout()
        if timeout is None or timeout > INTERRUPTED_CLEANUP_TIMEOUT:
            timeout = INTERRUPTED_CLEANUP_TIMEOUT
        return True, timeout
    request_failed = isinstance(exc, (errors.Timeout, errors.ConnectionError_))
    return not (deadline.expired() or request_failed), deadline.cleanup_timeout()


def delete_in_background(
    client: AsyncRecipeClient,
    session: AsyncSession,
    key: str | bytes,
    guard: Compare,
    claimed: bytes | None,
    *,
    unknown: bool = False,
    at_once: bool = False,
) -> None:
    """Delete ``key`` (if ``guard`` holds) from a task or thread of its own, then
    release the claim ``claimed``; a dead session's key is left to its lease.

    ``unknown``: the put that created the key failed without an answer, so it may
    still land later; a delete that finds no key is then tried again for
    :data:`_SETTLE` seconds before the claim is released.  ``at_once``: the first
    attempt starts now (a cleanup handed over by a caller whose deadline passed),
    not after a pause (the retry of a delete that just failed).
    """
    if session.is_done or client.closed:
        # The key goes (or went) with the lease; a new acquire in this process uses
        # a new session, hence a different key.
        if claimed is not None:
            session.claims.release(claimed)
        return
    if claimed is not None:
        session.claims.releasing(claimed)  # a claimant may wait for it: no holder
    settle = _SETTLE if unknown else 0.0
    delay = 0.0 if at_once else _FIRST_DELAY
    spawn(
        _delete_later, client, session, key, guard, claimed, settle, delay, name="etcdsync-cleanup"
    )


async def delete_key(
    client: AsyncRecipeClient,
    session: AsyncSession,
    key: str | bytes,
    guard: Compare,
    claimed: bytes | None,
    timeout: float | None,
    *,
    unknown: bool = False,
) -> None:
    """Delete ``key`` (if ``guard`` holds) within ``timeout``, then release the claim.

    A dead session's key is left to its lease (no request).  On failure the delete
    and the claim go to :func:`delete_in_background`, and so they do when
    ``unknown`` (the put's outcome is unknown) and no key was found: it may still
    land.  A refusal (:func:`is_final`) is not retried: the key is left to the
    lease, the claim released and a warning logged.  An interruption (cancel) is
    re-raised once the background cleanup is under way, an etcd error is not.
    """
    if session.is_done or client.closed:
        delete_in_background(client, session, key, guard, claimed)  # releases the claim
        return
    if claimed is not None:
        session.claims.releasing(claimed)
    try:
        response = await client.txn([guard], [Op.delete(key)], timeout=timeout)
    except errors.ClientClosedError:
        pass  # a closing client revokes its sessions: the key goes with the lease
    except errors.EtcdError as exc:
        if not is_final(exc):
            if not (session.is_done or client.closed):
                log.warning("deleting the key %r failed (%r); retrying in background", key, exc)
            delete_in_background(client, session, key, guard, claimed, unknown=unknown)
            return
        _refused(key, exc)
    except BaseException:
        # Cancelled or interrupted: hand the cleanup over, then go on ending.
        delete_in_background(client, session, key, guard, claimed, unknown=unknown)
        raise
    else:
        if unknown and not response.succeeded:
            delete_in_background(client, session, key, guard, claimed, unknown=True)
            return
    if claimed is not None:
        session.claims.release(claimed)


async def _delete_later(
    client: AsyncRecipeClient,
    session: AsyncSession,
    key: str | bytes,
    guard: Compare,
    claimed: bytes | None,
    settle: float,
    delay: float,
) -> None:
    """Retry a failed key deletion until it succeeds, the session ends (the key
    then goes with the lease), the client closes (it revokes its sessions) or the
    server refuses it (:func:`is_final`: left to the lease); the in-process claim
    stays taken until then.  A delete that finds no key ends it, unless within
    ``settle`` seconds (a put whose outcome is unknown may land late).  The first
    attempt comes after ``delay`` seconds."""
    settle_until = time.monotonic() + settle
    attempt_timeout = _FIRST_ATTEMPT_TIMEOUT
    try:
        while not await wait_event(session.done, delay) and not client.closed:
            try:
                response = await client.txn([guard], [Op.delete(key)], timeout=attempt_timeout)
            except errors.ClientClosedError:
                return
            except errors.EtcdError as exc:
                if is_final(exc):
                    _refused(key, exc)
                    return
                delay = min(max(delay, _FIRST_DELAY) * 2, _MAX_DELAY)
                attempt_timeout = min(attempt_timeout * 2, _MAX_ATTEMPT_TIMEOUT)
                continue
            if response.succeeded or time.monotonic() >= settle_until:
                return
            delay = min(max(delay, _FIRST_DELAY) * 2, _MAX_DELAY)
    finally:
        if claimed is not None:
            session.claims.release(claimed)


def _refused(key: str | bytes, exc: BaseException) -> None:
    log.warning(
        "deleting the key %r was refused (%s); not retrying: it goes when its session "
        "ends (closed, or its lease expires)",
        key,
        exc,
    )
