"""The one policy for user callbacks: an exception is logged, never propagated.

Every callback a user hands to etcdsync - watch callbacks, lost-lock and lost-
leadership callbacks, config subscribers and error callbacks, keepalive
listeners, session-done callbacks - runs through :func:`call_callback` (from
code that cannot wait: the callback must be a plain function) or
:func:`etcdsync._backends._async.run_callback` (which also awaits a coroutine
callback in the asyncio flavour); both call :func:`report_callback_failure` when
the callback raises. The failure is logged with its traceback at ERROR under the
``etcdsync.callbacks`` logger and the stream, watch or recipe that called it
goes on: one broken callback must not silently stop the deliveries to itself or
to anyone else.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["CALLBACK_LOGGER", "call_callback", "report_callback_failure"]

CALLBACK_LOGGER = logging.getLogger("etcdsync.callbacks")


def report_callback_failure(what: str, fn: Any) -> None:
    """Log the exception being handled, raised by the user callback ``fn``."""
    CALLBACK_LOGGER.exception("%s callback %r raised; ignored, deliveries go on", what, fn)


def call_callback(what: str, fn: Any, *args: Any) -> None:
    """Call a user's plain-function callback now; an exception is logged, not raised.

    ``what`` names the kind of callback in the log line (e.g. ``"lock-lost"``).
    """
    try:
        fn(*args)
    except Exception:
        report_callback_failure(what, fn)
