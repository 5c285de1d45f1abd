"""Operation histories of the fault scenarios, and the checks run on them afterwards.

Every actor (a thread, a task or a worker process) records what it *invoked* and how
it *completed*, Jepsen-style:

* ``ok``   - the operation took effect (a write committed, a read returned);
* ``fail`` - it certainly did not take effect (a compare that failed, a request that
  was never sent, a guarded write that etcd refused);
* ``info`` - unknown: the request may or may not have been applied (a write that
  timed out or whose connection broke).  Checks must accept both outcomes.

Times are ``time.monotonic()``: CLOCK_MONOTONIC is one clock for every process of
the machine, so the histories of worker processes merge with the test's own.

The checks read the store's *own* history afterwards (a watch replay from the
scenario's first revision) and compare it with what the actors were told: an
acknowledged write must be there, a failed one must not, nothing may be applied
twice, and writes guarded by a fencing token must not interleave.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from etcdsync import errors

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"


@dataclass(frozen=True)
class Entry:
    """One line of a history: (time, actor, op, args, result) plus its kind."""

    time: float
    actor: str
    kind: str
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    result: Any = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=repr)

    @classmethod
    def from_json(cls, line: str) -> Entry:
        data = json.loads(line)
        return cls(
            data["time"],
            data["actor"],
            data["kind"],
            data["op"],
            data.get("args") or {},
            data.get("result"),
        )


def outcome_of(error: BaseException, *, write: bool) -> str:
    """``fail`` when ``error`` proves the operation had no effect, else ``info``.

    Reads have no effect to worry about: any error fails them.  For writes only a
    request that never left the client, or one refused before it was proposed,
    is a definite failure; a timeout or a broken connection leaves it unknown.
    """
    if not write:
        return FAIL
    if isinstance(error, (errors.ConnectionFailedError, errors.LockLostError)):
        return FAIL
    if isinstance(error, (errors.ClientError, errors.AuthError)):
        return FAIL  # refused by the server's checks: nothing was proposed
    return INFO


class History:
    """A thread-safe, append-only list of :class:`Entry`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[Entry] = []

    def record(
        self,
        actor: str,
        kind: str,
        op: str,
        args: dict[str, Any] | None = None,
        result: Any = None,
        *,
        at: float | None = None,
    ) -> Entry:
        entry = Entry(time.monotonic() if at is None else at, actor, kind, op, args or {}, result)
        with self._lock:
            self._entries.append(entry)
        return entry

    def event(self, actor: str, op: str, **args: Any) -> Entry:
        """Record something that happened at once (a fault injected, a member restarted)."""
        return self.record(actor, OK, op, args)

    def extend(self, entries: Iterable[Entry]) -> None:
        with self._lock:
            self._entries.extend(entries)

    def add_json_line(self, line: str) -> bool:
        """Add a worker's JSON line; False if the line is not a history entry."""
        if not line.startswith("{"):
            return False
        try:
            entry = Entry.from_json(line)
        except (ValueError, KeyError):
            return False
        self.extend([entry])
        return True

    @property
    def entries(self) -> list[Entry]:
        """Every entry so far, in time order."""
        with self._lock:
            return sorted(self._entries, key=lambda e: e.time)

    def select(
        self, op: str | None = None, kind: str | None = None, actor: str | None = None
    ) -> list[Entry]:
        return [
            e
            for e in self.entries
            if (op is None or e.op == op)
            and (kind is None or e.kind == kind)
            and (actor is None or e.actor == actor)
        ]

    def first(self, op: str, kind: str = OK, *, after: float = float("-inf")) -> Entry | None:
        """The earliest ``op`` of ``kind`` recorded after time ``after``."""
        return next((e for e in self.select(op, kind) if e.time > after), None)

    def dump(self, path: Path) -> None:
        path.write_text("".join(e.to_json() + "\n" for e in self.entries))

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)


class Recorder:
    """Records one actor's operations into a history (or prints them as JSON lines,
    in a worker process)."""

    def __init__(self, actor: str, history: History | None = None) -> None:
        self.actor = actor
        self._history = history

    def _emit(self, kind: str, op: str, args: dict[str, Any], result: Any) -> None:
        if self._history is not None:
            self._history.record(self.actor, kind, op, args, result)
        else:
            entry = Entry(time.monotonic(), self.actor, kind, op, args, result)
            print(entry.to_json(), flush=True)

    def invoke(self, op: str, **args: Any) -> None:
        self._emit(INVOKE, op, args, None)

    def ok(self, op: str, result: Any = None, **args: Any) -> None:
        self._emit(OK, op, args, result)

    def fail(self, op: str, result: Any = None, **args: Any) -> None:
        self._emit(FAIL, op, args, result)

    def info(self, op: str, result: Any = None, **args: Any) -> None:
        self._emit(INFO, op, args, result)

    def error(self, op: str, error: BaseException, *, write: bool, **args: Any) -> str:
        """Record the completion of ``op`` by ``error``; return its kind."""
        kind = outcome_of(error, write=write)
        self._emit(kind, op, args, f"{type(error).__name__}: {error}")
        return kind


