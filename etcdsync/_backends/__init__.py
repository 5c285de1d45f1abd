"""The hand-written part that differs between the asyncio and threaded flavours.

``_async`` and ``_sync`` expose the same names with the same meaning; the
generated ``etcdsync._sync`` code imports ``_backends._sync`` exactly where the
canonical ``etcdsync._async`` code imports ``_backends._async``.  Nothing else
in the package may import ``asyncio``, ``threading`` or ``grpc.aio``.
"""


class StreamEnded(Exception):
    """A write to a gRPC stream whose call has already ended (both flavours raise it,
    so callers need not know what each gRPC stack raises for that)."""
