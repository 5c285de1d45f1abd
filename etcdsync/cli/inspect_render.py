"""Drawing for ``etcdsync inspect``: a JSON document, rich tables, or plain text.

:func:`to_json` turns a :class:`~.inspect_layout.Report` into the documented JSON
document (schema ``etcdsync.inspect/1``, see ``docs/inspect.md``).  :func:`render`
draws it as one table per recipe kind, with ``rich`` when it is installed (the
``etcdsync[cli]`` extra) and as aligned plain text otherwise; both show the same
rows and columns.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .inspect_layout import Age, Contender, Report, SessionFinding, Tenure

__all__ = ["SCHEMA", "Table", "render_plain", "rich_available", "tables", "to_json"]

SCHEMA = "etcdsync.inspect/1"


# --- JSON ----------------------------------------------------------------------------------


def _age_json(age: Age) -> dict[str, Any]:
    return {"revisions": age.revisions, "seconds": _round(age.seconds), "exact": age.exact}


def _tenure_json(tenure: Tenure | None) -> dict[str, Any] | None:
    if tenure is None:
        return None
    return {
        "since_revision": tenure.since_revision,
        "revisions": tenure.revisions,
        "seconds": _round(tenure.seconds),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _lease_hex(lease: int) -> str | None:
    return f"{lease:x}" if lease else None


class _Json:
    def __init__(self, report: Report) -> None:
        self.ttl = {s.lease: s.ttl for s in report.sessions}

    def contender(self, c: Contender, **extra: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "key": c.key,
            "lease": _lease_hex(c.lease),
            "lease_id": c.lease,
            "ttl": self.ttl.get(c.lease) if c.lease else None,
            "value": c.value.decode("utf-8", "replace"),
            "create_revision": c.create_revision,
            "mod_revision": c.mod_revision,
            "age": _age_json(c.age),
        }
        if c.side is not None:
            doc["side"] = c.side
        doc.update(extra)
        return doc

    def many(self, items: Sequence[Contender] | None) -> list[dict[str, Any]] | None:
        return None if items is None else [self.contender(c) for c in items]


def to_json(report: Report, *, watching: bool = False) -> dict[str, Any]:
    """The report as a JSON-ready dict (schema ``etcdsync.inspect/1``)."""
    j = _Json(report)
    return {
        "schema": SCHEMA,
        "prefix": report.prefix,
        "revision": report.revision,
        "time": time.time(),
        "watching": watching,
        "locks": [
            {
                "name": f.name,
                "holder": j.contender(f.head) if f.head else None,
                "held": _tenure_json(f.tenure),
                "waiters": j.many(f.waiters),
            }
            for f in report.locks
        ],
        "elections": [
            {
                "name": f.name,
                "leader": j.contender(f.head) if f.head else None,
                "term": {
                    "revision": f.head.create_revision if f.head else None,
                    "age": _age_json(f.head.age) if f.head else None,
                    "leading": _tenure_json(f.tenure),
                },
                "candidates": j.many(f.waiters),
            }
            for f in report.elections
        ],
        "rwlocks": [
            {
                "name": f.name,
                "mode": f.mode,
                "holders": j.many(f.holders),
                "waiters": j.many(f.waiters),
            }
            for f in report.rwlocks
        ],
        "semaphores": [
            {
                "name": f.name,
                "limit": f.limit,
                "holders": j.many(f.holders),
                "waiters": j.many(f.waiters),
                "contenders": j.many(f.contenders),
            }
            for f in report.semaphores
        ],
        "queues": [
            {
                "name": f.name,
                "type": f.kind,
                "items": f.items,
                "claims": j.many(f.claimed) if f.kind == "locking_queue" else None,
                "oldest_item_seconds": _round(f.oldest_item_seconds),
                "by_priority": {str(k): v for k, v in f.by_priority.items()}
                if f.kind == "priority_queue"
                else None,
            }
            for f in report.queues
        ],
        "double_barriers": [
            {"name": f.name, "ready": f.ready, "participants": j.many(f.participants)}
            for f in report.double_barriers
        ],
        "lease_once": [
            {"name": f.name, "slots": [j.contender(c, slot=i) for i, c in f.slots]}
            for f in report.lease_once
        ],
        "partitioners": [
            {
                "name": f.name,
                "members": j.many(f.members),
                "owners": [j.contender(c, item=item) for item, c in f.owners],
            }
            for f in report.partitioners
        ],
        "sessions": [_session_json(s) for s in report.sessions],
        "other_keys": report.other_keys,
    }


def _session_json(s: SessionFinding) -> dict[str, Any]:
    return {
        "lease": f"{s.lease:x}",
        "lease_id": s.lease,
        "alive": s.alive,
        "ttl": s.ttl,
        "granted_ttl": s.granted_ttl,
        "keys": list(s.keys),
        "roles": dict(s.roles),
    }


# --- tables (shared by rich and plain text) ------------------------------------------------


class Table:
    """One titled table of text cells: what both renderers draw."""

    def __init__(self, title: str, columns: Sequence[str]) -> None:
        self.title = title
        self.columns = list(columns)
        self.rows: list[list[str]] = []

    def add(self, *cells: str) -> None:
        self.rows.append(list(cells))


def _seconds(value: float | None, exact: bool = True) -> str:
    if value is None:
        return ""
    text = f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"
    return text if exact else f">={text}"


def fmt_age(age: Age) -> str:
    """``+12 rev`` and, in watch mode, ``3.2 s`` (exact) or ``>=3.2 s`` (lower bound)."""
    parts = [f"+{age.revisions} rev"]
    if age.seconds is not None:
        parts.append(_seconds(age.seconds, age.exact))
    return ", ".join(parts)


def fmt_tenure(tenure: Tenure | None, age: Age) -> str:
    if tenure is None or tenure.since_revision is None:
        return f"<= key age ({fmt_age(age)})"
    return (
        f"since rev {tenure.since_revision} (+{tenure.revisions} rev, {_seconds(tenure.seconds)})"
    )


def _value(raw: bytes, limit: int = 40) -> str:
    text = raw.decode("utf-8", "replace").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ttl(sessions: dict[int, SessionFinding], lease: int) -> str:
    s = sessions.get(lease)
    if not lease:
        return ""
    if s is None or not s.alive:
        return "gone"
    return f"{s.ttl}/{s.granted_ttl} s"


def _under(key: str, name: str) -> str:
    """A contender's key under its recipe's name (the name has its own column)."""
    return key[len(name) + 1 :] if key.startswith(name + "/") else key


def tables(report: Report) -> list[Table]:
    """The report as titled tables, one per recipe kind found (sessions last)."""
    sessions = {s.lease: s for s in report.sessions}
    out: list[Table] = []

    def lease(c: Contender) -> str:
        return f"{c.lease:x}" if c.lease else ""

    if report.locks:
        t = Table(
            "Locks",
            ["lock", "role", "key under name/", "lease", "ttl left", "held / waited", "value"],
        )
        for f in report.locks:
            if f.head is not None:
                t.add(
                    f.name,
                    "holder",
                    _under(f.head.key, f.name),
                    lease(f.head),
                    _ttl(sessions, f.head.lease),
                    fmt_tenure(f.tenure, f.head.age),
                    _value(f.head.value),
                )
            for i, w in enumerate(f.waiters, 1):
                t.add(
                    f.name,
                    f"waiter {i}",
                    _under(w.key, f.name),
                    lease(w),
                    _ttl(sessions, w.lease),
                    fmt_age(w.age),
                    _value(w.value),
                )
        out.append(t)
    if report.elections:
        t = Table(
            "Elections",
            ["election", "role", "value", "key under name/", "lease", "ttl left", "term / waited"],
        )
        for f in report.elections:
            if f.head is not None:
                term = f"rev {f.head.create_revision}, {fmt_tenure(f.tenure, f.head.age)}"
                t.add(
                    f.name,
                    "leader",
                    _value(f.head.value),
                    _under(f.head.key, f.name),
                    lease(f.head),
                    _ttl(sessions, f.head.lease),
                    term,
                )
            for i, w in enumerate(f.waiters, 1):
                t.add(
                    f.name,
                    f"candidate {i}",
                    _value(w.value),
                    _under(w.key, f.name),
                    lease(w),
                    _ttl(sessions, w.lease),
                    fmt_age(w.age),
                )
        out.append(t)
    if report.rwlocks:
        t = Table(
            "Readers-writer locks",
            ["rwlock", "role", "key under name/", "lease", "ttl left", "age"],
        )
        for rw in report.rwlocks:
            for c in rw.holders:
                t.add(
                    rw.name,
                    f"{c.side} holder",
                    _under(c.key, rw.name),
                    lease(c),
                    _ttl(sessions, c.lease),
                    fmt_age(c.age),
                )
            for i, c in enumerate(rw.waiters, 1):
                t.add(
                    rw.name,
                    f"{c.side} waiter {i}",
                    _under(c.key, rw.name),
                    lease(c),
                    _ttl(sessions, c.lease),
                    fmt_age(c.age),
                )
        out.append(t)
    if report.semaphores:
        t = Table(
            "Semaphores", ["semaphore", "role", "key under name/", "lease", "ttl left", "age"]
        )
        for sem in report.semaphores:
            limit = sem.limit
            for i, c in enumerate(sem.contenders, 1):
                if limit is None:
                    role = f"contender {i} (limit unknown)"
                elif i <= limit:
                    role = f"holder {i}/{limit}"
                else:
                    role = f"waiter {i - limit}"
                t.add(
                    sem.name,
                    role,
                    _under(c.key, sem.name),
                    lease(c),
                    _ttl(sessions, c.lease),
                    fmt_age(c.age),
                )
        out.append(t)
    if report.queues:
        t = Table("Queues", ["queue", "type", "items", "claimed", "oldest item"])
        for q in report.queues:
            detail = ""
            if q.by_priority:
                detail = " (" + ", ".join(f"p{k}: {v}" for k, v in q.by_priority.items()) + ")"
            t.add(
                q.name,
                q.kind,
                f"{q.items}{detail}",
                str(len(q.claimed)) if q.kind == "locking_queue" else "",
                _seconds(q.oldest_item_seconds)
                + (" (producer clock)" if q.oldest_item_seconds is not None else ""),
            )
        out.append(t)
    if report.double_barriers:
        t = Table("Double barriers", ["barrier", "participants", "ready", "oldest arrival"])
        for b in report.double_barriers:
            oldest = fmt_age(b.participants[0].age) if b.participants else ""
            t.add(b.name, str(len(b.participants)), "yes" if b.ready else "no", oldest)
        out.append(t)
    if report.lease_once:
        t = Table("Run-once leases", ["name", "slot", "value", "lease", "period left"])
        for lo in report.lease_once:
            for i, c in lo.slots:
                t.add(lo.name, str(i), _value(c.value), lease(c), _ttl(sessions, c.lease))
        out.append(t)
    if report.partitioners:
        t = Table(
            "Partitioners", ["partitioner", "member", "value", "lease", "ttl left", "items owned"]
        )
        for pf in report.partitioners:
            owned: dict[int, list[str]] = {}
            for item, c in pf.owners:
                owned.setdefault(c.lease, []).append(item)
            for c in pf.members:
                items = owned.get(c.lease, [])
                t.add(
                    pf.name,
                    _under(c.key, pf.name + "/members"),
                    _value(c.value),
                    lease(c),
                    _ttl(sessions, c.lease),
                    f"{len(items)}: " + ", ".join(items[:8]) + (", ..." if len(items) > 8 else "")
                    if items
                    else "0",
                )
        out.append(t)
    if report.sessions:
        t = Table("Sessions (leases)", ["lease", "ttl left", "keys kept alive", "roles"])
        for s in report.sessions:
            ttl = f"{s.ttl}/{s.granted_ttl} s" if s.alive else "gone"
            t.add(
                f"{s.lease:x}",
                ttl,
                "\n".join(s.keys),
                "\n".join(s.roles.get(key, "-") for key in s.keys),
            )
        out.append(t)
    return out


def heading(report: Report, *, watching: bool) -> str:
    clock = time.strftime("%H:%M:%S")
    where = report.prefix or "(all keys)"
    mode = "watching" if watching else "read"
    return f"etcdsync inspect {where} - revision {report.revision} - {mode} at {clock}"


LEGEND = (
    "ages: +N rev = writes to the store since the key was created; "
    "s = since inspect first saw it (>= : it existed before inspect started)"
)


def _summary(report: Report) -> str:
    if not any(
        (
            report.locks,
            report.elections,
            report.rwlocks,
            report.semaphores,
            report.queues,
            report.double_barriers,
            report.lease_once,
            report.partitioners,
            report.sessions,
        )
    ):
        found = "no recipe found"
    else:
        found = ""
    other = f"{report.other_keys} other key(s)" if report.other_keys else ""
    if report.other_examples:
        other += (
            " ("
            + ", ".join(report.other_examples)
            + (", ..." if report.other_keys > 5 else "")
            + ")"
        )
    return "; ".join(p for p in (found, other) if p)


# --- plain text ----------------------------------------------------------------------------


def _plain_table(t: Table) -> list[str]:
    # Multi-line cells (a session's keys) become extra lines of the row.
    lines_rows: list[list[list[str]]] = [[cell.split("\n") for cell in row] for row in t.rows]
    widths = [len(c) for c in t.columns]
    for row in lines_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], *(len(line) for line in cell))
    out = [
        t.title,
        "  "
        + "  ".join(c.upper().ljust(w) for c, w in zip(t.columns, widths, strict=True)).rstrip(),
    ]
    for row in lines_rows:
        height = max(len(cell) for cell in row)
        for n in range(height):
            cells = [cell[n] if n < len(cell) else "" for cell in row]
            out.append(
                "  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
            )
    return out


def render_plain(report: Report, *, watching: bool = False) -> str:
    """The report as aligned plain text."""
    lines = [heading(report, watching=watching), LEGEND]
    for t in tables(report):
        lines += ["", *_plain_table(t)]
    summary = _summary(report)
    if summary:
        lines += ["", summary]
    return "\n".join(lines)


# --- rich ----------------------------------------------------------------------------------


def rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def render_rich(report: Report, *, watching: bool = False) -> Any:
    """The report as a rich renderable (a group of tables); needs ``rich``."""
    from rich import box
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    parts: list[Any] = [
        Text(heading(report, watching=watching), style="bold"),
        Text(LEGEND, style="dim"),
    ]
    for t in tables(report):
        table = RichTable(title=t.title, title_justify="left", box=box.SIMPLE_HEAD, expand=False)
        for column in t.columns:
            table.add_column(column, overflow="fold")
        for row in t.rows:
            style = (
                "bold"
                if row[1].startswith(("holder", "leader", "read holder", "write holder"))
                else None
            )
            table.add_row(*row, style=style)
        parts.append(table)
    summary = _summary(report)
    if summary:
        parts.append(Text(summary, style="dim"))
    return Group(*parts)
