"""Maintenance requests: member status, alarms, defragmentation, hashes, snapshots
and leadership transfer.

Most of them are about one member: they take an ``endpoint`` (``"host:port"`` or a
URL) and go to that member only, never failing over to another one; without it
they go to the client's current endpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import BinaryIO

from .. import errors
from .._methods import ALARM, DEFRAGMENT, HASH, HASH_KV, MEMBER_LIST, MOVE_LEADER, SNAPSHOT, STATUS
from .._pb import rpc_pb2 as rpc
from ..admin_types import Alarm, AlarmType, HashKVResult, HashResult, Status
from .connection import AsyncConnection, AsyncResponseStream

log = logging.getLogger("etcdsync.maintenance")

# The Snapshot stream ends with one message holding the SHA-256 of the bytes before
# it; etcdutl/etcdctl check it on restore, so it is kept in the file too.
_DIGEST_SIZE = hashlib.sha256().digest_size


class AsyncMaintenanceAPI:
    """Maintenance requests; mixed into :class:`etcdsync.AsyncClient`.

    Reads (status, alarms, hashes) are retried on transient failures; requests
    that change something (disarm, defragment, move leader) are not retried after
    they may have reached the server.
    """

    _conn: AsyncConnection

    async def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> Status:
        """The status of one member: version, database size, raft position, leader."""
        response = await self._conn.unary(
            STATUS, STATUS.request(), timeout=timeout, idempotent=True, endpoint=endpoint
        )
        return Status.from_pb(response)

    async def alarms(self, *, timeout: float | None = None) -> list[Alarm]:
        """The alarms currently raised in the cluster (empty when healthy)."""
        request = ALARM.request(action=rpc.AlarmRequest.GET)
        response = await self._conn.unary(ALARM, request, timeout=timeout, idempotent=True)
        return [Alarm.from_pb(a) for a in response.alarms]

    async def alarm_disarm(
        self,
        member_id: int = 0,
        alarm: AlarmType | None = None,
        *,
        timeout: float | None = None,
    ) -> list[Alarm]:
        """Clear raised alarms and return those that were cleared.

        With no arguments every alarm is cleared; ``member_id`` and ``alarm`` narrow
        it to one member and/or one type.  Free space first (compact, then
        :meth:`defragment` every member) or a NOSPACE alarm is raised again by the
        next write.
        """
        if not isinstance(member_id, int) or isinstance(member_id, bool) or member_id < 0:
            raise errors.InvalidRequest(f"member_id must be an int >= 0, got {member_id!r}")
        wanted = None if alarm is None else AlarmType(alarm)
        cleared: list[Alarm] = []
        for raised in await self.alarms(timeout=timeout):
            if member_id and raised.member_id != member_id:
                continue
            if wanted is not None and raised.type != wanted:
                continue
            request = ALARM.request(
                action=rpc.AlarmRequest.DEACTIVATE, memberID=raised.member_id, alarm=raised.type
            )
            response = await self._conn.unary(ALARM, request, timeout=timeout, idempotent=False)
            cleared.extend(Alarm.from_pb(a) for a in response.alarms)
        return cleared

    async def defragment(
        self, endpoint: str | None = None, *, timeout: float | None = None
    ) -> None:
        """Rewrite one member's backend file to give the space of deleted and
        compacted data back to the file system.

        The member serves nothing while it runs (seconds for a large database):
        defragment members one at a time, and give a ``timeout`` that fits the
        database size.
        """
        await self._conn.unary(
            DEFRAGMENT, DEFRAGMENT.request(), timeout=timeout, idempotent=False, endpoint=endpoint
        )

    async def hash(
        self, endpoint: str | None = None, *, timeout: float | None = None
    ) -> HashResult:
        """Hash of one member's whole backend file (for debugging; prefer :meth:`hash_kv`)."""
        response = await self._conn.unary(
            HASH, HASH.request(), timeout=timeout, idempotent=True, endpoint=endpoint
        )
        return HashResult.from_pb(response)

    async def hash_kv(
        self,
        revision: int = 0,
        endpoint: str | None = None,
        *,
        timeout: float | None = None,
    ) -> HashKVResult:
        """Hash of one member's key-value history up to ``revision`` (0: the latest).

        Members that applied the same history give the same hash for the same
        revision; a difference means corrupted data.
        """
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise errors.InvalidRequest(f"revision must be an int >= 0, got {revision!r}")
        request = HASH_KV.request(revision=revision)
        response = await self._conn.unary(
            HASH_KV, request, timeout=timeout, idempotent=True, endpoint=endpoint
        )
        return HashKVResult.from_pb(response)

    async def snapshot(
        self,
        path_or_file: str | os.PathLike[str] | BinaryIO,
        endpoint: str | None = None,
        *,
        timeout: float | None = None,
    ) -> int:
        """Stream a snapshot of one member's backend into a file; returns its size.

        A path is written through ``<path>.part`` and renamed when the snapshot is
        complete and its checksum verified, so a failed snapshot never leaves a
        file that looks valid.  A binary file object is written to as is (the
        caller discards it on error).  The file is what ``etcdutl snapshot restore``
        takes (the server's trailing SHA-256 included).  ``timeout`` bounds the
        whole transfer, restarts included (default: the client's timeout; ``inf``:
        none); raise it for large databases.  Raises
        :class:`~etcdsync.errors.SnapshotError` when the stream ends early or the
        checksum does not match.

        When the member goes away mid-stream, the snapshot starts over from another
        member, up to ``retries`` times: any member's snapshot is a valid one.  Not
        with an ``endpoint`` (that member's snapshot was asked for), nor into a file
        object that cannot seek back to where the snapshot began.

        In the asyncio flavour the file writes are plain blocking writes of 32 KiB
        chunks.
        """
        deadline = self._conn.deadline_for(timeout)
        if isinstance(path_or_file, (str, os.PathLike)):
            final = os.fspath(path_or_file)
            part = final + ".part"
            try:
                with open(part, "wb") as out:
                    size = await self._snapshot_into(out, 0, endpoint, deadline)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(part, final)
            except BaseException:
                try:
                    os.unlink(part)
                except FileNotFoundError:
                    pass
                raise
            return size
        start = path_or_file.tell() if path_or_file.seekable() else None
        return await self._snapshot_into(path_or_file, start, endpoint, deadline)

    async def _snapshot_into(
        self, out: BinaryIO, start: int | None, endpoint: str | None, deadline: float | None
    ) -> int:
        """Copy a snapshot into ``out`` (from offset ``start``; None: cannot rewind),
        starting over on another member after a connection failure."""
        attempt = 0
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            stream = await self._conn.server_stream(
                SNAPSHOT, SNAPSHOT.request(), timeout=remaining, endpoint=endpoint
            )
            try:
                return await _copy_snapshot(stream, out)
            except errors.EtcdError as exc:
                stream.cancel()
                if (
                    endpoint is not None
                    or start is None
                    or isinstance(exc, errors.SnapshotError)
                    or attempt >= self._conn.retries
                    or not await self._conn.resume_stream(
                        exc, stream.endpoint, attempt, deadline, None
                    )
                ):
                    raise
                log.info("snapshot from %s failed (%s); starting over", stream.endpoint, exc)
                attempt += 1
                out.seek(start or 0)
                out.truncate()
            except BaseException:
                stream.cancel()
                raise

    async def move_leader(self, target_member_id: int, *, timeout: float | None = None) -> None:
        """Hand leadership to another voting member and wait until it leads.

        The request has to reach the current leader: the client finds it (status
        plus member list) and sends it there, whatever its current endpoint.
        Raises :class:`~etcdsync.errors.InvalidRequest` when the target is not a
        started voting member.
        """
        if (
            not isinstance(target_member_id, int)
            or isinstance(target_member_id, bool)
            or target_member_id <= 0
        ):
            raise errors.InvalidRequest(
                f"target_member_id must be an int > 0, got {target_member_id!r}"
            )
        leader_endpoint = await self._leader_endpoint(timeout)
        request = MOVE_LEADER.request(targetID=target_member_id)
        await self._conn.unary(
            MOVE_LEADER, request, timeout=timeout, idempotent=False, endpoint=leader_endpoint
        )

    async def _leader_endpoint(self, timeout: float | None) -> str | None:
        """A client URL of the current leader (None: unknown; use the current endpoint)."""
        leader = (await self.status(timeout=timeout)).leader
        members = await self._conn.unary(
            MEMBER_LIST, MEMBER_LIST.request(), timeout=timeout, idempotent=True
        )
        for member in members.members:
            if member.ID == leader and member.clientURLs:
                url: str = member.clientURLs[0]
                return url
        return None


async def _copy_snapshot(stream: AsyncResponseStream, out: BinaryIO) -> int:
    """Write every chunk to ``out`` and check the trailing digest; returns bytes written."""
    digest = hashlib.sha256()
    held: bytes | None = None  # the newest chunk: the digest itself if nothing follows
    size = 0
    while True:
        message = await stream.read()
        if message is None:
            break
        if held is not None:
            digest.update(held)
            out.write(held)
            size += len(held)
        held = message.blob
    if held is None or len(held) != _DIGEST_SIZE:
        raise errors.SnapshotError("the snapshot stream ended before its checksum")
    if held != digest.digest():
        raise errors.SnapshotError("the snapshot checksum does not match its data")
    out.write(held)
    return size + len(held)
