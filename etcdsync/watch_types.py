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
        event = _new(cls)
        set_type, set_kv, set_prev_kv = _EVENT_SETTERS
        kind = pb.type
        set_type(event, _EVENT_TYPES[kind] if 0 <= kind < len(_EVENT_TYPES) else EventType(kind))
        kv = _new(KeyValue)
        _set_kv_pb(kv, pb.kv)
        set_kv(event, kv)
        set_prev_kv(event, KeyValue.from_pb(pb.prev_kv) if pb.HasField("prev_kv") else None)
        return event

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


_new = object.__new__
_set_kv_pb = KeyValue.__dict__["_pb"].__set__
# Event.from_pb fills the frozen dataclass through its slots (half the cost of its
# __init__, which goes through object.__setattr__ for every field): a watcher builds
# one Event per change it receives.
_EVENT_SETTERS = tuple(Event.__dict__[name].__set__ for name in ("type", "kv", "prev_kv"))
_EVENT_TYPES = tuple(EventType)


def events_from_pb(events: Any, prev_kv: bool = True) -> list[Event]:
    """``[Event.from_pb(e) for e in events]``, inlined: a watcher builds one Event per
    change it receives.  ``prev_kv=False`` (the watch did not ask for previous
    key-values, so the server sends none) skips looking for them."""
    set_type, set_kv, set_prev_kv = _EVENT_SETTERS
    kinds, count = _EVENT_TYPES, len(_EVENT_TYPES)
    new, set_kv_pb = _new, _set_kv_pb
    out: list[Event] = []
    append = out.append
    for pb in events:
        event = new(Event)
        kind = pb.type
        set_type(event, kinds[kind] if 0 <= kind < count else EventType(kind))
        kv = new(KeyValue)
        set_kv_pb(kv, pb.kv)
        set_kv(event, kv)
        if prev_kv and pb.HasField("prev_kv"):
            set_prev_kv(event, KeyValue.from_pb(pb.prev_kv))
        else:
            set_prev_kv(event, None)
        append(event)
    return out


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
