"""Reading for ``etcdsync inspect``: a consistent read of a prefix and its leases, and
in watch mode a local copy kept current by a watch.

**One read.**  Every key under the prefix is read at one revision (a count-only get
pins the revision, then the keys are paged through at that revision, so a large
prefix never needs one giant response), then each lease those keys are bound to is
asked for its TTL left and its keys (``time_to_live(keys=True)``).

**Watch mode.**  After the read at revision R, a watch from R + 1 delivers every
change, batch by batch, into the local copy: no write is missed and nothing is
read again.  A key's creation seen on the watch is noted in the :class:`SeenBook`
(its wall-clock age is then exact).  Lease TTLs cannot be watched (etcd sends
nothing when a lease is renewed or runs down), so they are read again for each
redraw: after each change, and on each clock tick while nothing changes.  When the
watch cannot continue (its history was compacted while the client was away), the
prefix is read again from scratch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import Client, EventType, KeyValue, LeaseTimeToLive, Watcher, errors
from .inspect_layout import SeenBook, Snapshot

__all__ = ["LiveView", "read_leases", "read_snapshot"]


def _read_keys(client: Client, prefix: str) -> tuple[int, list[KeyValue]]:
    pinned = client.get(prefix, prefix=True, count_only=True)
    revision = pinned.revision
    return revision, list(client.iterate(prefix, prefix=True, revision=revision))


def read_leases(client: Client, leases: set[int]) -> dict[int, LeaseTimeToLive | None]:
    """Each lease's TTL left and keys; None for a lease that is gone."""
    found: dict[int, LeaseTimeToLive | None] = {}
    for lease in sorted(leases):
        try:
            found[lease] = client.time_to_live(lease, keys=True)
        except errors.LeaseNotFoundError:
            found[lease] = None
    return found


def read_snapshot(client: Client, prefix: str) -> Snapshot:
    """Every key under ``prefix`` at one revision, and its leases."""
    revision, kvs = _read_keys(client, prefix)
    return Snapshot(
        prefix, revision, kvs, read_leases(client, {kv.lease for kv in kvs if kv.lease})
    )


class LiveView:
    """The keys under a prefix, kept current by a watch; for ``--watch``.

    :meth:`wait` blocks until the watch delivers a change (True) or ``timeout``
    passes (False); :meth:`snapshot` is the current state with freshly read lease
    TTLs.  ``book`` records when each key was first seen, on ``clock``.
    """

    def __init__(
        self,
        client: Client,
        prefix: str,
        book: SeenBook,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._book = book
        self._clock = clock
        self._kvs: dict[bytes, KeyValue] = {}
        self._revision = 0
        self._watcher: Watcher | None = None
        self._reload()

    def _reload(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        self._revision, kvs = _read_keys(self._client, self._prefix)
        self._kvs = {kv.key: kv for kv in kvs}
        self._watcher = self._client.watch(
            self._prefix, prefix=True, start_revision=self._revision + 1
        )

    @property
    def revision(self) -> int:
        return self._revision

    def wait(self, timeout: float) -> bool:
        """Apply the next batch of changes; False when none came within ``timeout``."""
        assert self._watcher is not None
        try:
            batch = self._watcher.get(timeout)
        except TimeoutError:
            return False
        except errors.CompactedError:
            self._reload()
            return True
        now = self._clock()
        for event in batch.events:
            kv = event.kv
            if event.type is EventType.DELETE:
                self._kvs.pop(kv.key, None)
            else:
                if kv.version == 1:
                    self._book.created(kv.key.decode("utf-8", "replace"), kv.create_revision, now)
                self._kvs[kv.key] = kv
            # The events' own revisions, not the batch header's: a catching-up watch
            # sends headers newer than its events.
            self._revision = max(self._revision, kv.mod_revision)
        return True

    def snapshot(self) -> Snapshot:
        kvs = sorted(self._kvs.values(), key=lambda kv: kv.key)
        leases = read_leases(self._client, {kv.lease for kv in kvs if kv.lease})
        return Snapshot(self._prefix, self._revision, kvs, leases)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
