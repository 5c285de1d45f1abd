"""Cleaning up after a failed acquire or campaign, within the caller's deadline.

A contender that gives up - timed out, cancelled, failed - must not leave its
queued key behind while its session lives: the key would hold its place (and,
once the oldest, the lock or leadership) for nobody.  The cleanup follows one
policy, shared by the locks and the election:

* a session that has ended makes **no request**: its keys go (or went) with
  its lease;
* otherwise the delete runs **now**, bounded by what is left of the caller's
  deadline (at least :data:`~etcdsync._deadline.CLEANUP_MIN_TIMEOUT`), when
  the operation failed for a reason that says nothing against the connection
  (its own deadline passed, a typed refusal);
* a cancelled (or interrupted) operation waits for its cleanup request at most
  :data:`INTERRUPTED_CLEANUP_TIMEOUT` before it ends;
* it runs **in the background** at once when a request just failed before the
  deadline (a silent or failing endpoint would fail the cleanup alike), and when
  the delete run now failed: retried with backoff until it succeeds, the session
  ends or the client closes.

An in-process claim on the key (:mod:`.claims`) is released only once the key
is gone (or left to the lease).
"""

from __future__ import annotations

import logging
import time

from ... import errors
from ..._backends._async import spawn, wait_event
from ..._deadline import Deadline
from ...ops import Compare, Op
from .recipe_client import AsyncRecipeClient
from .session import AsyncSession

__all__ = ["INTERRUPTED_CLEANUP_TIMEOUT", "cleanup_now", "delete_in_background", "delete_key"]

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


def cleanup_now(exc: BaseException, deadline: Deadline) -> tuple[bool, float | None]:
    """Whether the cleanup after ``exc`` runs now rather than in the background, and
    the timeout of its request: what is left of the caller's deadline (at least a
    short grace), and at most :data:`INTERRUPTED_CLEANUP_TIMEOUT` after a
    cancellation or interrupt."""
    if not isinstance(exc, Exception):
        timeout = deadline.cleanup_timeout()
        if timeout is None or timeout > INTERRUPTED_CLEANUP_TIMEOUT:
            timeout = INTERRUPTED_CLEANUP_TIMEOUT
        return True, timeout
    request_failed = isinstance(exc, (errors.Timeout, errors.ConnectionError_))
    return deadline.expired() or not request_failed, deadline.cleanup_timeout()


def delete_in_background(
    client: AsyncRecipeClient,
    session: AsyncSession,
    key: str | bytes,
    guard: Compare,
    claimed: bytes | None,
    *,
    unknown: bool = False,
) -> None:
    """Delete ``key`` (if ``guard`` holds) from a task or thread of its own, then
    release the claim ``claimed``; a dead session's key is left to its lease.

    ``unknown``: the put that created the key failed without an answer, so it may
    still land later; a delete that finds no key is then tried again for
    :data:`_SETTLE` seconds before the claim is released.
    """
    if session.is_done or client.closed:
        # The key goes (or went) with the lease; a new acquire in this process uses
        # a new session, hence a different key.
        if claimed is not None:
            session.claims.release(claimed)
        return
    settle = _SETTLE if unknown else 0.0
    spawn(_delete_later, client, session, key, guard, claimed, settle, name="etcdsync-cleanup")


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
    land.  An interruption (cancel) is re-raised once the background cleanup is
    under way, an etcd error is not.
    """
    if session.is_done or client.closed:
        delete_in_background(client, session, key, guard, claimed)  # releases the claim
        return
    try:
        response = await client.txn([guard], [Op.delete(key)], timeout=timeout)
    except errors.ClientClosedError:
        pass  # a closing client revokes its sessions: the key goes with the lease
    except BaseException as exc:
        if not (session.is_done or client.closed):
            log.warning("deleting the key %r failed (%r); retrying in background", key, exc)
        delete_in_background(client, session, key, guard, claimed, unknown=unknown)
        if not isinstance(exc, errors.EtcdError):
            raise  # cancelled or interrupted: the cleanup is under way anyway
        return
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
) -> None:
    """Retry a failed key deletion until it succeeds, the session ends (the key
    then goes with the lease) or the client closes (it revokes its sessions); the
    in-process claim stays taken until then.  A delete that finds no key ends it,
    unless within ``settle`` seconds (a put whose outcome is unknown may land late)."""
    settle_until = time.monotonic() + settle
    delay, attempt_timeout = _FIRST_DELAY, _FIRST_ATTEMPT_TIMEOUT
    try:
        while not await wait_event(session.done, delay) and not client.closed:
            try:
                response = await client.txn([guard], [Op.delete(key)], timeout=attempt_timeout)
            except errors.ClientClosedError:
                return
            except errors.EtcdError:
                delay = min(delay * 2, _MAX_DELAY)
                attempt_timeout = min(attempt_timeout * 2, _MAX_ATTEMPT_TIMEOUT)
                continue
            if response.succeeded or time.monotonic() >= settle_until:
                return
            delay = min(delay * 2, _MAX_DELAY)
    finally:
        if claimed is not None:
            session.claims.release(claimed)
