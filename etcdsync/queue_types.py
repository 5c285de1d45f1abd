"""Queue values: an item taken from a queue, and the priority range.

Pure and IO-free; shared by both flavours.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidRequest

__all__ = ["MAX_PRIORITY", "QueueItem", "check_priority"]

MAX_PRIORITY = 65535
"""The largest priority (Go's ``PriorityQueue`` takes a ``uint16``); 0 is served first."""


@dataclass(frozen=True, slots=True)
class QueueItem:
    """An item taken from a queue.

    ``key`` is the item's key (relative to the client's namespace), ``value`` what
    was put, ``create_revision`` the revision of the put (the queue's order), and
    ``revision`` the revision of the take: the item was removed from the queue (or,
    for an at-least-once queue, claimed) at that revision.  Takes of one queue are
    totally ordered by ``revision``.
    """

    key: bytes
    value: bytes
    create_revision: int
    revision: int

    @property
    def text(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode("utf-8")


def check_priority(priority: object) -> int:
    """Validate a priority (an int in ``0..MAX_PRIORITY``); raise InvalidRequest."""
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not 0 <= priority <= MAX_PRIORITY
    ):
        raise InvalidRequest(f"priority must be an int in 0..{MAX_PRIORITY}, got {priority!r}")
    return priority
