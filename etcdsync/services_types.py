"""Service discovery values: instances, their stored form, events and the strategies
that choose among instances.

An instance of the service ``<name>`` in the namespace ``<ns>`` is the key
``<ns>/<name>/<instance id>``, bound to the lease of the registering process's
session, holding a JSON object::

    {"Op": 0, "Addr": "10.0.0.7:8080", "Metadata": {"zone": "a"},
     "address": "10.0.0.7", "port": 8080, "registered_at": 1767225600.25}

``Op``, ``Addr`` and ``Metadata`` are the fields of Go's
``client/v3/naming/endpoints`` (the gRPC resolver's ``etcd:///<ns>/<name>``
target lists these keys), so Go gRPC clients resolve instances registered from
Python, and instances registered by Go's endpoint manager are read here (their
address and port come from ``Addr``, the payload from ``Metadata``).

Pure and IO-free; shared by both flavours.
"""

from __future__ import annotations

import enum
import itertools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .cache_types import CacheEventType
from .errors import EtcdError, InvalidRequest
from .models import KeyValue

__all__ = [
    "STRATEGIES",
    "ProviderStrategy",
    "RandomStrategy",
    "RegistrationEvent",
    "RegistrationEventType",
    "RoundRobinStrategy",
    "ServiceEvent",
    "ServiceInstance",
    "StickyStrategy",
    "check_port",
    "check_service_name",
    "encode_instance",
    "instance_from_kv",
    "join_host_port",
    "resolve_strategy",
    "split_host_port",
]


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    """One registered instance of a service, as stored in its key.

    ``name`` is the service, ``id`` the instance id (the key's last part),
    ``address`` and ``port`` where it listens (``port`` is None for a Go endpoint
    whose ``Addr`` has none), ``payload`` the JSON value it announced (Go's
    ``Metadata``), ``registered_at`` the registering process's wall clock at
    registration (None if not recorded).  ``lease`` is the lease its key is
    bound to, ``create_revision`` the revision of its registration (instances
    are ordered by it) and ``mod_revision`` that of its last update.
    """

    name: str
    id: str
    address: str
    port: int | None
    payload: Any
    key: bytes
    lease: int
    create_revision: int
    mod_revision: int
    registered_at: float | None = None

    @property
    def addr(self) -> str:
        """``host:port`` (``[v6 address]:port``), Go's ``Addr``; the bare address
        when there is no port."""
        return join_host_port(self.address, self.port)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the instance (the CLI prints these)."""
        return {
            "name": self.name,
            "id": self.id,
            "address": self.address,
            "port": self.port,
            "addr": self.addr,
            "payload": self.payload,
            "lease": format(self.lease, "x"),
            "registered_at": self.registered_at,
            "create_revision": self.create_revision,
            "mod_revision": self.mod_revision,
        }


def join_host_port(address: str, port: int | None) -> str:
    """``address:port``, bracketing an IPv6 address; ``address`` alone without a port."""
    if port is None:
        return address
    if ":" in address and not address.startswith("["):
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def split_host_port(addr: str) -> tuple[str, int | None]:
    """The address and port of ``host:port`` / ``[v6]:port``; port None when there
    is none (``host``, a bare IPv6 address, a unix socket path)."""
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return host, int(port) if port.isdigit() else None
    host, sep, port = addr.rpartition(":")
    if not sep or ":" in host or not port.isdigit():
        return addr, None
    return host, int(port)


def check_service_name(name: object) -> str:
    """Validate a service name: a non-empty str that neither starts nor ends with ``/``."""
    if not isinstance(name, str) or not name or name.startswith("/") or name.endswith("/"):
        raise InvalidRequest(
            f"a service name must be a non-empty str not starting or ending with '/', got {name!r}"
        )
    return name


def check_port(port: object) -> int:
    """Validate a port: an int in 1..65535."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 65535:
        raise InvalidRequest(f"port must be an int in 1..65535, got {port!r}")
    return port


def encode_instance(address: str, port: int, payload: Any, registered_at: float) -> bytes:
    """The stored value of an instance (see the module docstring)."""
    record = {
        "Op": 0,
        "Addr": join_host_port(address, port),
        "Metadata": payload,
        "address": address,
        "port": port,
        "registered_at": registered_at,
    }
    try:
        return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"the payload must be JSON-serialisable: {exc}") from exc


