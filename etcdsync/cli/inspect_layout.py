"""What ``etcdsync inspect`` finds under a prefix: recipes recognised by their key layouts.

Pure: no I/O.  :func:`analyse` takes the keys read at one revision and what the
server said about their leases (a :class:`Snapshot`) and returns typed findings
(a :class:`Report`); reading is :mod:`.inspect_read`, drawing :mod:`.inspect_render`.

Layouts recognised (``<lease>`` is the key's own lease id in lowercase hex, checked
against the lease the key is bound to, so a key that merely looks like one is not
taken for a contender):

==================  ================================================  =====================
recipe              keys                                              written by
==================  ================================================  =====================
lock                ``<name>/<lease>``, every value empty              etcdsync, Go's
                                                                      ``concurrency.Mutex``,
                                                                      ``etcdctl lock``
election            ``<name>/<lease>``, value = the proposal           etcdsync, Go's
                                                                      ``concurrency.Election``,
                                                                      ``etcdctl elect``
readers-writer      ``<name>/read/<lease>-<16 hex>``,                  etcdsync
lock                ``<name>/write/<lease>-<16 hex>``
semaphore           ``<name>/<lease>-<16 hex>``, value = the limit     etcdsync
                    (empty in keys of older versions)
queue               ``<name>/<unix ns>``, no lease                     etcdsync, Go's
                                                                      ``recipe.Queue``
priority queue      ``<name>/<5 digits>/<16 digits>``, no lease        etcdsync, Go's
                                                                      ``recipe.PriorityQueue``
at-least-once       ``<name>/items/<unix ns>``,                        etcdsync
queue               ``<name>/claims/<unix ns>`` (lease)
double barrier      ``<name>/waiters/<unix ns>`` (lease),              etcdsync, Go's
                    ``<name>/ready``                                  ``recipe.DoubleBarrier``
run-once lease      ``<name>/<slot>`` (a small number, lease)          etcdsync
partitioner         ``<name>/members/<member id>`` (lease),            etcdsync
                    ``<name>/owners/<item>`` (lease)
==================  ================================================  =====================

A lock and an election share one layout (Go's): they are told apart by value - a
queue whose keys all hold empty values is a lock, one where any key holds a value
is an election.  So an election whose candidates all propose the empty string is
shown as a lock.  A group's members (``<name>/<lease>``, holding the announced
value) have an election's layout too, and are shown as one (a partitioner's
members are recognised by its ``owners`` keys beside them).  A semaphore named
``x/read`` or ``x/write`` would look like half of a readers-writer lock ``x`` and
is shown as one.  Queue receipts (``<lease>-<8 hex>``) and the priority queue's
counters (``__<name>/...``) are bookkeeping: counted with the recipe, not shown.
Not recognisable by layout, and so counted as other keys: barriers (one plain
key), counters (one key holding a number), STM (any keys).

**Ages.**  etcd keeps no timestamps, so a key's age cannot be read from etcd.  Each
age is given in two honest measures: ``revisions``, the store's revision minus the
key's create revision (how many writes the whole cluster made since the key was
created: exact, but it stands still while nothing is written), and ``seconds``,
wall-clock time since *this inspect* first saw the key (only in ``--watch`` mode;
``exact`` is true when inspect saw the key being created, so that ``seconds`` is its
true age, false when the key already existed when inspect started: then ``seconds``
is a lower bound).  A holder's tenure is measured the same way from the moment
inspect saw it become holder; a holder that already held when inspect started has
no known tenure start (``since_revision`` null): its key's age bounds it from above.
Queue items carry their producer's wall clock in their key (``<unix ns>``): their
age is ``now`` minus that stamp, in the producer's clock.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .. import KeyValue, LeaseTimeToLive

__all__ = [
    "Age",
    "Contender",
    "DoubleBarrierFinding",
    "LeaseOnceFinding",
    "PartitionerFinding",
    "QueueFinding",
    "QueueLockFinding",
    "RWLockFinding",
    "Report",
    "SeenBook",
    "SemaphoreFinding",
    "SessionFinding",
    "Snapshot",
    "Tenure",
    "analyse",
]

_HEX = re.compile(r"[0-9a-f]+")
_UNIQUE = re.compile(r"([0-9a-f]+)-([0-9a-f]{16})")  # <lease>-<64 random bits>
_RECEIPT = re.compile(r"([0-9a-f]+)-([0-9a-f]{8})")  # queue receipts: <lease>-<32 bits>
_NANOS = re.compile(r"[0-9]{16,20}")  # time.time_ns() / Go's UnixNano()
_PRIORITY = re.compile(r"[0-9]{5}")
_SEQUENCE = re.compile(r"[0-9]{16}")
_SLOT = re.compile(r"[0-9]{1,4}")


# --- input ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What was read: every key under ``prefix`` at ``revision``, and for each lease
    those keys are bound to, the server's answer (None: the lease was gone)."""

    prefix: str
    revision: int
    kvs: Sequence[KeyValue]
    leases: Mapping[int, LeaseTimeToLive | None]


