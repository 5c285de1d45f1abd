"""Watch requests: many watchers multiplexed over one stream per client.

Watchers that ask for ``require_leader`` share a second stream, opened with the
``hasleader`` header, so a member cut off from its leader ends that stream and
the client moves to a member that has one; others are not disturbed.
"""

from __future__ import annotations

from typing import Any

from .. import errors
from .._keys import key_range
from .._keyspace import KeySpace
from .._pb import rpc_pb2 as rpc
from .connection import AsyncConnection
from .watch_callbacks import dispatcher_of
from .watch_stream import AsyncWatchStream
from .watcher import AsyncWatcher, WatchCallback

DEFAULT_BUFFER_LIMIT = 10_000


class AsyncWatchAPI:
    """Watch requests; mixed into :class:`etcdsync.AsyncClient`."""

    _conn: AsyncConnection
    _keyspace: KeySpace

    def _watch_stream(self, require_leader: bool) -> AsyncWatchStream:
        """The connection's shared stream for plain or ``require_leader`` watches."""
        conn = self._conn

        def open_stream() -> AsyncWatchStream:
            stream = AsyncWatchStream(conn, require_leader=require_leader)
            conn.on_close(stream.close)
            return stream

        return conn.shared((AsyncWatchStream, require_leader), open_stream)

    async def watch(
        self,
        key: str | bytes,
        *,
        range_end: str | bytes | None = None,
        prefix: bool = False,
        from_key: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        no_put: bool = False,
        no_delete: bool = False,
        progress_notify: bool = False,
        created_notify: bool = False,
        fragment: bool = False,
        require_leader: bool = False,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        timeout: float | None = None,
    ) -> AsyncWatcher:
        """Start watching a key or range and return the live :class:`AsyncWatcher`.

        Returns once the server has confirmed the watch: every write committed
        after this call returns is delivered.  ``start_revision`` replays history
        from that revision (a compacted one raises
        :class:`~etcdsync.errors.CompactedError` from the iterator).  ``prev_kv``
        attaches each key's previous state; ``no_put``/``no_delete`` filter events;
        ``progress_notify`` asks for periodic progress notices; ``created_notify``
        delivers the creation as an empty batch; ``fragment`` lets the server split
        huge batches (they are reassembled before delivery); ``require_leader``
        abandons members that lost their leader.  ``buffer_limit`` bounds unread
        batches (see :mod:`etcdsync._async.watcher` for the slow-consumer policy).
        ``timeout`` bounds the wait for the server's confirmation.
        """
        if not isinstance(start_revision, int) or start_revision < 0:
            raise errors.InvalidRequest(
                f"start_revision must be an int >= 0, got {start_revision!r}"
            )
        if not isinstance(buffer_limit, int) or buffer_limit < 2:
            raise errors.InvalidRequest(f"buffer_limit must be an int >= 2, got {buffer_limit!r}")
        raw_key, raw_end = key_range(key, range_end=range_end, prefix=prefix, from_key=from_key)
        filters = []
        if no_put:
            filters.append(rpc.WatchCreateRequest.NOPUT)
        if no_delete:
            filters.append(rpc.WatchCreateRequest.NODELETE)
        template = rpc.WatchCreateRequest(
            key=raw_key,
            range_end=raw_end,
            progress_notify=progress_notify,
            filters=filters,
            prev_kv=prev_kv,
            fragment=fragment,
        )
        stream = self._watch_stream(require_leader)
        watcher = AsyncWatcher(
            stream,
            self._keyspace.outbound(template),
            start_revision=start_revision,
            progress_notify=progress_notify,
            created_notify=created_notify,
            buffer_limit=buffer_limit,
            keyspace=self._keyspace,
        )
        effective = self._conn.timeout if timeout is None else timeout
        await stream.add(watcher, effective)
        return watcher

    async def add_watch_callback(
        self, key: str | bytes, callback: WatchCallback, **options: Any
    ) -> AsyncWatcher:
        """Watch like :meth:`watch` and call ``callback`` with each batch.

        Callbacks run on the client's callback workers (tasks; threads in the sync
        client), not in a task or thread per watcher: a thousand callback watchers
        add two.  Each watcher's callbacks run one at a time, in revision order.  A
        slow callback delays the other watchers' callbacks by at most 0.1 s
        (``STALL_BOUND``, plus the time to start a worker): past it, another worker
        takes over the others.  The
        callback receives the terminal error (e.g.
        :class:`~etcdsync.errors.CompactedError`) once, as its last call; cancelling
        the returned watcher ends it without a call.  An exception raised by the
        callback is logged with its traceback (logger ``etcdsync.callbacks``) and
        the next batch is delivered as usual.
        """
        watcher = await self.watch(key, **options)
        dispatcher_of(self._conn).add(watcher, callback)
        return watcher

    async def request_watch_progress(self, *, require_leader: bool = False) -> None:
        """Ask for a progress notice on the shared stream (received by watchers
        created with ``progress_notify=True``): it tells the revision up to
        which every event has been delivered."""
        await self._watch_stream(require_leader).request_progress()