def instance_from_kv(prefix: bytes, kv: KeyValue) -> ServiceInstance | None:
    """The instance a key under ``prefix`` (the namespace's ``<ns>/``) stands for, or
    None for a key that is not an instance: not ``<name>/<id>`` under the prefix,
    or a value that is not a JSON object with an address."""
    if not kv.key.startswith(prefix):
        return None
    name, sep, ident = kv.key[len(prefix) :].rpartition(b"/")
    if not sep or not name or not ident:
        return None
    try:
        record = json.loads(kv.value)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    address, port = record.get("address"), record.get("port")
    if not isinstance(address, str) or not (
        port is None or (isinstance(port, int) and not isinstance(port, bool))
    ):
        addr = record.get("Addr")
        if not isinstance(addr, str) or not addr:
            return None
        address, port = split_host_port(addr)
    registered_at = record.get("registered_at")
    if not isinstance(registered_at, int | float) or isinstance(registered_at, bool):
        registered_at = None
    return ServiceInstance(
        name=name.decode("utf-8", "surrogateescape"),
        id=ident.decode("utf-8", "surrogateescape"),
        address=address,
        port=port,
        payload=record.get("Metadata"),
        key=kv.key,
        lease=kv.lease,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        registered_at=None if registered_at is None else float(registered_at),
    )


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """One change of a service's instances (``services.watch(name)``).

    ``type`` is the cache's: ``ADDED``, ``UPDATED``, ``REMOVED`` (deregistered,
    or its lease ended: the process died) or ``RESET`` (``instance`` None: the
    watch had a gap, the events that follow with ``resync`` are the net
    difference).  ``instance`` is the instance after the change (for
    ``REMOVED``: as last seen); ``initial`` marks the instances present when the
    watch began.
    """

    type: CacheEventType
    instance: ServiceInstance | None
    revision: int
    initial: bool = False
    resync: bool = False


class RegistrationEventType(enum.Enum):
    """What happened to a registration of this process."""

    LOST = "lost"
    """The registration's session ended (the lease expired or was revoked, the
    process paused or lost etcd): the instance key is gone; re-registering."""
    REREGISTERED = "reregistered"
    """The instance is registered again, through a new session."""
    REMOVED = "removed"
    """Someone else deleted the instance key (``deregister`` from another process,
    ``etcdctl del``): the registration ended and is not renewed."""


@dataclass(frozen=True, slots=True)
class RegistrationEvent:
    """A change of a registration of this process: ``instance`` is the instance as
    registered now (``REREGISTERED``) or as it was (``LOST``, ``REMOVED``);
    ``error`` says why it was lost."""

    type: RegistrationEventType
    instance: ServiceInstance
    error: EtcdError | None = None


class ProviderStrategy(Protocol):
    """Chooses one instance among the live ones (never an empty sequence)."""

    def choose(self, instances: Sequence[ServiceInstance]) -> ServiceInstance: ...


class RoundRobinStrategy:
    """Each call takes the next instance in registration order, wrapping around:
    ``n`` calls over ``n`` unchanged instances visit each once."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def choose(self, instances: Sequence[ServiceInstance]) -> ServiceInstance:
        return instances[next(self._counter) % len(instances)]


class RandomStrategy:
    """A uniformly random instance each call."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, instances: Sequence[ServiceInstance]) -> ServiceInstance:
        return self._rng.choice(list(instances))


class StickyStrategy:
    """The same instance as last time while it is registered (by its key: also after
    it re-registered), else a new one chosen by ``inner`` (round-robin by default)."""

    def __init__(self, inner: ProviderStrategy | None = None) -> None:
        self._inner: ProviderStrategy = inner or RoundRobinStrategy()
        self._current: bytes | None = None

    def choose(self, instances: Sequence[ServiceInstance]) -> ServiceInstance:
        current = self._current
        if current is not None:
            for instance in instances:
                if instance.key == current:
                    return instance
        chosen = self._inner.choose(instances)
        self._current = chosen.key
        return chosen


STRATEGIES = {
    "round-robin": RoundRobinStrategy,
    "random": RandomStrategy,
    "sticky": StickyStrategy,
}
"""The strategies ``choose()`` knows by name."""


def resolve_strategy(strategy: object) -> ProviderStrategy:
    """A new strategy for a name of :data:`STRATEGIES`, or ``strategy`` itself if it
    has a ``choose`` method."""
    if isinstance(strategy, str):
        factory = STRATEGIES.get(strategy)
        if factory is None:
            raise InvalidRequest(
                f"unknown strategy {strategy!r}; use one of {sorted(STRATEGIES)} or an "
                "object with a choose(instances) method"
            )
        made: ProviderStrategy = factory()
        return made
    if callable(getattr(strategy, "choose", None)):
        return strategy  # type: ignore[return-value]
    raise InvalidRequest(f"a strategy must be a name or have a choose() method, got {strategy!r}")