class SeenBook:
    """When this inspect first saw each key, and each holder become holder.

    Pure bookkeeping for ``--watch`` mode: the reader tells it the times (its own
    monotonic clock), nothing here reads a clock.  Keys are identified by
    ``(key, create revision)``, so a key deleted and created again is a new key.
    """

    def __init__(self) -> None:
        self._first_seen: dict[tuple[str, int], tuple[float, bool]] = {}
        self._head_since: dict[tuple[str, str, int], tuple[int | None, float | None]] = {}
        self._started = False

    def created(self, key: str, create_revision: int, now: float) -> None:
        """The reader saw the key's creation (a watch event) at ``now``."""
        self._first_seen.setdefault((key, create_revision), (now, True))

    def seen(self, key: str, create_revision: int, now: float) -> None:
        """The key is in a snapshot read at ``now``."""
        self._first_seen.setdefault((key, create_revision), (now, False))

    def first_seen(self, key: str, create_revision: int) -> tuple[float, bool] | None:
        return self._first_seen.get((key, create_revision))

    def head(
        self, recipe: str, key: str, create_revision: int, revision: int, now: float
    ) -> tuple[int | None, float | None]:
        """Note that ``key`` heads ``recipe`` in the snapshot at ``revision``; returns
        the revision and time it was first seen heading it (None, None when it was
        already heading when inspect started)."""
        ident = (recipe, key, create_revision)
        if ident not in self._head_since:
            self._head_since[ident] = (revision, now) if self._started else (None, None)
        return self._head_since[ident]

    def finish_snapshot(self, live: Iterable[tuple[str, int]]) -> None:
        """Forget the keys that are gone; later heads are seen taking over."""
        alive = set(live)
        self._first_seen = {k: v for k, v in self._first_seen.items() if k in alive}
        self._head_since = {k: v for k, v in self._head_since.items() if k[1:] in alive}
        self._started = True


# --- output --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Age:
    """How long a key has existed: ``revisions`` (store revision minus its create
    revision) and, in watch mode, ``seconds`` since inspect first saw it (``exact``:
    inspect saw it created)."""

    revisions: int
    seconds: float | None = None
    exact: bool = False


@dataclass(frozen=True)
class Tenure:
    """How long the head (holder, leader) has held: from ``since_revision``, the
    revision at which inspect saw it take over (None: it already held when inspect
    started)."""

    since_revision: int | None
    revisions: int | None
    seconds: float | None


@dataclass(frozen=True)
class Contender:
    """One key queued in a recipe (holder, waiter, candidate, slot, participant)."""

    key: str
    lease: int
    value: bytes
    create_revision: int
    mod_revision: int
    age: Age
    side: str | None = None  # readers-writer lock: "read" or "write"


