"""How the library logs what happens to a recipe: levels and structured fields.

Every logger of the library is a child of ``etcdsync`` (``etcdsync.election``,
``etcdsync.lock``...), so one ``logging.getLogger("etcdsync")`` configures them all.

Levels follow one rule: what the program did itself (closing its client or
session at shutdown, a resign, a release) is DEBUG or INFO; what happened *to* it
(a lease that expired, a key deleted by someone else, a request that failed and
leaves something behind) is WARNING.  :func:`loss_level` makes that call for a
loss, from its error and the errors it was caused by.

The records about a recipe carry these attributes (logging's ``extra=``), so a
JSON formatter or a filter can use them without parsing the message:

``recipe``
    the kind: ``"election"``, ``"group"``, ``"service"``, ``"partitioner"``,
    ``"config"``, ``"session"``...
``recipe_name``
    the recipe's name (an election's or lock's name, a config prefix); None if none
``key``
    the key concerned, as text (None if none)
``lease``
    the lease id in hex, as etcdctl prints it (None if none)
``event``
    what happened, a short word: ``"lost"``, ``"resign-failed"``, ``"reloaded"``...
"""

from __future__ import annotations

import logging
from typing import Any

from . import errors

__all__ = ["fields", "is_shutdown", "loss_level", "recipe_logger"]


def recipe_logger(name: str) -> logging.Logger:
    """The logger ``etcdsync.<name>``."""
    return logging.getLogger(f"etcdsync.{name}")


def _text(key: bytes | str | None) -> str | None:
    if key is None or isinstance(key, str):
        return key
    return key.decode("utf-8", "replace")


def fields(
    recipe: str,
    name: str | bytes | None = None,
    *,
    key: bytes | str | None = None,
    lease_id: int | None = None,
    event: str | None = None,
) -> dict[str, Any]:
    """The ``extra=`` of a record about a recipe (see the module's docstring)."""
    return {
        "recipe": recipe,
        "recipe_name": _text(name),
        "key": _text(key),
        "lease": None if not lease_id else f"{lease_id:x}",
        "event": event,
    }


def is_shutdown(error: BaseException | None) -> bool:
    """True when ``error`` (or what caused it) says this process closed the session
    or the client itself: an expected end, not a failure."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, errors.ClientClosedError):
            return True
        seen.add(id(error))
        error = error.__cause__
    return False


def loss_level(error: BaseException | None) -> int:
    """INFO for a hold that ended because this process closed its session or client;
    WARNING for a real loss (lease expired or revoked elsewhere, key deleted)."""
    return logging.INFO if is_shutdown(error) else logging.WARNING
