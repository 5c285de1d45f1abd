"""Service discovery: instances announced through lease-bound keys, found through a
prefix cache.

An instance of the service ``<name>`` in the namespace ``<ns>`` is the key
``<ns>/<name>/<instance id>``, bound to the lease of the registering process's
session and holding a JSON description (address, port, payload; see
:mod:`etcdsync.services_types` - it is also the value Go's
``naming/endpoints`` writes, so Go gRPC clients resolve these instances).  A
registration is a :class:`~.group.AsyncGroup` membership of the group
``<ns>/<name>`` with the instance id as member id: a process that dies stops
renewing its lease and etcd deletes its instance key within the TTL.

A registration outlives its session: when the session ends (lease expired or
revoked, etcd unreachable for longer than the TTL), the registration reports
``LOST``, joins again through a fresh session as soon as it can, and reports
``REREGISTERED``.  An instance key deleted by someone else (a ``deregister``
from another process, ``etcdctl del``) ends the registration for good
(``REMOVED``): that is how an operator evicts an instance.

Readers hold a :class:`~.cache.AsyncPrefixCache` of the whole namespace:
``instances()`` and ``choose()`` are local reads, and ``watch()`` reports each
added, updated and removed instance once, in order.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ... import errors
from ..._backends._async import (
    Event,
    Lock,
    StateLock,
    Task,
    acquire_lock,
    run_callback,
    spawn,
    wait_event,
)
from ..._deadline import Deadline
from ..._logfields import fields, loss_level
from ...cache_types import CacheEventType, CacheSnapshot
from ...group_types import GroupMember, check_member_id
from ...models import KeyValue
from ...ops import Compare, Op
from ...services_types import (
    ProviderStrategy,
    RegistrationEvent,
    RegistrationEventType,
    ServiceEvent,
    ServiceInstance,
    check_port,
    check_service_name,
    encode_instance,
    instance_from_kv,
    resolve_strategy,
)
from .cache import AsyncCacheEvents, AsyncPrefixCache
from .group import KEY_DELETED, AsyncGroup
from .recipe_client import AsyncRecipeClient
from .session import AsyncSession

__all__ = [
    "DEFAULT_SERVICE_TTL",
    "AsyncServiceDiscovery",
    "AsyncServiceRegistration",
    "AsyncServiceWatch",
    "RegistrationListener",
]

log = logging.getLogger("etcdsync.services")

DEFAULT_SERVICE_TTL = 10
"""Seconds a dead instance may stay listed: the default TTL of a registration's session."""

RegistrationListener = Callable[[RegistrationEvent], Any]
"""Called with each :class:`~etcdsync.services_types.RegistrationEvent` of a registration."""

# Re-registration attempts back off exponentially (with jitter) up to this.
_BACKOFF_START = 0.1
_BACKOFF_MAX = 5.0
# A taken instance id is replaced at most this many times per registration.
_REPLACE_ATTEMPTS = 3


def _kv_of(member: GroupMember) -> KeyValue:
    return KeyValue(
        member.key, member.value, member.create_revision, member.mod_revision, 1, member.lease
    )


