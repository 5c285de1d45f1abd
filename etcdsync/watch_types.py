"""Public types of watches: events and the batches they arrive in; pure and IO-free."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .models import KeyValue

__all__ = ["Event", "EventType", "WatchResponse"]


class EventType(enum.IntEnum):
    """What happened to the key."""

    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Event:
    """One change: the key's state after it (``kv``) and before it when asked (``prev_kv``).

    For a delete, ``kv`` carries the key and the delete's ``mod_revision``, with an
    empty value.
    """

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @classmethod
    def from_pb(cls, pb: Any) -> Event:
        prev = KeyValue.from_pb(pb.prev_kv) if pb.HasField("prev_kv") else None
        return cls(EventType(pb.type), KeyValue.from_pb(pb.kv), prev)

    @property
    def key(self) -> bytes:
        return self.kv.key

    @property
    def value(self) -> bytes:
        return self.kv.value

    @property
    def revision(self) -> int:
        """The revision of this change (the key's ``mod_revision``)."""
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """A batch of events delivered together.

    Every event of one revision is in the same batch (a txn that changed three
    keys arrives as one batch), and batches arrive in revision order.
    ``revision`` is the store revision when the server sent the batch; it can be
    newer than the last event.  A batch with no events is a progress notice
    (``progress=True``: the watcher has seen everything up to ``revision``) or the
    creation notice (``created=True``, only with ``created_notify=True``).
    """

    revision: int
    events: list[Event] = field(default_factory=list)
    progress: bool = False
    created: bool = False

    def __iter__(self) -> Any:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)
