"""Keepalive pings every second, for tests that kill connections.

gRPC notices a dead connection when a read fails or, failing that, when a keepalive
ping goes unanswered.  grpcio before 1.80 can miss a TCP reset that arrives within
milliseconds of the last message on a connection (measured: 1-3% of such resets under
load on grpcio 1.60-1.78, none on 1.80+); its streams then wait for the next ping, 30 s
away with the default settings.  Tests that reset a connection bound that wait with
these settings (etcd refuses pings more often than ``--grpc-keepalive-min-time``, so
the member is started with :data:`MEMBER_ARGS`).
"""

from etcdsync import ChannelSettings

SETTINGS = ChannelSettings(keepalive_time=1.0, keepalive_timeout=1.0)
"""Client channel settings: ping every second, give up after one more."""

MEMBER_ARGS = ["--grpc-keepalive-min-time=500ms"]
"""etcd flags that let such clients ping every second."""
