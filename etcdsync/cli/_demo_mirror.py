"""The demo's view of etcd: its key prefix, rebuilt from one watch.

The demo watches the run's whole prefix from the revision before its first write, so it
has every change etcd made, in revision order (what ``_demo_check`` holds the workers'
reports against), and knows which keys exist at each moment: who leads, who holds the
lock and who waits are the keys with the lowest create revision under a prefix.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from .. import Client, errors
from ._demo_check import END, Change

__all__ = ["KeyMirror"]


class KeyMirror:
    """Every change under ``prefix`` (:attr:`changes`) and the keys there now (:attr:`live`).

    A thread follows the watch and puts each batch on ``inbox`` as ``("etcd", None,
    [Change, ...])`` (or ``("watch-error", None, exc)``); the demo's own thread hands
    them back to :meth:`apply`, so the view changes only where the demo reads it.
    """

    def __init__(self, client: Client, prefix: str, inbox: queue.Queue[Any]) -> None:
        self.client = client
        self.prefix = prefix
        self.inbox = inbox
        self.changes: list[Change] = []
        self.live: dict[str, Change] = {}  # the prefix as etcd has it now
        self.ended = False  # the end marker arrived, or the watch was cancelled
        self.watcher: Any = None

    def watch(self, start: int) -> None:
        """Mirror the run's prefix: every change etcd makes, in revision order."""
        self.watcher = self.client.watch(self.prefix, prefix=True, start_revision=start)
        threading.Thread(target=self._follow, args=(self.watcher,), daemon=True).start()

    def _follow(self, watcher: Any) -> None:
        cut = len(self.prefix)
        try:
            for batch in watcher:
                self.inbox.put(
                    (
                        "etcd",
                        None,
                        [
                            Change(
                                e.revision,
                                e.key[cut:].decode(),
                                e.value.decode(),
                                e.kv.create_revision,
                                e.kv.lease,
                                e.type.name == "DELETE",
                            )
                            for e in batch.events
                        ],
                    )
                )
        except errors.EtcdError as exc:
            if not self.ended:
                self.inbox.put(("watch-error", None, exc))

    def apply(self, changes: list[Change]) -> None:
        for change in changes:
            self.changes.append(change)
            if change.deleted:
                self.live.pop(change.key, None)
            else:
                self.live[change.key] = change
            if change.key == END:
                self.ended = True

    def under(self, prefix: str) -> list[Change]:
        """The keys under ``prefix`` (relative to the run's) that exist now."""
        return [c for k, c in self.live.items() if k.startswith(prefix)]

    def first(self, prefix: str) -> Change | None:
        """The key under ``prefix`` with the lowest create revision: the holder."""
        return min(self.under(prefix), key=lambda c: c.create_revision, default=None)

    def close(self) -> None:
        """Cancel the watch; its thread ends without reporting an error."""
        if self.watcher is not None:
            self.ended = True
            self.watcher.cancel()