class AsyncServiceRegistration:
    """One instance registered by this process; ``await services.register(...)``.

    While it lasts, the instance key exists, bound to the session's lease.  When
    the session ends the registration reports ``LOST``, registers again through
    a fresh session (retrying with backoff while etcd cannot be reached) and
    reports ``REREGISTERED``; when someone else deletes the key it reports
    ``REMOVED`` and ends.  :meth:`add_listener` receives these
    :class:`~etcdsync.services_types.RegistrationEvent`; :attr:`lost` is the
    membership's loss event (cleared by the re-registration).
    ``async with`` deregisters on exit.
    """

    def __init__(
        self,
        services: AsyncServiceDiscovery,
        name: str,
        instance_id: str,
        address: str,
        port: int,
        payload: Any,
    ) -> None:
        self._services = services
        self._client = services._client
        self.name = name
        self.instance_id = instance_id
        self.address = address
        self.port = port
        self._payload = payload
        self._group = AsyncGroup(
            services._client,
            f"{services.namespace}/{name}",
            ttl=None if services._session is not None else services._ttl,
            session=services._session,
        )
        self._key = f"{services.namespace}/{name}/{instance_id}".encode()
        self._state_lock = StateLock()
        self._op_lock = Lock()  # one join or leave at a time (keeper vs deregister)
        self._instance: ServiceInstance | None = None
        self._registered = Event()
        self._wake = Event()
        self._stop = Event()
        self._pending_loss: errors.MembershipLostError | None = None
        self._ended = False
        self._listeners: list[RegistrationListener] = []
        self._task: Task | None = None
        self.reregistrations = 0
        """How many times the instance was registered again after a lost session."""

    # --- state -------------------------------------------------------------------------

    @property
    def key(self) -> bytes:
        """The instance key ``<namespace>/<name>/<instance id>``."""
        return self._key

    @property
    def instance(self) -> ServiceInstance | None:
        """The instance as last registered (None before the first registration)."""
        return self._instance

    @property
    def registered(self) -> bool:
        """True while the instance key is known to exist (not lost, not deregistered)."""
        return self._registered.is_set() and not self._ended

    @property
    def lost(self) -> Event:
        """Set when the registration's membership is lost; cleared when it registers again."""
        return self._group.lost

    @property
    def ended(self) -> bool:
        """True once deregistered or removed by someone else: nothing renews it."""
        return self._ended

    async def wait_registered(self, timeout: float | None = None) -> ServiceInstance:
        """Wait until the instance is registered (again); return it.  Raises
        :class:`~etcdsync.errors.ServiceTimeout` after ``timeout`` seconds and
        :class:`~etcdsync.errors.ServiceError` once the registration has ended."""
        deadline = Deadline(timeout)
        while True:
            if self._ended:
                raise errors.ServiceError(f"the registration of {self._key!r} has ended")
            instance = self._instance
            if self._registered.is_set() and instance is not None:
                return instance
            if deadline.expired():
                raise errors.ServiceTimeout(f"{self._key!r} was not registered within {timeout} s")
            await wait_event(self._registered, min(deadline.remaining() or 0.5, 0.5))

    def add_listener(self, fn: RegistrationListener) -> None:
        """Call ``fn(event)`` on each ``LOST``, ``REREGISTERED`` and ``REMOVED``.

        It runs in the registration's task (thread, in the sync client); in the
        asyncio client it may be a coroutine function.  An exception it raises
        is logged under the ``etcdsync.callbacks`` logger.
        """
        if not callable(fn):
            raise errors.InvalidRequest(f"a listener must be callable, got {fn!r}")
        with self._state_lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: RegistrationListener) -> int:
        """Stop calling ``fn``; returns how many registrations were removed."""
        with self._state_lock:
            before = len(self._listeners)
            self._listeners = [cb for cb in self._listeners if cb != fn]
            return before - len(self._listeners)

    # --- registering -------------------------------------------------------------------

    async def _join(self, deadline: Deadline, replace: bool) -> ServiceInstance:
        """Create the instance key (replacing one of another lease if ``replace``)."""
        for _ in range(_REPLACE_ATTEMPTS):
            value = encode_instance(self.address, self.port, self._payload, time.time())
            try:
                member = await self._group.join(
                    value, member_id=self.instance_id, timeout=deadline.remaining()
                )
            except errors.GroupMemberExistsError as exc:
                if not replace:
                    raise self._exists("registered by another live process") from exc
                await self._replace(deadline, exc)
                continue
            except errors.GroupTimeout as exc:
                raise errors.ServiceTimeout(
                    f"{self._key!r} was not registered within {deadline.timeout} s"
                ) from exc
            instance = instance_from_kv(self._services._prefix, _kv_of(member))
            assert instance is not None, "an instance key"
            with self._state_lock:
                self._instance = instance
            self._registered.set()
            self._services._wrote(instance.create_revision)
            return instance
        raise self._exists("kept being registered again by another process")

    async def _replace(self, deadline: Deadline, cause: errors.EtcdError) -> None:
        """Delete the key holding our instance id, unless it is this process's."""
        found = (await self._client.get(self._key, timeout=deadline.rpc_timeout())).kv
        if found is None:
            return  # it went meanwhile
        session = self._services._session or await self._client.shared_session(self._services._ttl)
        if found.lease == session.lease_id:
            raise self._exists("registered by this process already") from cause
        await self._client.txn(
            [Compare.create_revision(self._key) == found.create_revision],
            [Op.delete(self._key)],
            timeout=deadline.rpc_timeout(),
        )
        log.warning(
            "service %r: instance %r replaced the registration of lease %x",
            self.name,
            self.instance_id,
            found.lease,
            extra=fields(
                "service", self.name, key=self._key, lease_id=found.lease, event="replaced"
            ),
        )

    def _exists(self, why: str) -> errors.InstanceExistsError:
        return errors.InstanceExistsError(
            f"instance {self.instance_id!r} of service {self.name!r} is {why}",
            name=self.name,
            instance_id=self.instance_id,
        )

    async def _register(self, deadline: Deadline, replace: bool) -> ServiceInstance:
        """The first registration; then the keeper follows the membership."""
        if not await acquire_lock(self._op_lock, deadline.remaining()):
            raise errors.ServiceTimeout(
                f"{self._key!r} was not registered within {deadline.timeout} s"
            )
        try:
            instance = await self._join(deadline, replace)
        finally:
            self._op_lock.release()
        self._group.add_lost_callback(self._on_lost)
        self._task = spawn(self._keep, name="etcdsync-service-registration")
        return instance

    def _on_lost(self, error: errors.MembershipLostError) -> None:
        """The membership's loss callback (keepalive or key watch): wake the keeper."""
        with self._state_lock:
            if self._ended:
                return
            self._pending_loss = error
        self._registered.clear()
        self._wake.set()

    async def _keep(self) -> None:
        """Re-register after each lost session, until deregistered."""
        while True:
            await wait_event(self._wake, None)
            with self._state_lock:
                if self._ended:
                    return
                self._wake.clear()
                error, self._pending_loss = self._pending_loss, None
            if error is None:
                continue
            instance = self._instance
            assert instance is not None
            if error.reason == KEY_DELETED:
                await self._removed(instance, error)
                return
            if self._client.closed or isinstance(error.__cause__, errors.ClientClosedError):
                # The session was closed (with the client), not lost: nothing to renew.
                await self._closed()
                return
            lost = fields("service", self.name, key=self._key, event="lost")
            log.warning("service %r: instance %r lost (%s); registering again", self.name,
                        self.instance_id, error, extra=lost)  # fmt: skip
            await self._emit(RegistrationEvent(RegistrationEventType.LOST, instance, error))
            again = await self._reregister()
            if again is None:
                return
            self.reregistrations += 1
            # The recovery from the loss warned about above: not a problem of its own.
            again_fields = fields("service", self.name, key=self._key, event="reregistered")
            log.info("service %r: instance %r registered again", self.name, self.instance_id,
                     extra=again_fields)  # fmt: skip
            await self._emit(RegistrationEvent(RegistrationEventType.REREGISTERED, again))

    async def _reregister(self) -> ServiceInstance | None:
        """Leave the lost membership and join again, retrying with backoff; None if the
        registration ended (deregistered, client closed) meanwhile."""
        delay = _BACKOFF_START
        while True:
            async with self._op_lock:
                if self._ended or self._client.closed:
                    return None
                try:
                    await self._group.leave()  # the lost membership (its key went with the lease)
                    return await self._join(Deadline(None), replace=True)
                except errors.ClientClosedError:
                    return None
                except errors.EtcdError as exc:
                    log.info("service %r: registering %r again failed: %s", self.name,
                             self.instance_id, exc)  # fmt: skip
            await wait_event(self._stop, random.uniform(delay / 2, delay))
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _closed(self) -> None:
        with self._state_lock:
            self._ended = True
        self._stop.set()
        self._services._forget(self)

    async def _removed(self, instance: ServiceInstance, error: errors.MembershipLostError) -> None:
        with self._state_lock:
            self._ended = True
        self._stop.set()
        log.warning("service %r: instance %r was deregistered by someone else", self.name,
                    self.instance_id,
                    extra=fields("service", self.name, key=self._key, event="removed"))  # fmt: skip
        self._services._forget(self)
        try:
            async with self._op_lock:
                await self._group.leave()
        except errors.EtcdError as exc:
            log.debug("service %r: leaving %r failed: %s", self.name, self.instance_id, exc)
        await self._emit(RegistrationEvent(RegistrationEventType.REMOVED, instance, error))

    async def _emit(self, event: RegistrationEvent) -> None:
        with self._state_lock:
            listeners = list(self._listeners)
        for fn in listeners:
            await run_callback("service-registration", fn, event)

    async def update(self, payload: Any, *, timeout: float | None = None) -> ServiceInstance:
        """Announce a new ``payload`` (watchers see an ``UPDATED`` instance).  Raises
        :class:`~etcdsync.errors.MembershipLostError` if the registration is lost
        at the moment (it keeps the new payload for its re-registration)."""
        value = encode_instance(self.address, self.port, payload, time.time())
        self._payload = payload
        member = await self._group.update(value, timeout=timeout)
        instance = instance_from_kv(self._services._prefix, _kv_of(member))
        assert instance is not None
        with self._state_lock:
            self._instance = instance
        self._services._wrote(instance.mod_revision)
        return instance

    async def deregister(self, *, timeout: float | None = None) -> None:
        """Delete the instance key and stop re-registering.  Idempotent.

        Raises :class:`~etcdsync.errors.ServiceTimeout` if etcd does not answer
        within ``timeout`` seconds; the key then lives until its lease ends (a
        shared session's lease lives as long as the client: call again).
        """
        deadline = Deadline(timeout)
        with self._state_lock:
            self._ended = True
        self._stop.set()
        self._wake.set()
        self._registered.clear()
        self._services._forget(self)
        if not await acquire_lock(self._op_lock, deadline.remaining()):
            raise errors.ServiceTimeout(f"{self._key!r} was not deregistered within {timeout} s")
        try:
            instance = self._instance
            try:
                await self._group.leave(timeout=deadline.remaining())
            except errors.GroupTimeout as exc:
                raise errors.ServiceTimeout(
                    f"{self._key!r} was not deregistered within {timeout} s"
                ) from exc
            if instance is not None:
                self._services._went(instance)
        finally:
            self._op_lock.release()
        # The keeper wakes, finds the registration ended and returns by itself.

    async def __aenter__(self) -> AsyncServiceRegistration:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.deregister()

    def __repr__(self) -> str:
        state = "ended" if self._ended else "registered" if self.registered else "lost"
        return f"<{type(self).__name__} {self._key!r} {state}>"