@dataclass(frozen=True)
class QueueLockFinding:
    """A lock (``kind="lock"``) or an election (``kind="election"``) in Go's layout.

    ``head`` is the holder or leader (lowest create revision), ``waiters`` the
    others in queue order.  An election's term is identified by the leader key's
    create revision (Go's ``Rev()``, etcdsync's ``leader_revision``)."""

    kind: str
    name: str
    head: Contender | None
    tenure: Tenure | None
    waiters: tuple[Contender, ...]


@dataclass(frozen=True)
class RWLockFinding:
    """A readers-writer lock: who holds it (readers, or one writer) and who waits."""

    name: str
    mode: str | None  # "read", "write", or None when free
    holders: tuple[Contender, ...]
    waiters: tuple[Contender, ...]


@dataclass(frozen=True)
class SemaphoreFinding:
    """A semaphore: ``contenders`` in queue order; with a known ``limit`` the first
    ``limit`` of them are ``holders`` and the rest ``waiters``."""

    name: str
    limit: int | None
    contenders: tuple[Contender, ...]

    @property
    def holders(self) -> tuple[Contender, ...] | None:
        return None if self.limit is None else self.contenders[: self.limit]

    @property
    def waiters(self) -> tuple[Contender, ...] | None:
        return None if self.limit is None else self.contenders[self.limit :]


@dataclass(frozen=True)
class QueueFinding:
    """A queue: ``kind`` is ``queue``, ``priority_queue`` or ``locking_queue``."""

    kind: str
    name: str
    items: int
    claimed: tuple[Contender, ...] = ()  # locking queue: the claims
    oldest_item_seconds: float | None = None  # now - the oldest item's producer stamp
    by_priority: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DoubleBarrierFinding:
    name: str
    participants: tuple[Contender, ...]
    ready: bool


@dataclass(frozen=True)
class LeaseOnceFinding:
    """Run-once lease slots taken for the current period; each slot's period ends
    when its lease does (its ``ttl`` left, in :class:`SessionFinding`)."""

    name: str
    slots: tuple[tuple[int, Contender], ...]


@dataclass(frozen=True)
class PartitionerFinding:
    """A partitioner: its live ``members`` (by join order) and the ``owners`` keys,
    ``(item, owner key)``; an owner key's value is its owner's member id."""

    name: str
    members: tuple[Contender, ...]
    owners: tuple[tuple[str, Contender], ...]


@dataclass(frozen=True)
class SessionFinding:
    """A lease seen behind keys under the prefix: its TTL left, granted TTL, every key
    it keeps alive (also those outside the prefix) and the role each of its keys
    under the prefix plays in a recipe (``roles``: key -> role)."""

    lease: int
    alive: bool
    ttl: int | None
    granted_ttl: int | None
    keys: tuple[str, ...]
    roles: Mapping[str, str]


@dataclass(frozen=True)
class Report:
    prefix: str
    revision: int
    locks: tuple[QueueLockFinding, ...] = ()
    elections: tuple[QueueLockFinding, ...] = ()
    rwlocks: tuple[RWLockFinding, ...] = ()
    semaphores: tuple[SemaphoreFinding, ...] = ()
    queues: tuple[QueueFinding, ...] = ()
    double_barriers: tuple[DoubleBarrierFinding, ...] = ()
    lease_once: tuple[LeaseOnceFinding, ...] = ()
    partitioners: tuple[PartitionerFinding, ...] = ()
    sessions: tuple[SessionFinding, ...] = ()
    other_keys: int = 0
    other_examples: tuple[str, ...] = ()


