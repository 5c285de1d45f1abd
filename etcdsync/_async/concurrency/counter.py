"""Counter: an integer in one key, changed atomically by compare-and-swap.

The counter is the key ``name`` itself, holding the value as decimal text (so
``etcdctl get <name>`` shows it); an absent key reads as ``initial``.  A change
is one txn: *if the key's mod revision is still the one I saw, write the new
value; else give me the current one*.  The handle remembers the last value and
revision it saw, so an uncontended change is one round trip and a contended one
costs one more per writer that got in first.  Optional bounds are checked
against a value the compare proves current: a change that would cross one
raises :class:`~etcdsync.errors.CounterBoundsError` and writes nothing.
"""

from __future__ import annotations

import re

from ... import errors
from ..._deadline import Deadline
from ..._keys import to_key
from ...models import GetResponse, KeyValue
from ...ops import Compare, Op
from ..protocol import AsyncKVClient

__all__ = ["AsyncCounter"]

_DECIMAL = re.compile(rb"-?[0-9]+")

# The absent key, as the handle's last view: compares as "mod revision 0".
_ABSENT = (0, None)


def _check_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.InvalidRequest(f"{name} must be an int, got {value!r}")
    return value


class AsyncCounter:
    """A distributed integer counter; create with ``client.counter(name)``.

    ::

        hits = etcd.counter("stats/hits")
        await hits.add()          # -> the new value
        await hits.subtract(3)
        await hits.value()

    ``min`` / ``max`` (inclusive, optional) bound the value: :meth:`add`,
    :meth:`subtract` and :meth:`set` refuse a change that would leave them with
    :class:`~etcdsync.errors.CounterBoundsError`, changing nothing.  Every
    handle on one name must use the same ``initial`` (the value of the absent
    key).  A handle may be shared by tasks or threads: each change is atomic in
    etcd, whatever the handle last saw.
    """

    def __init__(
        self,
        client: AsyncKVClient,
        name: str,
        *,
        initial: int = 0,
        min: int | None = None,
        max: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise errors.InvalidRequest(f"a counter name must be a non-empty str, got {name!r}")
        _check_int("initial", initial)
        if min is not None:
            _check_int("min", min)
        if max is not None:
            _check_int("max", max)
        if min is not None and max is not None and min > max:
            raise errors.InvalidRequest(f"min ({min}) must not exceed max ({max})")
        if (min is not None and initial < min) or (max is not None and initial > max):
            raise errors.InvalidRequest(f"initial ({initial}) lies outside [{min}, {max}]")
        self._client = client
        self._name = name
        self._key = to_key(name)
        self._initial = initial
        self._min = min
        self._max = max
        # (mod revision, value) last seen: a guess for the next compare-and-swap.
        self._seen: tuple[int, int | None] = _ABSENT

    @property
    def name(self) -> str:
        return self._name

    @property
    def initial(self) -> int:
        return self._initial

    @property
    def min(self) -> int | None:
        return self._min

    @property
    def max(self) -> int | None:
        return self._max

    # --- reads ------------------------------------------------------------------------------

    def _decode(self, kv: KeyValue | None) -> tuple[int, int | None]:
        """(mod revision, value) of the key as read; (0, None) when absent."""
        if kv is None:
            return _ABSENT
        if not _DECIMAL.fullmatch(kv.value):
            raise errors.CounterValueError(
                f"counter {self._name!r} holds {kv.value[:40]!r}, not a decimal integer",
                key=self._key,
                raw=kv.value,
            )
        return kv.mod_revision, int(kv.value)

    async def value(self, *, timeout: float | None = None) -> int:
        """The current value (``initial`` while the key does not exist)."""
        response = await self._client.get(self._key, timeout=timeout)
        self._seen = self._decode(response.kv)
        number = self._seen[1]
        return self._initial if number is None else number

    # --- changes -----------------------------------------------------------------------------

    def _check_bounds(self, current: int | None, requested: int) -> None:
        if self._min is not None and requested < self._min:
            bound = self._min
        elif self._max is not None and requested > self._max:
            bound = self._max
        else:
            return
        change = f"{current} -> {requested}" if current is not None else f"set to {requested}"
        raise errors.CounterBoundsError(
            f"counter {self._name!r}: {change} would cross the bound {bound}; nothing changed",
            value=current,
            requested=requested,
            bound=bound,
        )

    async def add(self, n: int = 1, *, timeout: float | None = None) -> int:
        """Add ``n`` (may be negative) atomically; return the new value.

        Raises :class:`~etcdsync.errors.CounterBoundsError` (nothing written) if
        the result would cross a bound, :class:`~etcdsync.errors.CounterTimeout`
        (nothing written) when ``timeout`` passes between attempts.  A
        :class:`~etcdsync.errors.Timeout` or :class:`~etcdsync.errors.Unavailable`
        from the write itself means its outcome is unknown.
        """
        _check_int("n", n)
        deadline = Deadline(timeout)
        seen = self._seen
        fresh = False  # True when `seen` comes from a read this call made
        while True:
            revision, number = seen
            current = self._initial if number is None else number
            requested = current + n
            try:
                self._check_bounds(current, requested)
            except errors.CounterBoundsError:
                if fresh:
                    self._seen = seen
                    raise
                seen, fresh = self._decode(await self._read(deadline)), True
                continue
            response = await self._client.txn(
                compare=[Compare.mod_revision(self._key) == revision],
                success=[Op.put(self._key, str(requested))],
                failure=[Op.get(self._key)],
                timeout=deadline.rpc_timeout(),
            )
            if response.succeeded:
                self._seen = (response.revision, requested)
                return requested
            got = response.responses[0]
            assert isinstance(got, GetResponse)
            seen, fresh = self._decode(got.kv), True
            if deadline.expired():
                self._seen = seen
                raise errors.CounterTimeout(
                    f"counter {self._name!r}: no change made before the deadline"
                )

    async def subtract(self, n: int = 1, *, timeout: float | None = None) -> int:
        """Subtract ``n`` atomically; return the new value (see :meth:`add`)."""
        return await self.add(-_check_int("n", n), timeout=timeout)

    async def set(self, value: int, *, timeout: float | None = None) -> int:
        """Overwrite the value (a blind write, within the bounds); return it."""
        _check_int("value", value)
        self._check_bounds(None, value)
        response = await self._client.put(self._key, str(value), timeout=timeout)
        self._seen = (response.revision, value)
        return value

    async def reset(self, *, timeout: float | None = None) -> None:
        """Delete the key: the counter reads ``initial`` again and leaves nothing behind."""
        await self._client.delete(self._key, timeout=timeout)
        self._seen = _ABSENT

    async def _read(self, deadline: Deadline) -> KeyValue | None:
        response = await self._client.get(self._key, timeout=deadline.rpc_timeout())
        return response.kv

    def __repr__(self) -> str:
        bounds = f" min={self._min}" if self._min is not None else ""
        bounds += f" max={self._max}" if self._max is not None else ""
        return f"<{type(self).__name__} {self._name!r}{bounds}>"
