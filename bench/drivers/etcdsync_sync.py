"""Driver for etcdsync's threaded ``Client`` (runs in the project's .venv)."""

from __future__ import annotations

import importlib.metadata
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import _sync_harness as h
from _common import Unsupported

from etcdsync import Client, Compare, Lease, LeaseKeepAliveResult, Op, errors
from etcdsync.watch_types import WatchResponse


class _Counter:
    def __init__(self) -> None:
        self.renewals = 0
        self.lost = 0
        self._lock = threading.Lock()
        self._handles: list[Any] = []

    def __call__(self, item: LeaseKeepAliveResult | errors.LeaseExpiredError) -> None:
        with self._lock:
            if isinstance(item, LeaseKeepAliveResult):
                self.renewals += 1
            else:
                self.lost += 1

    def stop(self) -> None:
        for handle in self._handles:
            handle.close()


class Adapter:
    def __init__(self, endpoint: str) -> None:
        self.client = Client(endpoint, timeout=30)
        self._configs: list[Any] = []

    def versions(self) -> dict[str, str]:
        return {
            "etcdsync": importlib.metadata.version("etcdsync"),
            "grpcio": importlib.metadata.version("grpcio"),
            "protobuf": importlib.metadata.version("protobuf"),
        }

    def close(self) -> None:
        for config in self._configs:
            config.stop()
        self.client.close()

    def put(self, key: bytes, value: bytes) -> None:
        self.client.put(key, value)

    def get(self, key: bytes) -> object:
        return self.client.get(key)

    def delete(self, key: bytes) -> object:
        return self.client.delete(key)

    def txn_cas(self, key: bytes, value: bytes) -> object:
        return self.client.txn([Compare.version(key) > 0], [Op.put(key, value)], [Op.get(key)])

    def get_prefix(self, prefix: bytes) -> int:
        return len(self.client.get(prefix, prefix=True).kvs)

    def delete_prefix(self, prefix: bytes) -> None:
        self.client.delete(prefix, prefix=True)

    def watch_prefix(self, prefix: bytes) -> tuple[Iterator[Sequence[bytes]], Callable[[], None]]:
        watcher = self.client.watch(prefix, prefix=True)

        def batches() -> Iterator[Sequence[bytes]]:
            for batch in watcher:
                yield [event.kv.key for event in batch.events]

        return batches(), watcher.cancel

    def watch_key(self, key: bytes) -> object:
        return self.client.watch(key)

    def grant(self, ttl: int) -> Lease:
        return self.client.grant(ttl)

    def keep_alive(self, leases: list[Any], ttl: int) -> h.KeepaliveStats:
        counter = _Counter()
        for lease in leases:
            handle = self.client.keep_alive(lease)
            handle.add_callback(counter)
            counter._handles.append(handle)
        return counter

    def lock_cycle(self, name: str, ttl: int, timeout: float, body: Callable[[], None]) -> bool:
        try:
            with self.client.lock(name, ttl=ttl, timeout=timeout):
                body()
        except NotImplementedError as exc:
            raise Unsupported("etcdsync's Mutex is not implemented yet") from exc
        except errors.Timeout:
            return False
        return True

    def lock_hold(self, name: str, ttl: int, timeout: float) -> Callable[[], None]:
        lock = self.client.lock(name, ttl=ttl)
        lock.acquire(timeout=timeout)
        return lock.release

    def campaign_cycle(self, name: str, ttl: int) -> None:
        election = self.client.election(name, ttl=ttl)
        election.campaign(b"bench")
        election.resign()

    def config_subscribe(self, prefix: bytes, subscribers: int) -> h.Counter:
        counter = h.Counter()
        config = self.client.config(prefix.decode()).start()
        for _ in range(subscribers):
            config.subscribe(counter)
        self._configs.append(config)
        return counter

    def watch_many(self, key: bytes, n: int, on_event: Callable[[], None]) -> None:
        def callback(item: WatchResponse | errors.EtcdError) -> None:
            if isinstance(item, WatchResponse) and item.events:
                on_event()

        for _ in range(n):
            self.client.add_watch_callback(key, callback)

    def group_sweep(self, name: str, n: int, ttl: int, timeout: float) -> dict[str, float]:
        groups = [self.client.group(name, ttl=ttl) for _ in range(n)]
        start = time.perf_counter()
        for i, group in enumerate(groups):
            group.join(b"member", member_id=f"m{i:06d}", timeout=timeout)
        join = time.perf_counter() - start
        start = time.perf_counter()
        members = groups[0].members(timeout=timeout)
        listed = time.perf_counter() - start
        if len(members) != n:
            raise RuntimeError(f"members() listed {len(members)} of {n}")
        start = time.perf_counter()
        watch = groups[0].watch().start(timeout=timeout)
        for _ in range(n):
            watch.get(timeout)
        watched = time.perf_counter() - start
        extra = self.client.group(name, ttl=ttl)
        start = time.perf_counter()
        extra.join(b"member", member_id="extra", timeout=timeout)
        event = watch.get(timeout)
        notified = time.perf_counter() - start
        if event.member.id != "extra":
            raise RuntimeError(f"expected the extra member's join, got {event}")
        watch.cancel()
        for group in (*groups, extra):
            group.leave(timeout=timeout)
        return {
            "join_s": join,
            "members_ms": listed * 1e3,
            "watch_all_ms": watched * 1e3,
            "notify_ms": notified * 1e3,
        }


if __name__ == "__main__":
    h.main(Adapter, "etcdsync-sync")