# --- checks -------------------------------------------------------------------------------


@dataclass
class FencingReport:
    """What :func:`check_fenced_effects` found."""

    effects: int = 0
    holds: int = 0
    overlaps: list[str] = field(default_factory=list)
    lost_updates: list[str] = field(default_factory=list)


def check_fenced_effects(effects: Sequence[tuple[int, int, int, str]]) -> FencingReport:
    """Check guarded effects in commit order: ``(revision, token, value, actor)`` each.

    * the fencing tokens never go back: once a write with a newer token committed,
      no write of an older holder may follow (that would be two holders' effects
      interleaving - a mutual exclusion violation);
    * each effect is a read-modify-write of a counter made under the lock, so each
      committed value is the previous one + 1: anything else is a lost update.
    """
    report = FencingReport(effects=len(effects))
    ordered = sorted(effects)
    seen_tokens: set[int] = set()
    current = -1
    previous_value: int | None = None
    for revision, token, value, actor in ordered:
        if token != current:
            if token < current or token in seen_tokens:
                report.overlaps.append(
                    f"revision {revision}: {actor} wrote with token {token} after token "
                    f"{current} had written"
                )
            else:
                report.holds += 1
            seen_tokens.add(token)
            current = max(current, token)
        if previous_value is not None and value != previous_value + 1:
            report.lost_updates.append(
                f"revision {revision}: {actor} wrote {value} after {previous_value}"
            )
        previous_value = value
    return report


@dataclass
class AckReport:
    """What :func:`check_acknowledged` found."""

    ok: int = 0
    failed: int = 0
    indeterminate: int = 0
    indeterminate_committed: int = 0
    acknowledged_missing: list[str] = field(default_factory=list)
    failed_but_committed: list[str] = field(default_factory=list)
    committed_unknown: list[str] = field(default_factory=list)
    applied_twice: list[str] = field(default_factory=list)


def check_acknowledged(
    history: History, op: str, committed: Sequence[str], *, id_arg: str = "id"
) -> AckReport:
    """Compare what writers were told about ``op`` with the ids the store holds.

    ``committed`` lists the ids found in the store's history (with repetitions, if
    an id was applied twice).  Every ``ok`` must be there, no ``fail`` may be, each
    id at most once, and nothing else (an ``info`` may or may not be there).
    """
    report = AckReport()
    outcome: dict[str, str] = {}
    for entry in history.select(op):
        if entry.kind == INVOKE:
            continue
        outcome[str(entry.args[id_arg])] = entry.kind
    counts: dict[str, int] = {}
    for ident in committed:
        counts[ident] = counts.get(ident, 0) + 1
    report.applied_twice = sorted(i for i, n in counts.items() if n > 1)
    for ident, kind in outcome.items():
        if kind == OK:
            report.ok += 1
            if ident not in counts:
                report.acknowledged_missing.append(ident)
        elif kind == FAIL:
            report.failed += 1
            if ident in counts:
                report.failed_but_committed.append(ident)
        else:
            report.indeterminate += 1
            report.indeterminate_committed += ident in counts
    report.committed_unknown = sorted(i for i in counts if i not in outcome)
    return report


@dataclass
class DeliveryReport:
    """What :func:`check_delivery` found for one watcher."""

    expected: int = 0
    received: int = 0
    lost: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    out_of_order: list[tuple[int, int]] = field(default_factory=list)
    wrong_revision: list[str] = field(default_factory=list)


def check_delivery(
    received: Sequence[tuple[int, bytes]], expected: Sequence[tuple[int, bytes]]
) -> DeliveryReport:
    """Compare a watcher's ``(revision, key)`` events with the store's history."""
    report = DeliveryReport(expected=len(expected), received=len(received))
    revisions = [rev for rev, _ in received]
    seen: set[int] = set()
    for rev in revisions:
        if rev in seen:
            report.duplicated.append(rev)
        seen.add(rev)
    report.out_of_order = [(a, b) for a, b in itertools.pairwise(revisions) if b <= a]
    wanted = dict(expected)
    report.lost = sorted(set(wanted) - seen)
    for rev, key in received:
        if rev in wanted and wanted[rev] != key:
            report.wrong_revision.append(f"revision {rev}: got {key!r}, store has {wanted[rev]!r}")
        elif rev not in wanted:
            report.wrong_revision.append(f"revision {rev} ({key!r}) is not in the store's history")
    return report


def resume_points(received: Sequence[tuple[float, int]], after: float) -> tuple[int, int] | None:
    """``(last revision before, first revision after)`` time ``after`` in a watcher's
    ``(time, revision)`` log: a lossless resume has ``first == last + 1`` when every
    revision of the cluster falls in the watched range."""
    before = [rev for t, rev in received if t <= after]
    later = [rev for t, rev in received if t > after]
    if not before or not later:
        return None
    return before[-1], later[0]
