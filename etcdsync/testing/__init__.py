"""Real etcd servers and clusters for tests.

Standard library only (the Docker backend additionally needs ``testcontainers``) and
independent of the etcdsync client, so it can test the client, or anything else that
speaks etcd. The pytest fixtures live in :mod:`etcdsync.testing.plugin`, which pytest loads
automatically through the ``pytest11`` entry point; importing this package does not import
pytest.

>>> from etcdsync.testing import EtcdServer
>>> with EtcdServer(version="3.5") as server:          # doctest: +SKIP
...     server.etcdctl("put", "k", "v")
"""

from .binaries import (
    ENV_VAR,
    EtcdBinary,
    EtcdNotFound,
    available_binaries,
    find_etcd,
    requested_version,
)
from .cluster import EtcdCluster
from .docker import DockerEtcd, docker_available
from .embedded import endpoint_or_embedded
from .etcdctl import EtcdctlError
from .metrics import Metrics, MetricSample
from .proxy import FaultProxy
from .server import EtcdServer, EtcdStartError
from .tls import TLSFiles, generate_tls_files, openssl_available

__all__ = [
    "ENV_VAR",
    "DockerEtcd",
    "EtcdBinary",
    "EtcdCluster",
    "EtcdNotFound",
    "EtcdServer",
    "EtcdStartError",
    "EtcdctlError",
    "FaultProxy",
    "MetricSample",
    "Metrics",
    "TLSFiles",
    "available_binaries",
    "docker_available",
    "endpoint_or_embedded",
    "find_etcd",
    "generate_tls_files",
    "openssl_available",
    "requested_version",
]