class AsyncServiceDiscovery:
    """The services of ``namespace``; create with ``client.services(namespace)``.

    ::

        services = etcd.services("prod")
        reg = await services.register("api", "api-7", "10.0.0.7", 8080, payload={"zone": "a"})
        instance = await services.choose("api")             # round-robin by default
        connect(instance.address, instance.port)
        async for event in services.watch("api"):           # ADDED / UPDATED / REMOVED
            ...
        await reg.deregister()

    **Registering** (:meth:`register`) writes ``<namespace>/<name>/<instance id>``
    bound to a session's lease: ``session=`` if given, else the client's shared
    session for ``ttl`` seconds (default 10): a process that dies disappears
    within that TTL.  See :class:`AsyncServiceRegistration` for what happens
    when the session is lost.

    **Finding** instances reads a prefix cache of the whole namespace, started
    at the first read (or by :meth:`start` / ``async with``): :meth:`instances`,
    :meth:`names` and :meth:`choose` are local reads that see this object's own
    registrations and deregistrations at once (they wait for the cache to catch
    up with them); others' changes arrive with the watch's latency.
    ``async with`` (or :meth:`close`) deregisters this object's instances and
    stops the cache.
    """

    def __init__(
        self,
        client: AsyncRecipeClient,
        namespace: str,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
    ) -> None:
        if not isinstance(namespace, str) or not namespace.strip("/"):
            raise errors.InvalidRequest(f"a namespace must be a non-empty str, got {namespace!r}")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise errors.InvalidRequest(f"ttl must be a positive int (seconds), got {ttl!r}")
        if session is not None and ttl is not None:
            raise errors.InvalidRequest("pass either session= or ttl=, not both")
        self._client = client
        self.namespace = namespace.rstrip("/")
        self._prefix = (self.namespace + "/").encode()
        self._ttl = ttl or DEFAULT_SERVICE_TTL
        self._session = session
        self._cache = AsyncPrefixCache(client, self._prefix)
        self._start_lock = Lock()
        self._lock = StateLock()
        self._registrations: dict[tuple[str, str], AsyncServiceRegistration] = {}
        self._strategies: dict[tuple[str, str], ProviderStrategy] = {}
        # Read-your-writes: the cache must have reached these before a read answers.
        self._seen_revision = 0
        self._gone: dict[bytes, int] = {}  # key -> create revision that must be gone

    @property
    def cache(self) -> AsyncPrefixCache:
        """The prefix cache of the namespace (started by the first read)."""
        return self._cache

    @property
    def ttl(self) -> int:
        """The TTL of the registrations' shared session (unless ``session=`` was given)."""
        return self._session.ttl if self._session is not None else self._ttl

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, *, timeout: float | None = None) -> AsyncServiceDiscovery:
        """Start the namespace's cache now (reads start it otherwise); returns ``self``."""
        await self._ensure_cache(Deadline(timeout))
        return self

    async def close(self, *, timeout: float | None = None) -> None:
        """Deregister this object's instances and stop the cache."""
        with self._lock:
            registrations = list(self._registrations.values())
        for registration in registrations:
            try:
                await registration.deregister(timeout=timeout)
            except errors.EtcdError as exc:
                log.log(loss_level(exc), "service %r: deregistering %r failed: %s",
                        registration.name, registration.instance_id, exc,
                        extra=fields("service", registration.name,
                                     event="deregister-failed"))  # fmt: skip
        await self._cache.stop()

    async def __aenter__(self) -> AsyncServiceDiscovery:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _ensure_cache(self, deadline: Deadline) -> AsyncPrefixCache:
        if self._cache.running:
            return self._cache
        if not await acquire_lock(self._start_lock, deadline.remaining()):
            raise errors.ServiceTimeout(f"the services of {self.namespace!r} were not read in time")
        try:
            await self._cache.start(timeout=deadline.remaining())
        except errors.CacheTimeout as exc:
            raise errors.ServiceTimeout(
                f"the services of {self.namespace!r} were not read within {deadline.timeout} s"
            ) from exc
        finally:
            self._start_lock.release()
        return self._cache

    # --- registering ----------------------------------------------------------------------

    async def register(
        self,
        name: str,
        instance_id: str,
        address: str,
        port: int,
        *,
        payload: Any = None,
        replace: bool = True,
        timeout: float | None = None,
    ) -> AsyncServiceRegistration:
        """Register the instance ``instance_id`` of the service ``name``, listening
        on ``address``:``port``, announcing ``payload`` (any JSON value); return
        its registration.

        An instance id held by another live process (a previous run whose lease
        has not expired yet) is taken over when ``replace`` (default), else
        :class:`~etcdsync.errors.InstanceExistsError`; one held by this object or
        this process's session always raises it.  Raises
        :class:`~etcdsync.errors.ServiceTimeout` after ``timeout`` seconds.
        """
        check_service_name(name)
        check_member_id(instance_id)
        check_port(port)
        if not isinstance(address, str) or not address:
            raise errors.InvalidRequest(f"address must be a non-empty str, got {address!r}")
        encode_instance(address, port, payload, 0.0)  # a payload that is not JSON fails now
        registration = AsyncServiceRegistration(self, name, instance_id, address, port, payload)
        with self._lock:
            if (name, instance_id) in self._registrations:
                raise registration._exists("registered by this object already")
            self._registrations[(name, instance_id)] = registration
        try:
            await registration._register(Deadline(timeout), replace)
        except BaseException:
            self._forget(registration)
            raise
        return registration

    async def deregister(
        self, name: str, instance_id: str, *, timeout: float | None = None
    ) -> bool:
        """Remove the instance ``instance_id`` of ``name``; True if a key was deleted.

        This object's own registration is deregistered (no more re-registration).
        Any other instance key is deleted as it is - its registration (in another
        process) then ends with a ``REMOVED`` event instead of registering again.
        """
        check_service_name(name)
        check_member_id(instance_id)
        with self._lock:
            own = self._registrations.get((name, instance_id))
        if own is not None:
            await own.deregister(timeout=timeout)
            return True
        key = f"{self.namespace}/{name}/{instance_id}"
        try:
            response = await self._client.delete(key, prev_kv=True, timeout=timeout)
        except errors.Timeout as exc:
            if timeout is None:
                raise
            raise errors.ServiceTimeout(f"{key!r} was not deregistered within {timeout} s") from exc
        for kv in response.prev_kvs:
            self._note_gone(kv.key, kv.create_revision)
        return response.deleted > 0

    def _forget(self, registration: AsyncServiceRegistration) -> None:
        with self._lock:
            key = (registration.name, registration.instance_id)
            if self._registrations.get(key) is registration:
                del self._registrations[key]

    def _wrote(self, revision: int) -> None:
        with self._lock:
            self._seen_revision = max(self._seen_revision, revision)

    def _went(self, instance: ServiceInstance) -> None:
        self._note_gone(instance.key, instance.create_revision)

    def _note_gone(self, key: bytes, create_revision: int) -> None:
        with self._lock:
            self._gone[key] = create_revision

    def registrations(self) -> list[AsyncServiceRegistration]:
        """This object's registrations that have not ended."""
        with self._lock:
            return list(self._registrations.values())

    # --- finding ---------------------------------------------------------------------------

    def _caught_up(self, snapshot: CacheSnapshot) -> bool:
        with self._lock:
            seen, gone = self._seen_revision, dict(self._gone)
        for key, create_revision in gone.items():
            kv = snapshot.get(key)
            if kv is not None and kv.create_revision == create_revision:
                return False
        return snapshot.revision >= seen

    async def _snapshot(self, timeout: float | None) -> CacheSnapshot:
        """The namespace's contents, once they reflect this object's own writes."""
        deadline = Deadline(timeout)
        cache = await self._ensure_cache(deadline)
        try:
            snapshot = await cache.wait_for(self._caught_up, timeout=deadline.remaining())
        except errors.CacheTimeout as exc:
            raise errors.ServiceTimeout(
                f"the services of {self.namespace!r} did not catch up within {timeout} s"
            ) from exc
        with self._lock:
            for key, create_revision in list(self._gone.items()):
                kv = snapshot.get(key)
                if kv is None or kv.create_revision != create_revision:
                    del self._gone[key]
        return snapshot

    def _parse(self, snapshot: CacheSnapshot, name: str | None) -> list[ServiceInstance]:
        found: list[ServiceInstance] = []
        start = self._prefix if name is None else self._prefix + name.encode() + b"/"
        for key in snapshot:
            if not key.startswith(start):
                continue
            instance = instance_from_kv(self._prefix, snapshot[key])
            if instance is not None and (name is None or instance.name == name):
                found.append(instance)
        found.sort(key=lambda instance: (instance.create_revision, instance.key))
        return found

    async def instances(self, name: str, *, timeout: float | None = None) -> list[ServiceInstance]:
        """The live instances of ``name``, in registration order (from the cache).

        ``timeout`` bounds the cache's first read and its catching up with this
        object's own writes (:class:`~etcdsync.errors.ServiceTimeout`).
        """
        check_service_name(name)
        return self._parse(await self._snapshot(timeout), name)

    async def all_instances(self, *, timeout: float | None = None) -> list[ServiceInstance]:
        """Every live instance of every service of the namespace, in registration order."""
        return self._parse(await self._snapshot(timeout), None)

    async def names(self, *, timeout: float | None = None) -> list[str]:
        """The names of the services that have live instances, sorted."""
        return sorted({instance.name for instance in await self.all_instances(timeout=timeout)})

    async def choose(
        self,
        name: str,
        strategy: str | ProviderStrategy = "round-robin",
        *,
        timeout: float | None = None,
    ) -> ServiceInstance:
        """One live instance of ``name``, picked by ``strategy``.

        ``"round-robin"`` (each call the next instance in registration order),
        ``"random"``, ``"sticky"`` (the same instance while it lives, then the
        next one round-robin), or any object with a ``choose(instances)`` method
        (:class:`~etcdsync.services_types.ProviderStrategy`).  A named strategy
        keeps its state per service name in this object.  Raises
        :class:`~etcdsync.errors.NoInstancesError` when there is none.
        """
        instances = await self.instances(name, timeout=timeout)
        if isinstance(strategy, str):
            with self._lock:
                chooser = self._strategies.get((name, strategy))
                if chooser is None:
                    chooser = self._strategies[(name, strategy)] = resolve_strategy(strategy)
        else:
            chooser = resolve_strategy(strategy)
        if not instances:
            raise errors.NoInstancesError(
                f"no live instance of service {name!r} in {self.namespace!r}", name=name
            )
        return chooser.choose(instances)

    def watch(self, name: str, *, include_existing: bool = True) -> AsyncServiceWatch:
        """Follow the instances of ``name``: ``async for event in services.watch(name):``.

        Yields a :class:`~etcdsync.services_types.ServiceEvent` per added, updated
        and removed instance, each once and in revision order, across reconnects;
        after a gap (compaction) a ``RESET`` and the net difference.  With
        ``include_existing`` (default) it starts with an ``ADDED`` (``initial``)
        per live instance.  The stream is registered at once; the cache is
        started at its first ``get()`` (or ``async with``) if need be.
        """
        check_service_name(name)
        stream = self._cache.events(
            initial=include_existing, key_prefix=self._prefix + name.encode() + b"/"
        )
        return AsyncServiceWatch(self, name, stream)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.namespace!r}>"


