"""The floor, sync: the benchmark's requests over a raw grpc channel, no client library.

Runs in the project's .venv (the grpcio and protobuf etcdsync runs on) and takes
only the generated message classes from ``etcdsync._pb``: each call builds the
request message, calls the channel's multicallable with the deadline etcdsync
would send (``timeout=30``, the drivers' client default) and returns the response
message as gRPC hands it over.  Whatever etcdsync costs beyond this is its own
overhead.  Its lock cycle is the least a lock needs: one txn (create the key if
absent, read the owner) and one delete, on a lease granted once.
"""

from __future__ import annotations

import importlib.metadata
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import _sync_harness as h
import grpc
from _common import Unsupported

from etcdsync._pb import rpc_pb2 as rpc

TIMEOUT = 30.0
_END = object()


def prefix_end(prefix: bytes) -> bytes:
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes([trimmed[-1] + 1]) if trimmed else b"\0"


def cas_txn(key: bytes, value: bytes) -> Any:
    """If the key exists put ``value``, else read it (the txn_seq request)."""
    return rpc.TxnRequest(
        compare=[
            rpc.Compare(result=rpc.Compare.GREATER, target=rpc.Compare.VERSION, key=key, version=0)
        ],
        success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))],
        failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
    )


def lock_txn(key: bytes, prefix: bytes, lease: int) -> Any:
    """Create ``key`` on ``lease`` unless it exists, and read the oldest key of the
    lock's prefix (the owner): the one txn a lock acquire needs."""
    owner = rpc.RangeRequest(
        key=prefix,
        range_end=prefix_end(prefix),
        limit=1,
        sort_order=rpc.RangeRequest.ASCEND,
        sort_target=rpc.RangeRequest.CREATE,
    )
    return rpc.TxnRequest(
        compare=[
            rpc.Compare(
                result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, key=key, create_revision=0
            )
        ],
        success=[
            rpc.RequestOp(request_put=rpc.PutRequest(key=key, lease=lease)),
            rpc.RequestOp(request_range=owner),
        ],
        failure=[rpc.RequestOp(request_range=owner)],
    )


class Adapter:
    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
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
        self._lease = 0

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

    def close(self) -> None:
        if self._lease:
            self._revoke(rpc.LeaseRevokeRequest(ID=self._lease), timeout=TIMEOUT)
        self.channel.close()

    def put(self, key: bytes, value: bytes) -> None:
        self._put(rpc.PutRequest(key=key, value=value), timeout=TIMEOUT)

    def get(self, key: bytes) -> object:
        return self._range(rpc.RangeRequest(key=key), timeout=TIMEOUT)

    def delete(self, key: bytes) -> object:
        return self._delete(rpc.DeleteRangeRequest(key=key), timeout=TIMEOUT)

    def txn_cas(self, key: bytes, value: bytes) -> object:
        return self._txn(cas_txn(key, value), timeout=TIMEOUT)

    def get_prefix(self, prefix: bytes) -> int:
        request = rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix))
        # Materialised as message objects, as the libraries materialise theirs.
        return len(list(self._range(request, timeout=TIMEOUT).kvs))

    def delete_prefix(self, prefix: bytes) -> None:
        request = rpc.DeleteRangeRequest(key=prefix, range_end=prefix_end(prefix))
        self._delete(request, timeout=TIMEOUT)

    def watch_prefix(self, prefix: bytes) -> tuple[Iterator[Sequence[bytes]], Callable[[], None]]:
        outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def requests() -> Iterator[Any]:
            while (item := outbox.get()) is not _END:
                yield item

        call = self.channel.stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=rpc.WatchRequest.SerializeToString,
            response_deserializer=rpc.WatchResponse.FromString,
        )(requests())
        create = rpc.WatchCreateRequest(key=prefix, range_end=prefix_end(prefix))
        outbox.put(rpc.WatchRequest(create_request=create))
        if not next(call).created:
            raise RuntimeError("the first watch response was not the creation")

        def batches() -> Iterator[Sequence[bytes]]:
            try:
                for response in call:
                    yield [event.kv.key for event in response.events]
            except grpc.RpcError:
                return  # cancelled

        def cancel() -> None:
            outbox.put(_END)
            call.cancel()

        return batches(), cancel

    def watch_key(self, key: bytes) -> object:
        raise Unsupported("the floor covers single requests only")

    def grant(self, ttl: int) -> Any:
        return self._grant(rpc.LeaseGrantRequest(TTL=ttl), timeout=TIMEOUT).ID

    def keep_alive(self, leases: list[Any], ttl: int) -> h.KeepaliveStats:
        raise Unsupported("the floor covers single requests only")

    def lock_cycle(self, name: str, ttl: int, timeout: float, body: Callable[[], None]) -> bool:
        if threading.current_thread() is not threading.main_thread():
            raise Unsupported("the floor's lock cycle never waits: uncontended only")
        if not self._lease:
            self._lease = self.grant(ttl)
        prefix = name.encode() + b"/"
        key = b"%s%x" % (prefix, self._lease)
        response = self._txn(lock_txn(key, prefix, self._lease), timeout=TIMEOUT)
        owner = response.responses[-1].response_range.kvs
        if not owner or owner[0].key != key:
            raise RuntimeError("the floor's lock cycle found the lock taken")
        body()
        self._delete(rpc.DeleteRangeRequest(key=key), timeout=TIMEOUT)
        return True


if __name__ == "__main__":
    h.main(Adapter, "bare-sync")
