"""etcdsync: an etcd v3 client for Python, sync and asyncio.

>>> from etcdsync import Client
>>> with Client(["127.0.0.1:2379"]) as etcd:
...     etcd.put("greeting", "hello")
...     etcd.get("greeting").value

Names are imported on first use (PEP 562), so ``import etcdsync.testing`` or
``import etcdsync.errors`` does not load gRPC and both client flavours.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AsyncClient": "._async.client",
    "AsyncConfigWatcher": "._async.concurrency.config",
    "AsyncElection": "._async.concurrency.election",
    "AsyncElectionObserver": "._async.concurrency.election_observer",
    "AsyncMutex": "._async.concurrency.mutex",
    "AsyncQueueLock": "._async.concurrency.queue_lock",
    "AsyncRWLock": "._async.concurrency.rwlock",
    "AsyncReentrantLock": "._async.concurrency.reentrant",
    "AsyncReentrantRWLock": "._async.concurrency.reentrant",
    "AsyncReadLock": "._async.concurrency.rwlock",
    "AsyncWriteLock": "._async.concurrency.rwlock",
    "AsyncSemaphore": "._async.concurrency.semaphore",
    "AsyncGroup": "._async.concurrency.group",
    "AsyncGroupWatch": "._async.concurrency.group_watch",
    "AsyncPrefixCache": "._async.concurrency.cache",
    "AsyncCacheEvents": "._async.concurrency.cache",
    "AsyncServiceDiscovery": "._async.concurrency.services",
    "AsyncServiceRegistration": "._async.concurrency.services",
    "AsyncServiceWatch": "._async.concurrency.services",
    "AsyncMultiLock": "._async.concurrency.multi_lock",
    "AsyncDelayQueue": "._async.concurrency.delay_queue",
    "AsyncPartitioner": "._async.concurrency.partitioner",
    "AsyncClaim": "._async.concurrency.locking_queue",
    "AsyncLockingQueue": "._async.concurrency.locking_queue",
    "AsyncPriorityQueue": "._async.concurrency.priority_queue",
    "AsyncQueue": "._async.concurrency.queue",
    "AsyncDoubleBarrier": "._async.concurrency.double_barrier",
    "AsyncBarrier": "._async.concurrency.barrier",
    "AsyncSTM": "._async.concurrency.stm",
    "AsyncCounter": "._async.concurrency.counter",
    "AsyncLeaseOnce": "._async.concurrency.lease_once",
    "AsyncLeadership": "._async.concurrency.leadership",
    "AsyncTerm": "._async.concurrency.leadership",
    "AsyncSession": "._async.concurrency.session",
    "AsyncKeepAlive": "._async.keepalive",
    "AsyncLeaderObserver": "._async.server_recipes",
    "AsyncTxn": "._async.txn",
    "AsyncNamespace": "._async.namespace",
    "AsyncWatcher": "._async.watcher",
    "ChannelSettings": "._config",
    "TLSConfig": "._config",
    "Client": "._sync.client",
    "ConfigWatcher": "._sync.concurrency.config",
    "Election": "._sync.concurrency.election",
    "ElectionObserver": "._sync.concurrency.election_observer",
    "Mutex": "._sync.concurrency.mutex",
    "QueueLock": "._sync.concurrency.queue_lock",
    "RWLock": "._sync.concurrency.rwlock",
    "ReentrantLock": "._sync.concurrency.reentrant",
    "ReentrantRWLock": "._sync.concurrency.reentrant",
    "ReadLock": "._sync.concurrency.rwlock",
    "WriteLock": "._sync.concurrency.rwlock",
    "Semaphore": "._sync.concurrency.semaphore",
    "Group": "._sync.concurrency.group",
    "GroupWatch": "._sync.concurrency.group_watch",
    "PrefixCache": "._sync.concurrency.cache",
    "CacheEvents": "._sync.concurrency.cache",
    "ServiceDiscovery": "._sync.concurrency.services",
    "ServiceRegistration": "._sync.concurrency.services",
    "ServiceWatch": "._sync.concurrency.services",
    "MultiLock": "._sync.concurrency.multi_lock",
    "DelayQueue": "._sync.concurrency.delay_queue",
    "Partitioner": "._sync.concurrency.partitioner",
    "Claim": "._sync.concurrency.locking_queue",
    "LockingQueue": "._sync.concurrency.locking_queue",
    "PriorityQueue": "._sync.concurrency.priority_queue",
    "Queue": "._sync.concurrency.queue",
    "DoubleBarrier": "._sync.concurrency.double_barrier",
    "Barrier": "._sync.concurrency.barrier",
    "STM": "._sync.concurrency.stm",
    "Counter": "._sync.concurrency.counter",
    "LeaseOnce": "._sync.concurrency.lease_once",
    "Leadership": "._sync.concurrency.leadership",
    "Term": "._sync.concurrency.leadership",
    "Session": "._sync.concurrency.session",
    "KeepAlive": "._sync.keepalive",
    "LeaderObserver": "._sync.server_recipes",
    "Txn": "._sync.txn",
    "Namespace": "._sync.namespace",
    "Watcher": "._sync.watcher",
    "Alarm": ".admin_types",
    "AlarmType": ".admin_types",
    "AuthStatus": ".admin_types",
    "HashKVResult": ".admin_types",
    "HashResult": ".admin_types",
    "LeaderKey": ".admin_types",
    "Member": ".admin_types",
    "MemberAddResult": ".admin_types",
    "Permission": ".admin_types",
    "PermissionType": ".admin_types",
    "Status": ".admin_types",
    "ConfigSnapshot": ".config_types",
    "HeldLock": ".locked_types",
    "current_lock": ".locked_types",
    "Lease": ".lease_types",
    "LeaseKeepAliveResult": ".lease_types",
    "LeaseLostReason": ".lease_types",
    "LeaseTimeToLive": ".lease_types",
    "Isolation": ".stm_types",
    "QueueItem": ".queue_types",
    "GroupMember": ".group_types",
    "MembershipEvent": ".group_types",
    "MembershipEventType": ".group_types",
    "OwnershipChange": ".group_types",
    "OwnershipChangeType": ".group_types",
    "CacheEvent": ".cache_types",
    "CacheEventType": ".cache_types",
    "CacheSnapshot": ".cache_types",
    "ServiceInstance": ".services_types",
    "ServiceEvent": ".services_types",
    "RegistrationEvent": ".services_types",
    "RegistrationEventType": ".services_types",
    "RoundRobinStrategy": ".services_types",
    "RandomStrategy": ".services_types",
    "StickyStrategy": ".services_types",
    "CompactResponse": ".models",
    "DeleteResponse": ".models",
    "GetResponse": ".models",
    "KeyValue": ".models",
    "PutResponse": ".models",
    "ResponseHeader": ".models",
    "TxnResponse": ".models",
    "Compare": ".ops",
    "CompareResult": ".ops",
    "CompareTarget": ".ops",
    "Op": ".ops",
    "SortOrder": ".ops",
    "SortTarget": ".ops",
    "Event": ".watch_types",
    "EventType": ".watch_types",
    "WatchResponse": ".watch_types",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if name == "errors":
            return importlib.import_module(".errors", __name__)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, "errors"])


__all__ = sorted([*_EXPORTS, "__version__", "errors"])

if TYPE_CHECKING:
    from . import errors as errors
    from ._async.client import (
        AsyncClient as AsyncClient,
    )
    from ._async.concurrency.barrier import AsyncBarrier as AsyncBarrier
    from ._async.concurrency.cache import AsyncCacheEvents as AsyncCacheEvents
    from ._async.concurrency.cache import AsyncPrefixCache as AsyncPrefixCache
    from ._async.concurrency.config import (
        AsyncConfigWatcher as AsyncConfigWatcher,
    )
    from ._async.concurrency.counter import AsyncCounter as AsyncCounter
    from ._async.concurrency.delay_queue import AsyncDelayQueue as AsyncDelayQueue
    from ._async.concurrency.double_barrier import AsyncDoubleBarrier as AsyncDoubleBarrier
    from ._async.concurrency.election import (
        AsyncElection as AsyncElection,
    )
    from ._async.concurrency.election_observer import (
        AsyncElectionObserver as AsyncElectionObserver,
    )
    from ._async.concurrency.group import AsyncGroup as AsyncGroup
    from ._async.concurrency.group_watch import AsyncGroupWatch as AsyncGroupWatch
    from ._async.concurrency.leadership import AsyncLeadership as AsyncLeadership
    from ._async.concurrency.leadership import AsyncTerm as AsyncTerm
    from ._async.concurrency.lease_once import AsyncLeaseOnce as AsyncLeaseOnce
    from ._async.concurrency.locking_queue import AsyncClaim as AsyncClaim
    from ._async.concurrency.locking_queue import AsyncLockingQueue as AsyncLockingQueue
    from ._async.concurrency.multi_lock import AsyncMultiLock as AsyncMultiLock
    from ._async.concurrency.mutex import (
        AsyncMutex as AsyncMutex,
    )
    from ._async.concurrency.partitioner import AsyncPartitioner as AsyncPartitioner
    from ._async.concurrency.priority_queue import AsyncPriorityQueue as AsyncPriorityQueue
    from ._async.concurrency.queue import AsyncQueue as AsyncQueue
    from ._async.concurrency.queue_lock import (
        AsyncQueueLock as AsyncQueueLock,
    )
    from ._async.concurrency.reentrant import (
        AsyncReentrantLock as AsyncReentrantLock,
    )
    from ._async.concurrency.reentrant import (
        AsyncReentrantRWLock as AsyncReentrantRWLock,
    )
    from ._async.concurrency.rwlock import (
        AsyncReadLock as AsyncReadLock,
    )
    from ._async.concurrency.rwlock import (
        AsyncRWLock as AsyncRWLock,
    )
    from ._async.concurrency.rwlock import (
        AsyncWriteLock as AsyncWriteLock,
    )
    from ._async.concurrency.semaphore import (
        AsyncSemaphore as AsyncSemaphore,
    )
    from ._async.concurrency.services import AsyncServiceDiscovery as AsyncServiceDiscovery
    from ._async.concurrency.services import AsyncServiceRegistration as AsyncServiceRegistration
    from ._async.concurrency.services import AsyncServiceWatch as AsyncServiceWatch
    from ._async.concurrency.session import (
        AsyncSession as AsyncSession,
    )
    from ._async.concurrency.stm import AsyncSTM as AsyncSTM
    from ._async.keepalive import (
        AsyncKeepAlive as AsyncKeepAlive,
    )
    from ._async.namespace import (
        AsyncNamespace as AsyncNamespace,
    )
    from ._async.server_recipes import (
        AsyncLeaderObserver as AsyncLeaderObserver,
    )
    from ._async.txn import (
        AsyncTxn as AsyncTxn,
    )
    from ._async.watcher import (
        AsyncWatcher as AsyncWatcher,
    )
    from ._config import (
        ChannelSettings as ChannelSettings,
    )
    from ._config import (
        TLSConfig as TLSConfig,
    )
    from ._sync.client import (
        Client as Client,
    )
    from ._sync.concurrency.barrier import Barrier as Barrier
    from ._sync.concurrency.cache import CacheEvents as CacheEvents
    from ._sync.concurrency.cache import PrefixCache as PrefixCache
    from ._sync.concurrency.config import (
        ConfigWatcher as ConfigWatcher,
    )
    from ._sync.concurrency.counter import Counter as Counter
    from ._sync.concurrency.delay_queue import DelayQueue as DelayQueue
    from ._sync.concurrency.double_barrier import DoubleBarrier as DoubleBarrier
    from ._sync.concurrency.election import (
        Election as Election,
    )
    from ._sync.concurrency.election_observer import (
        ElectionObserver as ElectionObserver,
    )
    from ._sync.concurrency.group import Group as Group
    from ._sync.concurrency.group_watch import GroupWatch as GroupWatch
    from ._sync.concurrency.leadership import Leadership as Leadership
    from ._sync.concurrency.leadership import Term as Term
    from ._sync.concurrency.lease_once import LeaseOnce as LeaseOnce
    from ._sync.concurrency.locking_queue import Claim as Claim
    from ._sync.concurrency.locking_queue import LockingQueue as LockingQueue
    from ._sync.concurrency.multi_lock import MultiLock as MultiLock
    from ._sync.concurrency.mutex import (
        Mutex as Mutex,
    )
    from ._sync.concurrency.partitioner import Partitioner as Partitioner
    from ._sync.concurrency.priority_queue import PriorityQueue as PriorityQueue
    from ._sync.concurrency.queue import Queue as Queue
    from ._sync.concurrency.queue_lock import (
        QueueLock as QueueLock,
    )
    from ._sync.concurrency.reentrant import (
        ReentrantLock as ReentrantLock,
    )
    from ._sync.concurrency.reentrant import (
        ReentrantRWLock as ReentrantRWLock,
    )
    from ._sync.concurrency.rwlock import (
        ReadLock as ReadLock,
    )
    from ._sync.concurrency.rwlock import (
        RWLock as RWLock,
    )
    from ._sync.concurrency.rwlock import (
        WriteLock as WriteLock,
    )
    from ._sync.concurrency.semaphore import (
        Semaphore as Semaphore,
    )
    from ._sync.concurrency.services import ServiceDiscovery as ServiceDiscovery
    from ._sync.concurrency.services import ServiceRegistration as ServiceRegistration
    from ._sync.concurrency.services import ServiceWatch as ServiceWatch
    from ._sync.concurrency.session import (
        Session as Session,
    )
    from ._sync.concurrency.stm import STM as STM
    from ._sync.keepalive import (
        KeepAlive as KeepAlive,
    )
    from ._sync.namespace import (
        Namespace as Namespace,
    )
    from ._sync.server_recipes import (
        LeaderObserver as LeaderObserver,
    )
    from ._sync.txn import (
        Txn as Txn,
    )
    from ._sync.watcher import (
        Watcher as Watcher,
    )
    from .admin_types import (
        Alarm as Alarm,
    )
    from .admin_types import (
        AlarmType as AlarmType,
    )
    from .admin_types import (
        AuthStatus as AuthStatus,
    )
    from .admin_types import (
        HashKVResult as HashKVResult,
    )
    from .admin_types import (
        HashResult as HashResult,
    )
    from .admin_types import (
        LeaderKey as LeaderKey,
    )
    from .admin_types import (
        Member as Member,
    )
    from .admin_types import (
        MemberAddResult as MemberAddResult,
    )
    from .admin_types import (
        Permission as Permission,
    )
    from .admin_types import (
        PermissionType as PermissionType,
    )
    from .admin_types import (
        Status as Status,
    )
    from .cache_types import CacheEvent as CacheEvent
    from .cache_types import CacheEventType as CacheEventType
    from .cache_types import CacheSnapshot as CacheSnapshot
    from .config_types import (
        ConfigSnapshot as ConfigSnapshot,
    )
    from .group_types import GroupMember as GroupMember
    from .group_types import MembershipEvent as MembershipEvent
    from .group_types import MembershipEventType as MembershipEventType
    from .group_types import OwnershipChange as OwnershipChange
    from .group_types import OwnershipChangeType as OwnershipChangeType
    from .lease_types import (
        Lease as Lease,
    )
    from .lease_types import (
        LeaseKeepAliveResult as LeaseKeepAliveResult,
    )
    from .lease_types import (
        LeaseLostReason as LeaseLostReason,
    )
    from .lease_types import (
        LeaseTimeToLive as LeaseTimeToLive,
    )
    from .locked_types import HeldLock as HeldLock
    from .locked_types import current_lock as current_lock
    from .models import (
        CompactResponse as CompactResponse,
    )
    from .models import (
        DeleteResponse as DeleteResponse,
    )
    from .models import (
        GetResponse as GetResponse,
    )
    from .models import (
        KeyValue as KeyValue,
    )
    from .models import (
        PutResponse as PutResponse,
    )
    from .models import (
        ResponseHeader as ResponseHeader,
    )
    from .models import (
        TxnResponse as TxnResponse,
    )
    from .ops import (
        Compare as Compare,
    )
    from .ops import (
        CompareResult as CompareResult,
    )
    from .ops import (
        CompareTarget as CompareTarget,
    )
    from .ops import (
        Op as Op,
    )
    from .ops import (
        SortOrder as SortOrder,
    )
    from .ops import (
        SortTarget as SortTarget,
    )
    from .queue_types import QueueItem as QueueItem
    from .services_types import RandomStrategy as RandomStrategy
    from .services_types import RegistrationEvent as RegistrationEvent
    from .services_types import RegistrationEventType as RegistrationEventType
    from .services_types import RoundRobinStrategy as RoundRobinStrategy
    from .services_types import ServiceEvent as ServiceEvent
    from .services_types import ServiceInstance as ServiceInstance
    from .services_types import StickyStrategy as StickyStrategy
    from .stm_types import Isolation as Isolation
    from .watch_types import (
        Event as Event,
    )
    from .watch_types import (
        EventType as EventType,
    )
    from .watch_types import (
        WatchResponse as WatchResponse,
    )