class AsyncServiceWatch:
    """The changes of one service's instances; create with ``services.watch(name)``.

    ``get(timeout)`` returns the next :class:`~etcdsync.services_types.ServiceEvent`
    (raising :class:`~etcdsync.errors.ServiceTimeout`); ``async for`` iterates;
    :meth:`cancel` ends it.
    """

    def __init__(
        self, services: AsyncServiceDiscovery, name: str, stream: AsyncCacheEvents
    ) -> None:
        self._services = services
        self.name = name
        self._stream = stream

    async def start(self, *, timeout: float | None = None) -> AsyncServiceWatch:
        """Start the namespace's cache if need be; returns ``self``."""
        await self._services._ensure_cache(Deadline(timeout))
        return self

    async def get(self, timeout: float | None = None) -> ServiceEvent:
        """The next change; ``StopAsyncIteration`` once cancelled."""
        deadline = Deadline(timeout)
        await self._services._ensure_cache(deadline)
        while True:
            try:
                event = await self._stream.get(deadline.remaining())
            except errors.CacheTimeout:
                raise errors.ServiceTimeout(
                    f"no change of service {self.name!r} within {timeout} s"
                ) from None
            if event.type is CacheEventType.RESET:
                return ServiceEvent(event.type, None, event.revision, resync=True)
            assert event.kv is not None
            instance = instance_from_kv(self._services._prefix, event.kv)
            if instance is None or instance.name != self.name:
                continue  # not an instance of this service (a nested name, a bad value)
            return ServiceEvent(event.type, instance, event.revision, event.initial, event.resync)

    def __aiter__(self) -> AsyncServiceWatch:
        return self

    async def __anext__(self) -> ServiceEvent:
        return await self.get()

    async def cancel(self) -> None:
        """Stop following; iteration ends after the events already received."""
        await self._stream.cancel()

    async def __aenter__(self) -> AsyncServiceWatch:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cancel()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._services.namespace!r} {self.name!r}>"
