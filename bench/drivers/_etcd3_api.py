"""Adapter for the python-etcd3 API, shared by ``etcd3`` and its fork
``etcd-sdk-python`` (imported as ``pyetcd``): same calls, different module."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

import _common as c
import _sync_harness as h


def _protobuf_impl() -> str:
    try:
        from google.protobuf.internal import api_implementation

        return str(api_implementation.Type())
    except Exception:
        return "unknown"


class Etcd3Adapter:
    def __init__(self, module: ModuleType, dist: str, endpoint: str) -> None:
        self.module = module
        self.dist = dist
        host, port = c.host_port(endpoint)
        self.client = module.client(host=host, port=port, timeout=30)

    def versions(self) -> dict[str, str]:
        return {
            self.dist: importlib.metadata.version(self.dist),
            "grpcio": importlib.metadata.version("grpcio"),
            "protobuf": importlib.metadata.version("protobuf"),
            "protobuf_impl": _protobuf_impl(),
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": os.environ.get(
                "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "(unset)"
            ),
        }

    def close(self) -> None:
        self.client.close()

    def put(self, key: bytes, value: bytes) -> None:
        self.client.put(key, value)

    def get(self, key: bytes) -> object:
        return self.client.get(key)

    def delete(self, key: bytes) -> object:
        return self.client.delete(key)

    def txn_cas(self, key: bytes, value: bytes) -> object:
        t = self.client.transactions
        return self.client.transaction(
            compare=[t.version(key) > 0], success=[t.put(key, value)], failure=[t.get(key)]
        )

    def get_prefix(self, prefix: bytes) -> int:
        return len(list(self.client.get_prefix(prefix)))

    def delete_prefix(self, prefix: bytes) -> None:
        self.client.delete_prefix(prefix)

    def watch_prefix(self, prefix: bytes) -> tuple[Iterator[Sequence[bytes]], Callable[[], None]]:
        responses, cancel = self.client.watch_prefix_response(prefix)

        def batches() -> Iterator[Sequence[bytes]]:
            for response in responses:
                yield [event.key for event in response.events]

        return batches(), cancel

    def watch_key(self, key: bytes) -> object:
        return self.client.watch(key)

    def grant(self, ttl: int) -> Any:
        return self.client.lease(ttl)

    def keep_alive(self, leases: list[Any], ttl: int) -> h.KeepaliveStats:
        # No keepalive manager in this API: renew each lease with its one-shot
        # refresh (a new LeaseKeepAlive stream per call).
        def refresh(lease: Any) -> int:
            return int(lease.refresh()[0].TTL)

        return h.RefreshLoop(refresh, leases, ttl)

    def lock_cycle(self, name: str, ttl: int, timeout: float, body: Callable[[], None]) -> bool:
        lock = self.client.lock(name, ttl=ttl)
        if not lock.acquire(timeout=timeout):
            return False
        try:
            body()
        finally:
            lock.release()
        return True

    def lock_hold(self, name: str, ttl: int, timeout: float) -> Callable[[], None]:
        lock = self.client.lock(name, ttl=ttl)
        if not lock.acquire(timeout=timeout):
            raise RuntimeError("lock not acquired")
        return lambda: lock.release() and None

    def campaign_cycle(self, name: str, ttl: int) -> None:
        raise c.Unsupported("no election recipe")

    def config_subscribe(self, prefix: bytes, subscribers: int) -> h.Counter:
        raise c.Unsupported("no config recipe")

    def watch_many(self, key: bytes, n: int, on_event: Callable[[], None]) -> None:
        def callback(response: Any) -> None:
            if getattr(response, "events", None):
                on_event()

        for _ in range(n):
            self.client.add_watch_callback(key, callback)

    def group_sweep(self, name: str, n: int, ttl: int, timeout: float) -> dict[str, float]:
        raise c.Unsupported("no group recipe")
