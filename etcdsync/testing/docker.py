"""Optional etcd-in-Docker backend built on ``testcontainers``.

Useful for testing against an etcd release that is not installed locally. It is only
usable when the ``testcontainers`` package imports *and* a Docker engine answers a ping;
:func:`docker_available` says which of the two is missing. Nothing here is imported by the
rest of :mod:`etcdsync.testing`, so the dependency stays optional.

Compared with :class:`~etcdsync.testing.server.EtcdServer` this backend is deliberately
small: one member, no TLS, no pause/kill. Docker publishes the mapped port according to the
engine's configuration (all host interfaces by default), not only on loopback.
"""

from __future__ import annotations

import json
import time
import urllib.request
from types import TracebackType
from typing import Any

__all__ = ["DEFAULT_IMAGE", "DockerEtcd", "docker_available"]

#: Upstream's image (also published as gcr.io/etcd-development/etcd).
DEFAULT_IMAGE = "quay.io/coreos/etcd:v3.5.17"

_CLIENT_PORT = 2379
_METRICS_PORT = 2381


def docker_available() -> tuple[bool, str]:
    """Whether :class:`DockerEtcd` can work here, and if not, why (for ``pytest.skip``)."""
    try:
        from testcontainers.core.docker_client import DockerClient
    except ImportError as exc:
        return False, f"testcontainers is not installed ({exc}); pip install 'etcdsync[docker]'"
    try:
        client: Any = DockerClient()
        client.client.ping()
    except Exception as exc:  # docker raises many unrelated types
        return False, f"no reachable Docker engine: {exc}"
    return True, "docker engine reachable"


class DockerEtcd:
    """A single etcd member in a container; mirrors the basic EtcdServer properties."""

    def __init__(self, image: str = DEFAULT_IMAGE, *, extra_args: tuple[str, ...] = ()) -> None:
        self.image = image
        self.extra_args = extra_args
        self._container: Any = None

    def start(self, timeout: float = 60.0) -> DockerEtcd:
        """Pull if needed, run the container and wait for ``/health``."""
        from testcontainers.core.container import DockerContainer

        command = [
            "etcd",
            "--name=default",
            "--data-dir=/tmp/etcd-data",
            # 0.0.0.0 inside the container: the published port arrives on the bridge.
            f"--listen-client-urls=http://0.0.0.0:{_CLIENT_PORT}",
            f"--advertise-client-urls=http://127.0.0.1:{_CLIENT_PORT}",
            f"--listen-metrics-urls=http://0.0.0.0:{_METRICS_PORT}",
            *self.extra_args,
        ]
        container: Any = DockerContainer(self.image)
        container = container.with_command(command)
        container = container.with_exposed_ports(_CLIENT_PORT, _METRICS_PORT)
        self._container = container.start()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        url = f"http://{self.host}:{self._port(_METRICS_PORT)}/health"
        while True:
            try:
                with opener.open(url, timeout=1.0) as response:
                    if json.loads(response.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"etcd container not healthy after {timeout}s ({url})")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._container is not None:
            self._container.stop()
            self._container = None

    def _port(self, port: int) -> int:
        if self._container is None:
            raise RuntimeError("container not started")
        return int(self._container.get_exposed_port(port))

    @property
    def host(self) -> str:
        if self._container is None:
            raise RuntimeError("container not started")
        return str(self._container.get_container_host_ip())

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self._port(_CLIENT_PORT)}"

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint]

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self._port(_METRICS_PORT)}/metrics"

    def __enter__(self) -> DockerEtcd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
