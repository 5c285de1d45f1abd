"""Checks for the partitioner tests: wait for an assignment, replay the store's history,
and verify from it that no item was ever owned by two members.

The workload these checks expect: every owner writes an item's record
``<records><item>`` as ``count:member:token``, ``count`` being the record's previous
count + 1, in a txn guarded only by ``is_owner(item)`` (whose token is ``token``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from etcdsync import Client
from etcdsync.group_types import rendezvous_owner
from etcdsync.watch_types import EventType


def wait_for_assignment(
    etcd: Client, name: str, members: set[str] | int, items: Sequence[str], timeout: float
) -> tuple[float, int]:
    """Follow ``<name>/`` (one read, then a watch) until exactly ``members`` (or, given a
    number, any that many members) are in the partitioner's group and every item's
    owner key names its rendezvous owner among them; return when
    (``time.monotonic()``) and at which revision."""
    prefix = f"{name}/"
    members_prefix, owners_prefix = f"{prefix}members/".encode(), f"{prefix}owners/".encode()
    now = etcd.get(prefix, prefix=True)
    state = {kv.key: kv for kv in now.kvs}
    revision = now.revision

    def done() -> bool:
        joined = {k[len(members_prefix) :].decode() for k in state if k.startswith(members_prefix)}
        if joined != members if isinstance(members, set) else len(joined) != members:
            return False
        owners = {
            k[len(owners_prefix) :].decode(): kv.value.decode()
            for k, kv in state.items()
            if k.startswith(owners_prefix)
        }
        return owners == {item: rendezvous_owner(item, joined) for item in items}

    deadline = time.monotonic() + timeout
    with etcd.watch(prefix, prefix=True, start_revision=revision + 1) as watcher:
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no assignment over {sorted(members)} within {timeout} s")
            try:
                batch = watcher.get(timeout=left)
            except TimeoutError:
                continue
            for event in batch.events:
                revision = event.revision
                if event.type is EventType.DELETE:
                    state.pop(event.key, None)
                else:
                    state[event.key] = event.kv
    return time.monotonic(), revision


def replay(etcd: Client, prefix: str, start: int, timeout: float = 10.0) -> list[Any]:
    """Every event under ``prefix`` from revision ``start`` on, from the store's own
    history, up to a marker key written now (the marker is left out and deleted)."""
    marker = f"{prefix}~end".encode()
    end = etcd.put(marker, "").revision
    events: list[Any] = []
    deadline = time.monotonic() + timeout
    with etcd.watch(prefix, prefix=True, start_revision=start) as watcher:
        while not events or events[-1].revision < end:
            events += watcher.get(timeout=max(deadline - time.monotonic(), 0.01)).events
    etcd.delete(marker)
    return [e for e in events if e.key != marker]


@dataclass
class OwnershipHistory:
    """What :func:`check_history` found."""

    writes: int
    ownerships: int
    tenure: dict[str, list[tuple[int, int, str]]]
    """item -> (revision created, revision deleted, member) of each owner key."""
    stored: set[tuple[str, str, int]]
    """(item, record value, revision) of every record write."""


def check_history(
    owner_events: Iterable[Any], record_events: Iterable[Any], records: str
) -> OwnershipHistory:
    """Assert, from the store's history, that no item was owned by two members at once:

    * per item, owner keys are created and deleted in turn (never two at a time), each
      written once (at its creation);
    * per item, the record counts grow by exactly one per write (two owners at once
      would lose increments), the fencing tokens never go back, and every write was
      made by the member whose owner key - created at the write's token - existed at
      the write's revision.
    """
    tenure: dict[str, list[tuple[int, int, str]]] = {}
    open_keys: dict[str, tuple[int, str]] = {}
    for event in owner_events:
        item = event.key.decode().rsplit("/", 1)[1]
        if event.type is EventType.DELETE:
            created, member = open_keys.pop(item)  # KeyError: a delete without a key
            tenure.setdefault(item, []).append((created, event.revision, member))
        else:
            assert event.kv.version == 1, f"{item}: an owner key written twice"
            assert item not in open_keys, f"{item}: two owner keys at revision {event.revision}"
            open_keys[item] = (event.revision, event.kv.value.decode())
    for item, (created, member) in open_keys.items():
        tenure.setdefault(item, []).append((created, 1 << 62, member))  # still owned
    per_item: dict[str, list[tuple[int, int, str, int]]] = {}
    stored: set[tuple[str, str, int]] = set()
    for event in record_events:
        item = event.key.decode()[len(records) :]
        value = event.kv.value.decode()
        count, member, token = value.split(":")
        per_item.setdefault(item, []).append((event.revision, int(count), member, int(token)))
        stored.add((item, value, event.revision))
    writes = 0
    for item, history in per_item.items():
        counts = [count for _, count, _, _ in history]
        assert counts == list(range(1, len(history) + 1)), f"{item}: lost updates {counts}"
        tokens = [token for _, _, _, token in history]
        assert all(a <= b for a, b in itertools.pairwise(tokens)), f"{item}: token went back"
        spans = {created: (deleted, member) for created, deleted, member in tenure[item]}
        for revision, _, member, token in history:
            deleted, owner = spans[token]  # KeyError: a token that is no owner key's
            assert owner == member and token < revision < deleted, (item, revision, token)
        writes += len(history)
    ownerships = sum(len(spans) for spans in tenure.values())
    return OwnershipHistory(writes, ownerships, tenure, stored)
