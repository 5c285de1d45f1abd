"""The floor, asyncio: the benchmark's requests over a raw grpc.aio channel.

The same requests as ``bare_sync.py`` (see there), awaited on grpc.aio.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import _async_harness as h
import grpc
from _common import Unsupported
from bare_sync import TIMEOUT, cas_txn, lock_txn, prefix_end
from grpc import aio

from etcdsync._pb import rpc_pb2 as rpc


class Adapter:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._lease = 0

    async def connect(self) -> None:
        self.channel = aio.insecure_channel(self.endpoint)
        self._put = self._unary("KV/Put", rpc.PutRequest, rpc.PutResponse)
        self._range = self._unary("KV/Range", rpc.RangeRequest, rpc.RangeResponse)
        self._delete = self._unary(
            "KV/DeleteRange", rpc.DeleteRangeRequest, rpc.DeleteRangeResponse
        )
        self._txn = self._unary("KV/Txn", rpc.TxnRequest, rpc.TxnResponse)
        self._grant = self._unary("Lease/LeaseGrant", rpc.LeaseGrantRequest, rpc.LeaseGrantResponse)
        self._revoke = self._unary(
            "Lease/LeaseRevoke", rpc.LeaseRevokeRequest, rpc.LeaseRevokeResponse
        )

    def _unary(self, method: str, request: Any, response: Any) -> Any:
        return self.channel.unary_unary(
            "/etcdserverpb." + method,
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )

    def versions(self) -> dict[str, str]:
        return {
            "grpcio": importlib.metadata.version("grpcio"),
            "protobuf": importlib.metadata.version("protobuf"),
        }

    async def close(self) -> None:
        if self._lease:
            await self._revoke(rpc.LeaseRevokeRequest(ID=self._lease), timeout=TIMEOUT)
        await self.channel.close()

    async def put(self, key: bytes, value: bytes) -> None:
        await self._put(rpc.PutRequest(key=key, value=value), timeout=TIMEOUT)

    async def get(self, key: bytes) -> object:
        return await self._range(rpc.RangeRequest(key=key), timeout=TIMEOUT)

    async def delete(self, key: bytes) -> object:
        return await self._delete(rpc.DeleteRangeRequest(key=key), timeout=TIMEOUT)

    async def txn_cas(self, key: bytes, value: bytes) -> object:
        return await self._txn(cas_txn(key, value), timeout=TIMEOUT)

    async def get_prefix(self, prefix: bytes) -> int:
        request = rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix))
        response = await self._range(request, timeout=TIMEOUT)
        return len(list(response.kvs))

    async def delete_prefix(self, prefix: bytes) -> None:
        request = rpc.DeleteRangeRequest(key=prefix, range_end=prefix_end(prefix))
        await self._delete(request, timeout=TIMEOUT)

    async def watch_prefix(
        self, prefix: bytes
    ) -> tuple[AsyncIterator[Sequence[bytes]], Callable[[], Awaitable[None]]]:
        call = self.channel.stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=rpc.WatchRequest.SerializeToString,
            response_deserializer=rpc.WatchResponse.FromString,
        )()
        create = rpc.WatchCreateRequest(key=prefix, range_end=prefix_end(prefix))
        await call.write(rpc.WatchRequest(create_request=create))
        if not (await call.read()).created:
            raise RuntimeError("the first watch response was not the creation")

        async def batches() -> AsyncIterator[Sequence[bytes]]:
            try:
                while True:
                    response = await call.read()
                    if response is aio.EOF:
                        return
                    yield [event.kv.key for event in response.events]
            except grpc.RpcError:
                return  # cancelled

        async def cancel() -> None:
            call.cancel()

        return batches(), cancel

    async def watch_key(self, key: bytes) -> object:
        raise Unsupported("the floor covers single requests only")

    async def grant(self, ttl: int) -> Any:
        return (await self._grant(rpc.LeaseGrantRequest(TTL=ttl), timeout=TIMEOUT)).ID

    async def keep_alive(self, leases: list[Any], ttl: int) -> h.KeepaliveStats:
        raise Unsupported("the floor covers single requests only")

    async def lock_cycle(
        self, name: str, ttl: int, timeout: float, body: Callable[[], None]
    ) -> bool:
        if not self._lease:
            self._lease = await self.grant(ttl)
        prefix = name.encode() + b"/"
        key = b"%s%x" % (prefix, self._lease)
        response = await self._txn(lock_txn(key, prefix, self._lease), timeout=TIMEOUT)
        owner = response.responses[-1].response_range.kvs
        if not owner or owner[0].key != key:
            raise RuntimeError("the floor's lock cycle found the lock taken")
        body()
        await self._delete(rpc.DeleteRangeRequest(key=key), timeout=TIMEOUT)
        return True


if __name__ == "__main__":
    h.main(Adapter, "bare-async")