# --- detection -----------------------------------------------------------------------------


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class _Analysis:
    def __init__(
        self, snapshot: Snapshot, book: SeenBook | None, now: float, wall_now: float
    ) -> None:
        self.snapshot = snapshot
        self.book = book
        self.now = now
        self.wall_now = wall_now
        self.roles: dict[int, dict[str, str]] = defaultdict(dict)

    def contender(self, kv: KeyValue, side: str | None = None) -> Contender:
        key = _text(kv.key)
        seconds: float | None = None
        exact = False
        if self.book is not None:
            seen = self.book.first_seen(key, kv.create_revision)
            if seen is not None:
                seconds, exact = max(self.now - seen[0], 0.0), seen[1]
        age = Age(self.snapshot.revision - kv.create_revision, seconds, exact)
        return Contender(key, kv.lease, kv.value, kv.create_revision, kv.mod_revision, age, side)

    def tenure(self, recipe: str, head: Contender) -> Tenure | None:
        if self.book is None:
            return Tenure(None, None, None)
        since, at = self.book.head(
            recipe, head.key, head.create_revision, self.snapshot.revision, self.now
        )
        if since is None or at is None:
            return Tenure(None, None, None)
        return Tenure(since, self.snapshot.revision - since, max(self.now - at, 0.0))

    def role(self, lease: int, key: str, text: str) -> None:
        if lease:
            self.roles[lease][key] = text


def _by_create(kvs: Iterable[KeyValue]) -> list[KeyValue]:
    return sorted(kvs, key=lambda kv: (kv.create_revision, kv.key))


def _split(key: str) -> tuple[str, str]:
    parent, _, leaf = key.rpartition("/")
    return parent, leaf


