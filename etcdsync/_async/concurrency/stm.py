"""STM: software transactional memory over etcd txns, with Go's four isolation levels.

``await etcd.stm(fn)`` runs ``await fn(stm)``; the function reads keys through
``stm.get`` / ``stm.get_many`` / ``stm.rev`` and writes through ``stm.put`` /
``stm.delete``.  Writes are buffered; when the function returns, all of them are
committed in ONE txn, guarded by compares on what was read (which compares
depends on the :class:`~etcdsync.Isolation` level, with the semantics of Go's
``client/v3/concurrency/stm.go``).  When the guard fails - someone changed a key
this attempt depended on - nothing is written and the whole function runs again
on fresh data, up to ``retries`` more times; then
:class:`~etcdsync.errors.STMConflictError` is raised.

A conflicting commit's ``failure`` branch re-reads every key the attempt read (and
the ``prefetch`` keys), so the next attempt starts from those values at one
revision without another round trip - as Go's serializable STM does.

Differences from Go, on purpose:

* every read is linearizable (Go reads with ``WithSerializable``, which may serve a
  stale value from a lagging member: harmless when the commit compares it, a
  silent stale read under read-committed);
* a cached snapshot (prefetch, or the re-read of a conflict) fixes the revision of
  every read of the attempt, so a serializable attempt never mixes revisions, even
  when it reads keys the cache does not hold;
* prefetched keys enter the read set (and the commit's compares) only when the
  function reads them;
* an attempt that wrote nothing commits nothing (except under repeatable reads,
  where the commit validates the reads, which were made at different revisions).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from ... import errors
from ..._backends._async import sleep
from ..._deadline import Deadline
from ..._keys import to_bytes, to_key
from ...lease_types import LeaseLike
from ...models import GetResponse, KeyValue, TxnResponse
from ...ops import Compare, Op
from ...stm_types import Isolation
from ..protocol import AsyncKVClient

__all__ = ["DEFAULT_RETRIES", "AsyncSTM", "Isolation", "run_stm"]

T = TypeVar("T")

DEFAULT_RETRIES = 64
"""Re-runs of the function after conflicts before ``STMConflictError`` (Go: unbounded)."""

# Conflicts after which a retry first waits (jittered, growing): the first ones
# retry at once on the fresh values the failed commit brought back.
_BACKOFF_AFTER = 2
_BACKOFF_FIRST = 0.002
_BACKOFF_MAX = 0.1

_Snapshot = dict[bytes, "KeyValue | None"]


class _Restart(Exception):
    """The attempt cannot go on (its snapshot revision was compacted): run it again."""


class AsyncSTM:
    """One attempt of an STM run: the handle the function receives.

    Reads go to etcd (or the attempt's cache) and enter the read set; writes are
    buffered in the write set until the commit.  A key read after being written
    in the same attempt reads the buffered value (None after :meth:`delete`).
    The handle is valid only during its attempt and for one task or thread.
    """

    def __init__(
        self,
        client: AsyncKVClient,
        isolation: Isolation,
        deadline: Deadline,
        attempt: int,
        cache: _Snapshot,
        cache_revision: int,
    ) -> None:
        self._client = client
        self._isolation = isolation
        self._deadline = deadline
        self._attempt = attempt
        self._cache = dict(cache)
        self._cache_revision = cache_revision
        self._reads: dict[bytes, KeyValue | None] = {}
        self._writes: dict[bytes, tuple[bytes | None, Op]] = {}
        self._snapshot = 0  # the revision of every read (serializable levels), once known
        self._active = True
        self._doomed = False

    # --- what the function sees -----------------------------------------------------

    @property
    def isolation(self) -> Isolation:
        return self._isolation

    @property
    def attempt(self) -> int:
        """1 for the first run of the function, 2 for its first retry, ..."""
        return self._attempt

    @property
    def snapshot_revision(self) -> int:
        """The revision every read of this attempt is made at (serializable levels),
        0 before the first read or under the other levels."""
        return self._snapshot

    async def get(self, key: str | bytes) -> bytes | None:
        """The value of ``key`` (None if absent); ``key`` joins the read set."""
        raw = self._check_key(key)
        if raw in self._writes:
            return self._writes[raw][0]
        kv = await self._read_one(raw)
        return None if kv is None else kv.value

    async def get_many(self, keys: Iterable[str | bytes]) -> list[bytes | None]:
        """The values of ``keys`` (None for an absent key), read in one request."""
        raws = [self._check_key(key) for key in keys]
        await self._read([raw for raw in raws if raw not in self._writes])
        out: list[bytes | None] = []
        for raw in raws:
            if raw in self._writes:
                out.append(self._writes[raw][0])
            else:
                kv = self._reads[raw]
                out.append(None if kv is None else kv.value)
        return out

    async def rev(self, key: str | bytes) -> int:
        """The mod revision ``key`` had when read (0 if absent); it joins the read set.

        Buffered writes do not count: this is the revision the commit compares.
        """
        raw = self._check_key(key)
        kv = await self._read_one(raw)
        return 0 if kv is None else kv.mod_revision

    def put(self, key: str | bytes, value: str | bytes, *, lease: LeaseLike = 0) -> None:
        """Buffer a write of ``value`` at ``key`` (bound to ``lease`` if given)."""
        raw = self._check_key(key)
        data = to_bytes(value, "value")
        self._writes[raw] = (data, Op.put(raw, data, lease=lease))

    def delete(self, key: str | bytes) -> None:
        """Buffer the deletion of ``key``."""
        raw = self._check_key(key)
        self._writes[raw] = (None, Op.delete(raw))

    # --- reads ----------------------------------------------------------------------------

    def _check_key(self, key: str | bytes) -> bytes:
        if not self._active:
            raise errors.STMError("this STM handle was used outside its attempt")
        return to_key(key)

    async def _read_one(self, raw: bytes) -> KeyValue | None:
        await self._read([raw])
        return self._reads[raw]

    async def _read(self, raws: list[bytes]) -> None:
        """Bring every key of ``raws`` into the read set (one request at most)."""
        missing: list[bytes] = []
        for raw in raws:
            if raw in self._reads or raw in missing:
                continue
            if raw in self._cache:
                self._pin(self._cache_revision)
                self._reads[raw] = self._cache.pop(raw)
            elif raw not in missing:
                missing.append(raw)
        if not missing:
            return
        if self._isolation.pins_snapshot and not self._snapshot and self._cache_revision:
            self._pin(self._cache_revision)  # one revision for the whole attempt
        revision = self._snapshot if self._isolation.pins_snapshot else 0
        try:
            if len(missing) == 1:
                response = await self._client.get(
                    missing[0], revision=revision, timeout=self._deadline.rpc_timeout()
                )
                found = {missing[0]: response.kv}
                header = response.revision
            else:
                txn = await self._client.txn(
                    success=[Op.get(raw, revision=revision) for raw in missing],
                    timeout=self._deadline.rpc_timeout(),
                )
                found = dict(zip(missing, _kvs(txn), strict=True))
                header = txn.revision
        except errors.CompactedError as exc:
            self._doomed = True
            raise _Restart(f"snapshot revision {revision} was compacted") from exc
        except errors.Timeout as exc:
            raise errors.STMTimeout(
                f"STM read timed out (attempt {self._attempt})", attempts=self._attempt
            ) from exc
        self._pin(header)
        self._reads.update(found)

    def _pin(self, revision: int) -> None:
        if self._isolation.pins_snapshot and not self._snapshot:
            self._snapshot = revision

    # --- the commit -------------------------------------------------------------------------

    def _compares(self) -> list[Compare]:
        if not self._isolation.checks_reads:
            return []
        compares = [
            Compare.mod_revision(raw) == (0 if kv is None else kv.mod_revision)
            for raw, kv in self._reads.items()
        ]
        if self._isolation is Isolation.SERIALIZABLE_SNAPSHOT and self._snapshot:
            # Written keys, read or not, must not have changed after the snapshot.
            compares += [Compare.mod_revision(raw) < self._snapshot + 1 for raw in self._writes]
        return compares

    def _needs_commit(self) -> bool:
        if self._writes:
            return True
        # Reads at several revisions are validated by a compare-only txn.
        return self._isolation is Isolation.REPEATABLE_READS and bool(self._reads)

    async def _commit(self, refresh: list[bytes]) -> tuple[bool, _Snapshot, int]:
        """Commit the write set; on a conflict return the re-read cache for the next
        attempt: (committed, cache, cache revision)."""
        self._active = False
        if self._doomed:
            return False, {}, 0
        if not self._needs_commit():
            return True, {}, 0
        reread = list(dict.fromkeys([*self._reads, *refresh]))
        response = await self._client.txn(
            compare=self._compares(),
            success=[op for _, op in self._writes.values()],
            failure=[Op.get(raw) for raw in reread],
            timeout=self._deadline.rpc_timeout(),
        )
        if response.succeeded:
            return True, {}, 0
        return False, dict(zip(reread, _kvs(response), strict=True)), response.revision

    def _end(self) -> None:
        self._active = False


def _kvs(response: TxnResponse) -> list[KeyValue | None]:
    out: list[KeyValue | None] = []
    for sub in response.responses:
        assert isinstance(sub, GetResponse)
        out.append(sub.kv)
    return out


async def _prefetch(
    client: AsyncKVClient, keys: list[bytes], deadline: Deadline
) -> tuple[_Snapshot, int]:
    """Read ``keys`` in one txn: the first attempt's cache and its revision."""
    if not keys:
        return {}, 0
    try:
        response = await client.txn(
            success=[Op.get(raw) for raw in keys], timeout=deadline.rpc_timeout()
        )
    except errors.Timeout as exc:
        raise errors.STMTimeout("STM prefetch timed out", attempts=0) from exc
    return dict(zip(keys, _kvs(response), strict=True)), response.revision


async def run_stm(
    client: AsyncKVClient,
    fn: Callable[[AsyncSTM], Awaitable[T]],
    *,
    isolation: Isolation | str = Isolation.SERIALIZABLE_SNAPSHOT,
    retries: int = DEFAULT_RETRIES,
    prefetch: Iterable[str | bytes] = (),
    timeout: float | None = None,
) -> T:
    """Run ``fn`` as an STM transaction on ``client``; return what ``fn`` returned.

    Called by ``etcd.stm(...)``; see :meth:`etcdsync.AsyncClient.stm` and
    ``recipes_docs/stm.md``.  An exception raised by ``fn`` aborts the run (nothing
    is written) and propagates.
    """
    level = Isolation.of(isolation)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise errors.InvalidRequest(f"retries must be an int >= 0, got {retries!r}")
    if not callable(fn):
        raise errors.InvalidRequest(f"fn must be callable, got {fn!r}")
    if isinstance(prefetch, (str, bytes)):
        raise errors.InvalidRequest("prefetch must be an iterable of keys, not one key")
    refresh = list(dict.fromkeys(to_key(key) for key in prefetch))
    deadline = Deadline(timeout)
    cache, cache_revision = await _prefetch(client, refresh, deadline)
    attempt = 0
    while True:
        attempt += 1
        stm = AsyncSTM(client, level, deadline, attempt, cache, cache_revision)
        try:
            result = await fn(stm)
        except _Restart:
            committed, cache, cache_revision = False, {}, 0
        else:
            if deadline.expired():
                stm._end()
                raise errors.STMTimeout(
                    f"the STM deadline passed before attempt {attempt} could commit",
                    attempts=attempt,
                )
            committed, cache, cache_revision = await stm._commit(refresh)
            if committed:
                return result
        finally:
            stm._end()
        if attempt > retries:
            raise errors.STMConflictError(
                f"the STM transaction conflicted on each of its {attempt} attempts",
                attempts=attempt,
            )
        if deadline.expired():
            raise errors.STMTimeout(
                f"the STM deadline passed after {attempt} conflicting attempts",
                attempts=attempt,
            )
        if attempt > _BACKOFF_AFTER:
            await _backoff(attempt - _BACKOFF_AFTER, deadline)


async def _backoff(step: int, deadline: Deadline) -> None:
    """A short jittered pause before a retry, growing with the conflicts."""
    delay = random.uniform(0, min(_BACKOFF_FIRST * 2 ** min(step, 16), _BACKOFF_MAX))
    remaining = deadline.remaining()
    if remaining is not None:
        delay = min(delay, remaining)
    await sleep(delay)
