"""Prefix cache values: the events a cache reports and the snapshots it hands out.

Pure and IO-free; shared by both flavours.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ._keys import to_bytes
from .models import KeyValue

__all__ = ["CacheEvent", "CacheEventType", "CacheSnapshot"]


class CacheEventType(enum.Enum):
    """What happened to a key of a prefix cache."""

    ADDED = "added"
    """The key was created (or, with ``initial``, was there when the listener came)."""
    UPDATED = "updated"
    """The key was written again."""
    REMOVED = "removed"
    """The key was deleted (or expired with its lease)."""
    RESET = "reset"
    """The cache read the whole prefix again after a gap in its watch (the history
    it needed was compacted, or the server ended the watch): the changes inside
    the gap are not known one by one.  The events that follow at the same
    revision (marked ``resync``) are the net difference."""


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """One change of a prefix cache.

    ``kv`` is the key-value after the change (for ``REMOVED``: as last seen;
    None for ``RESET``), ``prev_kv`` the one an ``UPDATED`` replaced (else None),
    ``revision`` the store revision of the change.  ``initial`` marks the
    ``ADDED`` events of the keys present when a listener asked for them
    (``revision`` is then the cache's revision at that moment).  ``resync`` marks
    the events computed by comparing the state before and after a ``RESET``:
    a key created and deleted inside the gap is not reported, a key deleted and
    created again is reported as ``REMOVED`` + ``ADDED``.
    """

    type: CacheEventType
    key: bytes
    kv: KeyValue | None
    revision: int
    prev_kv: KeyValue | None = None
    initial: bool = False
    resync: bool = False

    @property
    def value(self) -> bytes | None:
        """The value after the change (for ``REMOVED``: the last one); None for ``RESET``."""
        return None if self.kv is None else self.kv.value


class CacheSnapshot(Mapping[bytes, KeyValue]):
    """The key-values of a prefix cache at one revision: an immutable mapping from
    key (bytes; ``str`` keys are encoded as UTF-8 on lookup) to
    :class:`~etcdsync.models.KeyValue`, iterated in key order."""

    __slots__ = ("_kvs", "_order", "revision")

    def __init__(self, kvs: Mapping[bytes, KeyValue], revision: int) -> None:
        self._kvs = dict(kvs)
        self._order: list[bytes] | None = None
        self.revision = revision
        """The store revision this snapshot reflects."""

    def __getitem__(self, key: object) -> KeyValue:
        return self._kvs[to_bytes(key)]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str | bytes) and to_bytes(key) in self._kvs

    def __iter__(self) -> Iterator[bytes]:
        if self._order is None:
            self._order = sorted(self._kvs)
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._kvs)

    def __repr__(self) -> str:
        return f"<CacheSnapshot revision={self.revision} keys={len(self._kvs)}>"