def analyse(
    snapshot: Snapshot,
    *,
    book: SeenBook | None = None,
    now: float = 0.0,
    wall_now: float | None = None,
    semaphore_limits: Mapping[str, int] | None = None,
) -> Report:
    """The recipes found in ``snapshot``.

    ``book`` (watch mode) supplies wall-clock ages, measured at ``now`` on the
    book's clock; ``wall_now`` (Unix time) dates the producer-stamped queue items;
    ``semaphore_limits`` gives the limit of semaphores that record none.
    """
    a = _Analysis(snapshot, book, now, wall_now if wall_now is not None else 0.0)
    if book is not None:
        for kv in snapshot.kvs:
            book.seen(_text(kv.key), kv.create_revision, now)
    limits = dict(semaphore_limits or {})

    go_queues: dict[str, list[KeyValue]] = defaultdict(list)
    rw: dict[str, list[tuple[str, KeyValue]]] = defaultdict(list)
    sems: dict[str, list[KeyValue]] = defaultdict(list)
    fifo: dict[str, list[KeyValue]] = defaultdict(list)
    prio: dict[str, list[tuple[int, KeyValue]]] = defaultdict(list)
    lq_items: dict[str, list[KeyValue]] = defaultdict(list)
    lq_claims: dict[str, list[KeyValue]] = defaultdict(list)
    db_waiters: dict[str, list[KeyValue]] = defaultdict(list)
    db_ready: set[str] = set()
    slots: dict[str, list[tuple[int, KeyValue]]] = defaultdict(list)
    members: dict[str, list[KeyValue]] = defaultdict(list)
    owners: dict[str, list[KeyValue]] = defaultdict(list)
    bookkeeping: list[KeyValue] = []
    other: list[KeyValue] = []

    for kv in snapshot.kvs:
        key = _text(kv.key)
        parent, leaf = _split(key)
        lease_hex = f"{kv.lease:x}" if kv.lease else None
        unique = _UNIQUE.fullmatch(leaf)
        if not parent:
            other.append(kv)
        elif kv.lease and parent.endswith("/members"):
            members[parent[: -len("/members")]].append(kv)  # a partitioner's, or a group's
        elif kv.lease and parent.endswith("/owners"):
            owners[parent[: -len("/owners")]].append(kv)
        elif lease_hex is not None and leaf == lease_hex:
            go_queues[parent].append(kv)
        elif unique is not None and unique.group(1) == lease_hex:
            grand, side = _split(parent)
            if grand and side in ("read", "write"):
                rw[grand].append((side, kv))
            else:
                sems[parent].append(kv)
        elif (
            (receipt := _RECEIPT.fullmatch(leaf)) is not None
            and receipt.group(1) == lease_hex
            and parent.endswith("/receipts")
        ):
            bookkeeping.append(kv)
        elif _NANOS.fullmatch(leaf) and parent.endswith("/items") and not kv.lease:
            lq_items[parent[: -len("/items")]].append(kv)
        elif _NANOS.fullmatch(leaf) and parent.endswith("/claims") and kv.lease:
            lq_claims[parent[: -len("/claims")]].append(kv)
        elif _NANOS.fullmatch(leaf) and parent.endswith("/waiters") and kv.lease:
            db_waiters[parent[: -len("/waiters")]].append(kv)
        elif leaf == "ready" and not kv.lease:
            db_ready.add(parent)
        elif _SEQUENCE.fullmatch(leaf) and not kv.lease and _PRIORITY.fullmatch(_split(parent)[1]):
            grand, level = _split(parent)
            prio[grand].append((int(level), kv))
        elif _NANOS.fullmatch(leaf) and not kv.lease:
            fifo[parent].append(kv)
        elif _SLOT.fullmatch(leaf) and kv.lease:
            slots[parent].append((int(leaf), kv))
        elif parent.startswith("__") or _split(parent)[0].startswith("__"):
            bookkeeping.append(kv)  # a priority queue's counter, a queue's receipts
        else:
            other.append(kv)

    # A "ready" key only counts with a double barrier's waiters; "members" keys make a
    # partitioner only with its "owners" (else they are a group, or an election's or a
    # lock's queue, in Go's layout).
    for name in db_ready - set(db_waiters):
        other.extend(kv for kv in snapshot.kvs if _text(kv.key) == f"{name}/ready")
    db_ready &= set(db_waiters)
    for name in list(members):
        if name in owners:
            continue
        for kv in members.pop(name):
            leaf = _split(_text(kv.key))[1]
            (go_queues[f"{name}/members"] if leaf == f"{kv.lease:x}" else other).append(kv)
    for name in list(owners):
        if name not in members:
            other.extend(owners.pop(name))

    locks: list[QueueLockFinding] = []
    elections: list[QueueLockFinding] = []
    for name in sorted(go_queues):
        queue = [a.contender(kv) for kv in _by_create(go_queues[name])]
        kind = "election" if any(c.value for c in queue) else "lock"
        head, waiters = queue[0], tuple(queue[1:])
        finding = QueueLockFinding(kind, name, head, a.tenure(kind, head), waiters)
        (elections if kind == "election" else locks).append(finding)
        a.role(
            head.lease, head.key, f"{kind} {name}: {'leader' if kind == 'election' else 'holder'}"
        )
        for i, w in enumerate(waiters, 1):
            a.role(
                w.lease,
                w.key,
                f"{kind} {name}: {'candidate' if kind == 'election' else 'waiter'} {i}",
            )

    rwlocks = []
    for name in sorted(rw):
        ordered = [
            a.contender(kv, side)
            for side, kv in sorted(rw[name], key=lambda p: (p[1].create_revision, p[1].key))
        ]
        holders: list[Contender] = []
        if ordered and ordered[0].side == "write":
            holders = [ordered[0]]
        else:
            for c in ordered:
                if c.side != "read":
                    break
                holders.append(c)
        waiting = tuple(ordered[len(holders) :])
        mode = holders[0].side if holders else None
        rwlocks.append(RWLockFinding(name, mode, tuple(holders), waiting))
        for c in holders:
            a.role(c.lease, c.key, f"rwlock {name}: {c.side} holder")
        for i, c in enumerate(waiting, 1):
            a.role(c.lease, c.key, f"rwlock {name}: {c.side} waiter {i}")

    semaphores = []
    for name in sorted(sems):
        ordered_sem = tuple(a.contender(kv) for kv in _by_create(sems[name]))
        # Each key records its holder's limit (decimal value); older keys record none.
        recorded = [int(c.value) for c in ordered_sem if c.value.isdigit() and int(c.value) > 0]
        limit = recorded[0] if recorded else limits.get(name)
        sem = SemaphoreFinding(name, limit, ordered_sem)
        semaphores.append(sem)
        for i, c in enumerate(ordered_sem, 1):
            if limit is None:
                a.role(c.lease, c.key, f"semaphore {name}: contender {i}")
            elif i <= limit:
                a.role(c.lease, c.key, f"semaphore {name}: holder {i}/{limit}")
            else:
                a.role(c.lease, c.key, f"semaphore {name}: waiter {i - limit}")

    queues: list[QueueFinding] = []
    for name in sorted(fifo):
        queues.append(QueueFinding("queue", name, len(fifo[name]), (), _oldest(a, fifo[name])))
    for name in sorted(prio):
        counts: dict[int, int] = defaultdict(int)
        for priority, _ in prio[name]:
            counts[priority] += 1
        queues.append(
            QueueFinding(
                "priority_queue", name, len(prio[name]), by_priority=dict(sorted(counts.items()))
            )
        )
    for name in sorted(set(lq_items) | set(lq_claims)):
        claims = tuple(a.contender(kv) for kv in _by_create(lq_claims.get(name, [])))
        for c in claims:
            a.role(c.lease, c.key, f"locking_queue {name}: claim {_split(c.key)[1]}")
        queues.append(
            QueueFinding(
                "locking_queue",
                name,
                len(lq_items.get(name, [])),
                claims,
                _oldest(a, lq_items.get(name, [])),
            )
        )

    barriers = []
    for name in sorted(db_waiters):
        parts = tuple(a.contender(kv) for kv in _by_create(db_waiters[name]))
        barriers.append(DoubleBarrierFinding(name, parts, name in db_ready))
        for c in parts:
            a.role(c.lease, c.key, f"double_barrier {name}: participant")

    once = []
    for name in sorted(slots):
        taken = tuple((i, a.contender(kv)) for i, kv in sorted(slots[name], key=lambda p: p[0]))
        once.append(LeaseOnceFinding(name, taken))
        for i, c in taken:
            a.role(c.lease, c.key, f"lease_once {name}: slot {i}")

    partitioners = []
    for name in sorted(members):
        joined = tuple(a.contender(kv) for kv in _by_create(members[name]))
        owned = tuple(
            (_split(c.key)[1], c) for c in (a.contender(kv) for kv in _by_create(owners[name]))
        )
        partitioners.append(PartitionerFinding(name, joined, owned))
        for c in joined:
            a.role(c.lease, c.key, f"partitioner {name}: member")
        for item, c in owned:
            a.role(c.lease, c.key, f"partitioner {name}: owner of {item}")

    for kv in bookkeeping:
        a.role(kv.lease, _text(kv.key), "bookkeeping")

    sessions = []
    leases = set(snapshot.leases) | {kv.lease for kv in snapshot.kvs if kv.lease}
    for lease in sorted(leases):
        info = snapshot.leases.get(lease)
        if info is None:
            keys = tuple(_text(kv.key) for kv in snapshot.kvs if kv.lease == lease)
            sessions.append(SessionFinding(lease, False, None, None, keys, dict(a.roles[lease])))
        else:
            keys = tuple(sorted(_text(k) for k in info.keys))
            sessions.append(
                SessionFinding(lease, True, info.ttl, info.granted_ttl, keys, dict(a.roles[lease]))
            )

    if book is not None:
        book.finish_snapshot((_text(kv.key), kv.create_revision) for kv in snapshot.kvs)

    return Report(
        prefix=snapshot.prefix,
        revision=snapshot.revision,
        locks=tuple(locks),
        elections=tuple(elections),
        rwlocks=tuple(rwlocks),
        semaphores=tuple(semaphores),
        queues=tuple(queues),
        double_barriers=tuple(barriers),
        lease_once=tuple(once),
        partitioners=tuple(partitioners),
        sessions=tuple(sessions),
        other_keys=len(other),
        other_examples=tuple(sorted(_text(kv.key) for kv in other)[:5]),
    )


def _oldest(a: _Analysis, items: Sequence[KeyValue]) -> float | None:
    """Seconds since the oldest item's producer stamp (its key), on ``wall_now``."""
    if not items or not a.wall_now:
        return None
    stamps = [int(_split(_text(kv.key))[1]) for kv in items]
    return max(a.wall_now - min(stamps) / 1e9, 0.0)
