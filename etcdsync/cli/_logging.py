"""The library's log records, shown the CLI's way: once, on one line, in its voice.

Without this, Python's last-resort handler prints every WARNING of the library bare,
and a command that reports the same event itself (``elect`` and ``lock`` say when
what they hold is lost, and exit 3) printed it twice.  :func:`setup_logging` sends
the ``etcdsync`` loggers' WARNINGs to stderr as ``etcdsync: warning: ...``;
:func:`reported_by_command` names the events (the ``event`` field of a record, see
:mod:`etcdsync._logfields`) that the running command reports itself, whose
records are then left out.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["reported_by_command", "setup_logging"]

_reported: set[str] = set()


class _CliHandler(logging.Handler):
    """``etcdsync: warning: <message>`` on stderr, skipping the command's own events."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "event", None) in _reported:
            return False
        return super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split())
            print(f"etcdsync: {record.levelname.lower()}: {text}", file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


def setup_logging() -> None:
    """Show the library's WARNINGs (and worse) once each on stderr; idempotent."""
    _reported.clear()
    library = logging.getLogger("etcdsync")
    if not any(isinstance(h, _CliHandler) for h in library.handlers):
        library.addHandler(_CliHandler(logging.WARNING))


def reported_by_command(*events: str) -> None:
    """The running command prints these events itself: leave the library's records
    of them out (``"lost"``: a lock or leadership lost)."""
    _reported.update(events)
