"""Semaphore: at most ``limit`` holders at once, admitted FIFO by arrival.

Each acquire puts one lease-bound key ``<name>/<lease id hex>-<random>`` (unique
per acquire, so holders in one process may share a session) whose value is the
semaphore's ``limit`` in decimal: an acquire that finds another limit among the
oldest keys raises :class:`~etcdsync.errors.SemaphoreLimitError`.  A contender is
admitted when fewer than ``limit`` keys created before its own remain.  A waiter
reads its predecessors once and then follows their deletions on a watch,
counting them off locally: holders release in any order, so waiting for one
chosen predecessor would miss a freed slot, and re-reading on every release would
make every waiter hit etcd at once.
"""

from __future__ import annotations

from ... import errors
from ...models import KeyValue
from .queue_lock import AsyncQueueLock, unique_suffix
from .recipe_client import AsyncRecipeClient
from .session import AsyncSession

__all__ = ["AsyncSemaphore"]


class AsyncSemaphore(AsyncQueueLock):
    """One holder's handle on a distributed counting semaphore; create with
    ``client.semaphore(name, limit)``.

    ::

        async with etcd.semaphore("gpu-pool", 4, timeout=30) as slot:
            ...  # at most 4 such blocks run at once, cluster-wide

    The object is one slot: acquiring it while it is held raises
    :class:`~etcdsync.errors.LockError`; create one object per task or thread.
    Same API as :class:`~etcdsync.AsyncMutex` (acquire, try_acquire, release,
    ``async with``, fencing_token, is_owner, guarded_txn, lost).  Every
    contender must use the same ``limit``: each key records its holder's limit,
    and an acquire that reads a key with another one raises
    :class:`~etcdsync.errors.SemaphoreLimitError` (nothing of it left behind).
    """

    _read_values = True

    def __init__(
        self,
        client: AsyncRecipeClient,
        name: str,
        limit: int,
        *,
        session: AsyncSession | None = None,
        ttl: int | None = None,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise errors.InvalidRequest(f"limit must be an int >= 1, got {limit!r}")
        super().__init__(client, name, session=session, ttl=ttl, timeout=timeout)
        self._limit = limit
        self._allowed = limit - 1

    @property
    def limit(self) -> int:
        return self._limit

    def _new_key(self, session: AsyncSession) -> str:
        return f"{self._name}/{session.lease_id:x}-{unique_suffix()}"

    def _value(self) -> bytes:
        return str(self._limit).encode()

    def _check_read(self, read: list[KeyValue], token: int) -> None:
        super()._check_read(read, token)
        for kv in read:
            if kv.create_revision == token or not kv.value:
                continue  # our own key; a key of an older version records no limit
            try:
                limit = int(kv.value)
            except ValueError:
                limit = -1
            if limit != self._limit:
                raise errors.SemaphoreLimitError(
                    f"semaphore {self._name!r} is used with limit {self._limit} here but "
                    f"with {kv.value.decode('utf-8', 'replace')!r} by the holder of "
                    f"{kv.key!r}: every contender must use the same limit",
                    key=kv.key,
                    limit=limit,
                    expected=self._limit,
                )

    async def holders(self, *, timeout: float | None = None) -> list[KeyValue]:
        """The keys of the current holders (the ``limit`` oldest), oldest first."""
        response = await self._client.get(
            self._wait_prefix(),
            prefix=True,
            sort_order="ascend",
            sort_target="create",
            limit=self._limit,
            keys_only=True,
            timeout=timeout,
        )
        return response.kvs

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f" limit={self._limit}>"
