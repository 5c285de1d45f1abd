"""Public types of live config views: the immutable snapshot; pure and IO-free."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["ConfigSnapshot", "Validator"]


class ConfigSnapshot(Mapping[str, Any]):
    """The decoded keys of a prefix at one store revision, read-only.

    Keys are relative to the watched prefix (``"db/port"`` for
    ``services/api/db/port`` under ``services/api/``); values are decoded.
    ``revision`` is the store revision the snapshot reflects: every change up to
    it is included, none after it.  ``value`` is the model instance built from
    it when the watcher has a ``model=`` (None otherwise).  A snapshot never
    changes; the watcher replaces it with a new one.  Decoded values (e.g. JSON
    objects) are shared between the snapshot and its readers: treat them as
    read-only too.
    """

    __slots__ = ("_data", "_revision", "_value")

    def __init__(self, data: Mapping[str, Any], revision: int, value: Any = None) -> None:
        self._data = dict(data)
        self._revision = revision
        self._value = value

    @property
    def revision(self) -> int:
        """The store revision this snapshot reflects."""
        return self._revision

    @property
    def value(self) -> Any:
        """The model instance built from this snapshot (``config(..., model=...)``),
        or None when the watcher has no model."""
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def to_dict(self) -> dict[str, Any]:
        """A new (shallow) ``dict`` copy of the snapshot's keys and values."""
        return dict(self._data)

    def __repr__(self) -> str:
        return f"ConfigSnapshot(revision={self._revision}, {self._data!r})"


Validator = Callable[[ConfigSnapshot], object]
"""Checks a candidate snapshot: raise (or return ``False``) to reject it."""
