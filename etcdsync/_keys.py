"""Key and value encoding, and the range-end arithmetic etcd uses for prefixes."""

from __future__ import annotations

from .errors import InvalidRequest, KeyEmptyError

KeyLike = str | bytes
"""A key or value: ``str`` is encoded as UTF-8, ``bytes`` is sent as is."""

# etcd reads a range_end of a single zero byte as "to the end of the keyspace".
ALL_KEYS_END = b"\0"


def to_bytes(data: object, what: str = "key") -> bytes:
    """Encode a key or value; anything but str/bytes-like is a typed error."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate has no UTF-8 form
            raise InvalidRequest(
                f"{what} {data!r} cannot be encoded as UTF-8 ({exc.reason} at position "
                f"{exc.start}); pass bytes for keys that are not text"
            ) from None
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise InvalidRequest(f"{what} must be str or bytes, not {type(data).__name__}")


def to_key(key: object, *, allow_empty: bool = False) -> bytes:
    """Encode a key, refusing an empty one unless the caller ranges from it."""
    raw = to_bytes(key, "key")
    if not raw and not allow_empty:
        raise KeyEmptyError("key must not be empty")
    return raw


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with ``prefix``.

    Trailing 0xff bytes cannot be incremented, so they are dropped first; a
    prefix made only of 0xff bytes (or empty) ranges to the end of the keyspace.
    """
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return ALL_KEYS_END
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def key_range(
    key: object,
    *,
    range_end: object | None = None,
    prefix: bool = False,
    from_key: bool = False,
) -> tuple[bytes, bytes]:
    """Resolve the (key, range_end) pair of a ranged request.

    Exactly one of ``range_end``, ``prefix`` and ``from_key`` may be given.  An
    empty key is allowed with ``prefix`` (every key) or ``from_key`` (every key
    from the start), as in the Go client.
    """
    chosen = sum((range_end is not None, prefix, from_key))
    if chosen > 1:
        raise InvalidRequest("give at most one of range_end, prefix and from_key")
    if prefix or from_key:
        raw = to_key(key, allow_empty=True)
        if prefix:
            return (raw or ALL_KEYS_END), (prefix_end(raw) if raw else ALL_KEYS_END)
        return (raw or ALL_KEYS_END), ALL_KEYS_END
    raw = to_key(key)
    if range_end is None:
        return raw, b""
    return raw, to_bytes(range_end, "range_end")
