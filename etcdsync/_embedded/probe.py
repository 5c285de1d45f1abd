"""Plain-HTTP requests to an etcd member's metrics listener (``/health``, ``/metrics``)."""

from __future__ import annotations

import http.client
import urllib.request

__all__ = ["HTTP_ERRORS", "http_get"]

# Loopback requests must not be sent to an HTTP proxy configured in the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


#: What a probe of a starting, dying or paused etcd may raise. HTTPException is not an
#: OSError (e.g. IncompleteRead when a member is killed mid-response).
HTTP_ERRORS: tuple[type[Exception], ...] = (OSError, http.client.HTTPException, ValueError)


def http_get(url: str, timeout: float) -> str:
    with _opener.open(url, timeout=timeout) as response:
        body: bytes = response.read()
    return body.decode("utf-8", errors="replace")
