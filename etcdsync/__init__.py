"""etcdsync: an etcd v3 client for Python, sync and asyncio.

>>> from etcdsync import Client
>>> with Client(["127.0.0.1:2379"]) as etcd:
...     etcd.put("greeting", "hello")
...     etcd.get("greeting").value
"""

from . import errors
from ._async.client import AsyncClient
from ._async.txn import AsyncTxn
from ._config import ChannelSettings, TLSConfig
from ._sync.client import Client
from ._sync.txn import Txn
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
    "AsyncClient",
    "AsyncTxn",
    "ChannelSettings",
    "Client",
    "CompactResponse",
    "Compare",
    "CompareResult",
    "CompareTarget",
    "DeleteResponse",
    "GetResponse",
    "KeyValue",
    "Op",
    "PutResponse",
    "ResponseHeader",
    "SortOrder",
    "SortTarget",
    "TLSConfig",
    "Txn",
    "TxnResponse",
    "__version__",
    "errors",
]
