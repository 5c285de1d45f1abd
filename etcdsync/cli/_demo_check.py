"""The demo's self-check: what the workers reported, held against etcd's own history.

The demo watches its whole key prefix from the revision before the first write, so it
has every change etcd made, in revision order (:class:`Change`), and each worker's
reports (:class:`WorkerLog`).  The checks are pure functions of the two:

* **counter**: every increment is written together with a ledger key
  ``ledger/<value>`` naming its worker and fencing token.  The final counter must
  equal the number of ledger entries, the entries must be exactly 1..N, each written
  once, every acknowledged increment must be there, and every entry that was not
  acknowledged must be one whose outcome its worker could not know (killed mid-write,
  or an error after sending): those are the *indeterminate* increments, and the ledger
  says which of them landed.
* **fencing**: at the revision of every ledger write, the lock's holder (the lowest
  create revision under ``lock/``) is the writer's key and its create revision is the
  token the writer used.
* **leadership**: replaying the election keys gives the terms (the leader is the key
  with the lowest create revision).  Ordered by create revision, terms never overlap,
  and every ``elected`` report names a real term of that worker and was confirmed at a
  revision inside it.  After the leader is killed, another worker is elected.
* **config**: every surviving worker saw every published version, in order, and never
  a half-applied one.
* **group**: every worker joined the group ``members`` once, with a member key bound
  to its session's lease; the killed worker's key went with its lease, the others'
  when they left on stop, so nobody is a member at the end.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COUNTER",
    "ELECTION",
    "GROUP",
    "LEDGER",
    "LOCK",
    "Change",
    "Check",
    "Term",
    "WorkerLog",
    "check_config",
    "check_counter",
    "check_fencing",
    "check_group",
    "check_leadership",
    "check_workers",
    "leadership_terms",
    "ledger_key",
    "work_ms_for",
]

# Keys, relative to the run's prefix.
COUNTER = "counter"
LEDGER = "ledger/"
LOCK = "lock"
ELECTION = "election"
GROUP = "members"
CONFIG = "config/"
END = "end"


def ledger_key(value: int) -> str:
    return f"{LEDGER}{value:08d}"


def work_ms_for(version: int) -> int:
    """The ``work_ms`` that config version ``version`` sets; a snapshot whose pair
    disagrees would be a half-applied update."""
    return (20, 45, 15, 35)[version % 4]


@dataclass(frozen=True)
class Change:
    """One event of the watched prefix, reduced to what the checks use."""

    revision: int
    key: str
    value: str
    create_revision: int
    lease: int
    deleted: bool


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Term:
    """A leadership term, as etcd's history shows it: from ``start`` (the revision at
    which the key became the lowest) to ``end`` (exclusive; None: still leading)."""

    key: str
    create_revision: int
    worker: str
    start: int
    end: int | None = None


@dataclass
class WorkerLog:
    """Everything one worker reported (see ``_demo_worker``), and how it ended."""

    name: str
    pid: int = 0
    leases: set[int] = field(default_factory=set)
    ready: bool = False
    killed: bool = False
    exit_code: int | None = None
    said_bye: bool = False
    acked: dict[int, int] = field(default_factory=dict)  # value -> fencing token
    in_flight: tuple[int, int] | None = None  # sent, outcome not reported yet
    unknown: list[tuple[int, int]] = field(default_factory=list)  # outcome unknowable
    rejected: list[tuple[int, int]] = field(default_factory=list)  # refused: lock lost
    conflicts: list[tuple[int, int]] = field(default_factory=list)  # ledger entry existed
    elected: list[tuple[int, int]] = field(default_factory=list)  # (term, confirmed at)
    configs: list[tuple[int, int, bool]] = field(default_factory=list)  # (version, rev, ok)
    errors: list[str] = field(default_factory=list)

    def apply(self, report: Mapping[str, Any]) -> None:
        """Record one report (a decoded JSON line of the worker)."""
        event = report.get("event")
        write = (int(report.get("value", 0)), int(report.get("token", 0)))
        if event == "ready":
            self.ready = True
            self.pid = int(report["pid"])
            self.leases.add(int(report["lease"]))
        elif event == "lease":
            self.leases.add(int(report["lease"]))
        elif event == "inc-start":
            self.in_flight = write
        elif event in ("inc", "inc-rejected", "inc-unknown", "inc-conflict"):
            self.in_flight = None
            if event == "inc":
                self.acked[write[0]] = write[1]
            elif event == "inc-rejected":
                self.rejected.append(write)
            elif event == "inc-unknown":
                self.unknown.append(write)
            else:
                self.conflicts.append(write)
        elif event == "elected":
            self.elected.append((int(report["term"]), int(report["seen"])))
        elif event == "config":
            self.configs.append(
                (int(report["version"]), int(report["revision"]), bool(report["consistent"]))
            )
        elif event == "error":
            self.errors.append(str(report.get("message", "")))
        elif event == "bye":
            self.said_bye = True

    @property
    def indeterminate(self) -> list[tuple[int, int]]:
        """Increments whose outcome this worker never learned."""
        return self.unknown + ([self.in_flight] if self.in_flight is not None else [])

    @property
    def versions_seen(self) -> list[int]:
        return [version for version, _, _ in self.configs]


def _by_revision(changes: Iterable[Change]) -> Iterator[tuple[int, list[Change]]]:
    for revision, group in itertools.groupby(changes, key=lambda change: change.revision):
        yield revision, list(group)


def _lowest(keys: Mapping[str, Change]) -> Change | None:
    return min(keys.values(), key=lambda kv: kv.create_revision, default=None)


def leadership_terms(changes: Sequence[Change]) -> list[Term]:
    """Replay the election keys: who led from which revision to which."""
    prefix = ELECTION + "/"
    candidates: dict[str, Change] = {}
    terms: list[Term] = []
    current: tuple[str, int] | None = None
    for revision, group in _by_revision(changes):
        touched = False
        for change in group:
            if change.key.startswith(prefix):
                touched = True
                if change.deleted:
                    candidates.pop(change.key, None)
                else:
                    candidates[change.key] = change
        if not touched:
            continue
        leader = _lowest(candidates)
        ident = (leader.key, leader.create_revision) if leader is not None else None
        if ident != current:
            if current is not None:
                terms[-1].end = revision
            if leader is not None:
                terms.append(Term(leader.key, leader.create_revision, leader.value, revision))
            current = ident
    return terms


def _worker_of_lease(logs: Iterable[WorkerLog]) -> dict[int, str]:
    return {lease: log.name for log in logs for lease in log.leases}


def _ledger(changes: Sequence[Change]) -> tuple[dict[int, tuple[str, int, int]], list[int]]:
    """value -> (worker, token, revision) of each ledger write, and values written twice."""
    entries: dict[int, tuple[str, int, int]] = {}
    twice: list[int] = []
    for change in changes:
        if change.key.startswith(LEDGER) and not change.deleted:
            value = int(change.key[len(LEDGER) :])
            worker, token = change.value.split()
            if value in entries:
                twice.append(value)
            entries[value] = (worker, int(token), change.revision)
    return entries, twice


def check_counter(changes: Sequence[Change], logs: Sequence[WorkerLog]) -> Check:
    name = "counter exact"
    puts = [c for c in changes if c.key == COUNTER and not c.deleted]
    final = int(puts[-1].value) if puts else 0
    ledger, twice = _ledger(changes)
    problems: list[str] = []
    if twice:
        problems.append(f"values written twice: {twice[:5]}")
    if sorted(ledger) != list(range(1, len(ledger) + 1)):
        problems.append("the ledger has gaps")
    if final != len(ledger):
        problems.append(f"counter {final} but {len(ledger)} ledger entries")
    acked: dict[int, tuple[str, int]] = {}
    maybe: dict[int, tuple[str, int]] = {}
    for log in logs:
        for value, token in log.acked.items():
            if value in acked:
                problems.append(f"{value} was acknowledged to {acked[value][0]} and {log.name}")
            acked[value] = (log.name, token)
            if ledger.get(value, ("", 0, 0))[:2] != (log.name, token):
                problems.append(f"{log.name}'s acknowledged increment to {value} is missing")
        for value, token in log.indeterminate:
            maybe[value] = (log.name, token)
        if log.conflicts:
            problems.append(f"{log.name} found {len(log.conflicts)} value(s) already written")
    landed = 0
    for value, (worker, token, _) in ledger.items():
        if acked.get(value) == (worker, token):
            continue
        if maybe.get(value) == (worker, token):
            landed += 1
        else:
            problems.append(f"increment to {value} by {worker} was never acknowledged")
    if problems:
        return Check(name, False, "; ".join(problems[:4]))
    detail = f"counter = {final} = {len(acked)} acknowledged increments"
    if maybe:
        detail += f" + {landed} of {len(maybe)} indeterminate (in flight when it ended)"
    else:
        detail += ", none indeterminate"
    return Check(name, True, detail)


def check_fencing(changes: Sequence[Change], logs: Sequence[WorkerLog]) -> Check:
    name = "lock fencing"
    owners = _worker_of_lease(logs)
    prefix = LOCK + "/"
    holders: dict[str, Change] = {}
    problems: list[str] = []
    writes: list[tuple[int, int]] = []
    for revision, group in _by_revision(changes):
        for change in group:
            if not change.key.startswith(LEDGER) or change.deleted:
                continue
            value = int(change.key[len(LEDGER) :])
            worker, token_text = change.value.split()
            token = int(token_text)
            writes.append((value, token))
            holder = _lowest(holders)
            if holder is None:
                problems.append(f"{worker} wrote {value} at revision {revision} with no holder")
            elif holder.create_revision != token:
                problems.append(
                    f"{worker} wrote {value} with token {token} while token "
                    f"{holder.create_revision} held the lock"
                )
            elif owners.get(holder.lease, worker) != worker:
                problems.append(f"{worker} wrote {value} while {owners[holder.lease]} held it")
        for change in group:
            if change.key.startswith(prefix):
                if change.deleted:
                    holders.pop(change.key, None)
                else:
                    holders[change.key] = change
    writes.sort()
    if any(a[1] > b[1] for a, b in itertools.pairwise(writes)):
        problems.append("fencing tokens went backwards along the counter")
    if problems:
        return Check(name, False, "; ".join(problems[:4]))
    holds = len({token for _, token in writes})
    return Check(
        name,
        True,
        f"all {len(writes)} writes made by the lock holder of the moment, "
        f"{holds} holds with increasing fencing tokens",
    )


def check_leadership(
    changes: Sequence[Change], logs: Sequence[WorkerLog], killed: str | None
) -> Check:
    name = "one leader at a time"
    terms = leadership_terms(changes)
    problems: list[str] = []
    for before, after in itertools.pairwise(terms):
        if before.end is None or after.start < before.end:
            problems.append(f"terms {before.create_revision} and {after.create_revision} overlap")
        if after.create_revision <= before.create_revision:
            problems.append(f"term {after.create_revision} follows {before.create_revision}")
    by_revision = {term.create_revision: term for term in terms}
    reported = 0
    for log in logs:
        for term_revision, seen in log.elected:
            reported += 1
            found = by_revision.get(term_revision)
            if found is None or found.worker != log.name:
                problems.append(f"{log.name} claimed term {term_revision}, not its own")
            elif not (found.start <= seen and (found.end is None or seen < found.end)):
                problems.append(
                    f"{log.name} confirmed term {term_revision} at revision {seen}, outside "
                    f"[{found.start}, {found.end})"
                )
    if killed is not None:
        dead = [term for term in terms if term.worker == killed]
        end = dead[-1].end if dead else None
        if end is None:
            problems.append(f"the killed worker {killed} never led, or still leads")
        elif not any(term.worker != killed and term.start >= end for term in terms):
            problems.append(f"no other worker was elected after {killed} was killed")
    if problems:
        return Check(name, False, "; ".join(problems[:4]))
    chain = " -> ".join(f"{t.worker}@{t.create_revision}" for t in terms[:8])
    more = f" (+{len(terms) - 8})" if len(terms) > 8 else ""
    return Check(
        name,
        True,
        f"{len(terms)} terms, never overlapping: {chain}{more}; "
        f"{reported} elections reported, each inside its term",
    )


def check_config(logs: Sequence[WorkerLog], versions: int) -> Check:
    name = "config seen by all"
    problems: list[str] = []
    survivors = [log for log in logs if not log.killed]
    for log in logs:
        if not all(ok for _, _, ok in log.configs):
            problems.append(f"{log.name} saw a half-applied config")
        seen = log.versions_seen
        if any(a >= b for a, b in itertools.pairwise(seen)):
            problems.append(f"{log.name} saw versions out of order: {seen}")
    for log in survivors:
        missing = sorted(set(range(1, versions + 1)) - set(log.versions_seen))
        if missing:
            problems.append(f"{log.name} never saw version(s) {missing}")
    if problems:
        return Check(name, False, "; ".join(problems[:4]))
    return Check(
        name,
        True,
        f"{len(survivors)} surviving worker{'s' if len(survivors) != 1 else ''} saw all "
        f"{versions} versions in order, never half an update",
    )


def check_group(changes: Sequence[Change], logs: Sequence[WorkerLog], killed: str | None) -> Check:
    name = "group membership"
    prefix = GROUP + "/"
    owners = _worker_of_lease(logs)
    live: dict[str, str] = {}  # member key -> worker, as etcd has it
    joined: list[str] = []
    left: list[str] = []
    problems: list[str] = []
    for change in changes:
        if not change.key.startswith(prefix):
            continue
        if change.deleted:
            worker = live.pop(change.key, None)
            if worker is None:
                problems.append(f"{change.key} was deleted but nobody had joined under it")
            else:
                left.append(worker)
        elif change.key not in live:
            worker = change.value
            if worker in live.values():
                problems.append(f"{worker} joined twice")
            if owners.get(change.lease) != worker:
                problems.append(f"{worker}'s member key is not bound to its session's lease")
            live[change.key] = worker
            joined.append(worker)
    for log in logs:
        if log.ready and log.name not in joined:
            problems.append(f"{log.name} never joined")
    if live:
        problems.append(f"still members after every worker ended: {sorted(live.values())}")
    if killed is not None and killed not in left:
        problems.append(f"the killed worker {killed} never left")
    if problems:
        return Check(name, False, "; ".join(problems[:4]))
    how = f"{killed} with its lease after the kill, the others on stop" if killed else "on stop"
    return Check(name, True, f"{len(joined)} workers joined once each; all left: {how}")


def check_workers(logs: Sequence[WorkerLog]) -> Check:
    name = "workers"
    problems = [
        f"{log.name} exited with {log.exit_code}" + (f" ({log.errors[-1]})" if log.errors else "")
        for log in logs
        if not log.killed and (log.exit_code != 0 or not log.said_bye)
    ]
    if problems:
        return Check(name, False, "; ".join(problems[:4]))
    killed = [log.name for log in logs if log.killed]
    return Check(
        name,
        True,
        f"{len(logs) - len(killed)} stopped cleanly"
        + (f", {killed[0]} was killed" if killed else ""),
    )
