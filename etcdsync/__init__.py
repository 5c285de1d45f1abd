"""etcdsync: an etcd v3 client for Python, sync and asyncio.

>>> from etcdsync import Client
>>> with Client(["127.0.0.1:2379"]) as etcd:
...     etcd.put("greeting", "hello")
...     etcd.get("greeting").value
"""

from . import errors
from ._async.client import AsyncClient
from ._async.concurrency.config import AsyncConfigWatcher
from ._async.concurrency.election import AsyncElection, AsyncElectionObserver
from ._async.concurrency.mutex import AsyncMutex, AsyncQueueLock
from ._async.concurrency.rwlock import AsyncReadLock, AsyncRWLock, AsyncWriteLock
from ._async.concurrency.semaphore import AsyncSemaphore
from ._async.keepalive import AsyncKeepAlive
from ._async.server_recipes import AsyncLeaderObserver
from ._async.txn import AsyncTxn
from ._config import ChannelSettings, TLSConfig
from ._sync.client import Client
from ._sync.concurrency.config import ConfigWatcher
from ._sync.concurrency.election import Election, ElectionObserver
from ._sync.concurrency.mutex import Mutex, QueueLock
from ._sync.concurrency.rwlock import ReadLock, RWLock, WriteLock
from ._sync.concurrency.semaphore import Semaphore
from ._sync.keepalive import KeepAlive
from ._sync.server_recipes import LeaderObserver
from ._sync.txn import Txn
from .admin_types import (
    Alarm,
    AlarmType,
    AuthStatus,
    HashKVResult,
    HashResult,
    LeaderKey,
    Member,
    MemberAddResult,
    Permission,
    PermissionType,
    Status,
)
from .config_types import ConfigSnapshot
from .lease_types import Lease, LeaseKeepAliveResult, LeaseLostReason, LeaseTimeToLive
from .models import (
    CompactResponse,
    DeleteResponse,
    GetResponse,
    KeyValue,
    PutResponse,
    ResponseHeader,
    TxnResponse,
)
from .ops import Compare, CompareResult, CompareTarget, Op, SortOrder, SortTarget

__version__ = "0.1.0"

__all__ = [
    "Alarm",
    "AlarmType",
    "AsyncClient",
    "AsyncConfigWatcher",
    "AsyncElection",
    "AsyncElectionObserver",
    "AsyncKeepAlive",
    "AsyncLeaderObserver",
    "AsyncMutex",
    "AsyncQueueLock",
    "AsyncRWLock",
    "AsyncReadLock",
    "AsyncSemaphore",
    "AsyncTxn",
    "AsyncWriteLock",
    "AuthStatus",
    "ChannelSettings",
    "Client",
    "CompactResponse",
    "Compare",
    "CompareResult",
    "CompareTarget",
    "ConfigSnapshot",
    "ConfigWatcher",
    "DeleteResponse",
    "Election",
    "ElectionObserver",
    "GetResponse",
    "HashKVResult",
    "HashResult",
    "KeepAlive",
    "KeyValue",
    "LeaderKey",
    "LeaderObserver",
    "Lease",
    "LeaseKeepAliveResult",
    "LeaseLostReason",
    "LeaseTimeToLive",
    "Member",
    "MemberAddResult",
    "Mutex",
    "Op",
    "Permission",
    "PermissionType",
    "PutResponse",
    "QueueLock",
    "RWLock",
    "ReadLock",
    "ResponseHeader",
    "Semaphore",
    "SortOrder",
    "SortTarget",
    "Status",
    "TLSConfig",
    "Txn",
    "TxnResponse",
    "WriteLock",
    "__version__",
    "errors",
]
