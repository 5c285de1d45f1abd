"""Mirror: the keys under a prefix, kept current by one read and one watch.

:class:`AsyncPrefixMirror` reads every key under a prefix at one revision R
(paging through a large prefix, every page pinned at R) and watches the prefix
from R + 1, so no write falls between the read and the watch.  Each watch batch
is applied whole - etcd never splits one revision across batches - and an
optional ``on_revision`` hook sees the state after each revision.  When the
watch cannot go on (its history was compacted while the client was away, or
the server ended it) the mirror drops it and the next :meth:`~AsyncPrefixMirror.step`
reads everything again: the mirror converges to the store, it never continues
past a gap.

Shared by the ConfigWatcher (a decoded, validated view of a prefix) and the
ElectionObserver (the leader among the candidates under an election's prefix).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ... import errors
from ..._deadline import Deadline
from ..._keys import prefix_end
from ...models import KeyValue
from ...watch_types import Event, EventType, WatchResponse
from ..protocol import AsyncKVClient

if TYPE_CHECKING:
    from ..watcher import AsyncWatcher

__all__ = ["AsyncPrefixMirror"]


class AsyncPrefixMirror:
    """The key-values under ``prefix``, as of :attr:`revision`.

    ``await load()`` reads the state and starts the watch; each ``await step()``
    applies the next change (or, after a watch failure, reloads).  The mirror is
    driven by one task or thread at a time; :meth:`close` may come from another.

    ``on_revision(revision)`` is called after the events of each revision are
    applied, and after each load (with the load's revision).  ``on_event(event,
    previous)`` is called for each watched event just before it is applied, with
    the key-value it replaces (None if the key was absent).
    """

    def __init__(
        self,
        client: AsyncKVClient,
        prefix: bytes,
        *,
        page_size: int = 1000,
        on_revision: Callable[[int], None] | None = None,
        on_event: Callable[[Event, KeyValue | None], None] | None = None,
    ) -> None:
        if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size <= 0:
            raise errors.InvalidRequest(f"page_size must be a positive int, got {page_size!r}")
        self._client = client
        self.prefix = prefix
        self._page_size = page_size
        self._on_revision = on_revision
        self._on_event = on_event
        self._watcher: AsyncWatcher | None = None
        self._loaded = False
        self.closed = False
        self.kvs: dict[bytes, KeyValue] = {}
        """The mirrored key-values by key (read it, never change it)."""
        self.revision = 0
        """The store revision the mirrored state reflects (0 before the first load)."""
        self.reloads = 0
        """How many times the state was read again after the first load."""
        self.read_retries = 0
        """How many paged reads started again because a compaction overtook them."""

    @property
    def watching(self) -> bool:
        """True while a watch follows the prefix (False before the first load and
        after a watch failure, until the next load)."""
        return self._watcher is not None

    async def _read(self, deadline: Deadline) -> tuple[dict[bytes, KeyValue], int]:
        """Every key under the prefix at one revision, paging through large prefixes.

        A compaction that lands between two pages (the later pages are pinned at
        the first one's revision) makes the whole read start again at a new
        revision, with pages twice as large each time, so a read that keeps
        racing compactions needs fewer and fewer round trips; within the
        deadline.
        """
        page_size = self._page_size
        while True:
            first = await self._client.get(
                self.prefix, prefix=True, limit=page_size, timeout=deadline.rpc_timeout()
            )
            kvs = {kv.key: kv for kv in first.kvs}
            if not (first.more and first.kvs):
                return kvs, first.revision
            rest = self._client.iterate(
                first.kvs[-1].key + b"\0",
                range_end=prefix_end(self.prefix),
                page_size=page_size,
                revision=first.revision,
                timeout=deadline.rpc_timeout(),
            )
            try:
                async for kv in rest:
                    kvs[kv.key] = kv
            except errors.CompactedError:
                if deadline.expired():
                    raise
                page_size *= 2
                self.read_retries += 1
                continue
            return kvs, first.revision

    async def load(self, timeout: float | None = None) -> int:
        """Read the whole state at one revision R and watch from R + 1; return R.

        Replaces the mirrored state (a reload when one was loaded before).
        Raises the client's errors (nothing changes then).
        """
        deadline = Deadline(timeout)
        await self.drop_watch()
        kvs, revision = await self._read(deadline)
        # require_leader: a member cut off from its leader would leave the mirror
        # stale without a word; with it the watch moves to a member that has one.
        watcher = await self._client.watch(
            self.prefix,
            prefix=True,
            start_revision=revision + 1,
            require_leader=True,
            timeout=deadline.rpc_timeout(),
        )
        if self.closed:  # close() ran (from another thread) meanwhile
            await watcher.cancel()
            raise StopAsyncIteration
        self._watcher = watcher
        if self._loaded:
            self.reloads += 1
        self._loaded = True
        self.kvs, self.revision = kvs, revision
        if self._on_revision is not None:
            self._on_revision(revision)
        return revision

    async def step(self, timeout: float | None = None) -> bool:
        """Apply the next change; True if the mirrored state changed.

        Without a watch (never loaded, or the last one failed) this is a
        :meth:`load`.  Otherwise it waits up to ``timeout`` seconds for the next
        watch batch (``TimeoutError`` when none came) and applies it; a batch
        without events (progress) changes nothing.  A watch that fails (e.g.
        :class:`~etcdsync.errors.CompactedError`) is dropped and its error
        raised: the next step reloads.  ``StopAsyncIteration`` once closed;
        :class:`~etcdsync.errors.ClientClosedError` once the client closed.
        """
        if self.closed:
            raise StopAsyncIteration
        watcher = self._watcher
        if watcher is None:
            await self.load(timeout)
            return True
        try:
            batch = await watcher.get(timeout)
        except errors.ClientClosedError:
            raise
        except errors.EtcdError:
            # Compacted history or a watch the server ended: a gap would follow.
            await self.drop_watch()
            raise
        return self._apply(batch)

    def _apply(self, batch: WatchResponse) -> bool:
        revision = 0
        for event in batch.events:
            if revision and event.revision != revision:
                self._revision_done(revision)
            revision = event.revision
            if self._on_event is not None:
                self._on_event(event, self.kvs.get(event.key))
            if event.type is EventType.PUT:
                self.kvs[event.key] = event.kv
            else:
                self.kvs.pop(event.key, None)
        if not revision:
            return False
        self._revision_done(revision)
        return True

    def _revision_done(self, revision: int) -> None:
        self.revision = revision
        if self._on_revision is not None:
            self._on_revision(revision)

    async def drop_watch(self) -> None:
        """Stop watching (the state stays); the next :meth:`step` reloads."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.cancel()

    async def reset(self) -> None:
        """Stop watching and forget the state: the next load is a first load again."""
        await self.drop_watch()
        self.kvs, self.revision, self._loaded = {}, 0, False

    async def close(self) -> None:
        """Stop for good: a pending or later :meth:`step` raises ``StopAsyncIteration``."""
        self.closed = True
        await self.drop_watch()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.prefix!r} revision={self.revision} keys={len(self.kvs)}>"
        )
