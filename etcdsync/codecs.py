"""Value decoders for live config views; pure and IO-free.

A decoder turns the bytes stored at a key into the value a program uses.  The
built-in ones are named: ``"json"`` (:data:`DEFAULT_DECODER`, the default of
``client.config()`` and of ``etcdsync config get|watch``), ``"auto"`` (JSON when
the value parses as JSON, else UTF-8 text), ``"text"`` (UTF-8 ``str``) and
``"raw"`` (the bytes as stored).  Any callable
taking ``bytes`` works too (``yaml.safe_load``, ``int``, a pydantic model's
``model_validate_json``...).  A decoder signals a bad value by raising: the
config watcher then rejects the whole update and keeps the last good config.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .errors import InvalidRequest

__all__ = [
    "DECODERS",
    "DEFAULT_DECODER",
    "Decoder",
    "decode_auto",
    "decode_json",
    "decode_raw",
    "decode_text",
    "resolve_decoder",
]

Decoder = Callable[[bytes], Any]
"""A function from the stored bytes to the decoded value; raises on a bad value."""


def decode_json(raw: bytes) -> Any:
    """Parse the value as JSON (UTF-8); an empty value is invalid JSON."""
    return json.loads(raw)


def decode_text(raw: bytes) -> str:
    """Decode the value as UTF-8 text."""
    return raw.decode("utf-8")


def decode_raw(raw: bytes) -> bytes:
    """Keep the value as stored."""
    return raw


def decode_auto(raw: bytes) -> Any:
    """JSON when the value parses as JSON, else UTF-8 text.

    Lenient: an unquoted ``db2`` is the string ``"db2"``, but so is a broken
    ``{"port": 80`` - prefer ``"json"`` (with a typed ``model=``, a value of the
    wrong type is still refused).
    """
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8")


DECODERS: dict[str, Decoder] = {
    "json": decode_json,
    "auto": decode_auto,
    "text": decode_text,
    "raw": decode_raw,
}
"""The named decoders ``client.config(decode=...)`` accepts."""

DEFAULT_DECODER = "json"
"""The one default of the library (``client.config()``) and the CLI (``etcdsync config
get|watch``): strict JSON, so the CLI refuses exactly the values a service refuses
(an unquoted ``db2`` is not JSON: store ``"db2"``)."""


def resolve_decoder(decode: str | Decoder) -> Decoder:
    """The decoder named ``decode`` (see :data:`DECODERS`), or ``decode`` itself if callable.

    Raises :class:`~etcdsync.errors.InvalidRequest` for an unknown name or a
    non-callable.
    """
    if isinstance(decode, str):
        try:
            return DECODERS[decode]
        except KeyError:
            known = ", ".join(repr(name) for name in DECODERS)
            raise InvalidRequest(
                f"unknown decoder {decode!r}: use one of {known} or a callable(bytes)"
            ) from None
    if not callable(decode):
        raise InvalidRequest(f"decode must be a decoder name or a callable, got {decode!r}")
    return decode
