"""Value decoders for live config views; pure and IO-free.

A decoder turns the bytes stored at a key into the value a program uses.  The
built-in ones are named: ``"json"`` (the default of ``client.config()``),
``"text"`` (UTF-8 ``str``) and ``"raw"`` (the bytes as stored).  Any callable
taking ``bytes`` works too (``yaml.safe_load``, ``int``, a pydantic model's
``model_validate_json``...).  A decoder signals a bad value by raising: the
config watcher then rejects the whole update and keeps the last good config.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .errors import InvalidRequest

__all__ = ["DECODERS", "Decoder", "decode_json", "decode_raw", "decode_text", "resolve_decoder"]

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


DECODERS: dict[str, Decoder] = {"json": decode_json, "text": decode_text, "raw": decode_raw}
"""The named decoders ``client.config(decode=...)`` accepts."""


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
