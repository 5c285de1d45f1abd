"""The private descriptor pool that holds etcdsync's generated etcd protos.

Every generated ``*_pb2`` module in this package adds its file to ``POOL`` (not to
``google.protobuf.descriptor_pool.Default()``) and builds its message classes with
:func:`build_messages` below. Other etcd clients register the same file and symbol
names (``kv.proto``, ``mvccpb.KeyValue``, ``etcdserverpb.RangeRequest``, ...) in the
default pool; keeping ours apart lets both load in one process, in either order.

Why not protobuf's own ``builder.BuildTopDescriptorsAndMessages``: it also registers
each class in the default symbol database, and with the pure-Python runtime
(``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``) that puts our message
descriptors into the default pool by full name, where they clash with another
client's. :func:`build_messages` does the same work minus that registration.

This file is hand-written (not generated); keep it working on every protobuf
runtime etcdsync supports (4.21 up to 7.x; upb, cpp and python).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf import message as _message
from google.protobuf.internal import enum_type_wrapper

try:
    from google.protobuf.reflection import GeneratedProtocolMessageType as _MessageType
except ImportError:  # pragma: no cover - a runtime without the reflection module
    from google.protobuf.message_factory import (  # type: ignore[attr-defined,no-redef]
        _GENERATED_PROTOCOL_MESSAGE_TYPE as _MessageType,
    )

__all__ = ["POOL", "build_messages"]

#: The descriptor pool of every etcdsync ``*_pb2`` module.
POOL = descriptor_pool.DescriptorPool()


def _build_message(module_name: str, msg_des: Any, prefix: str) -> Any:
    attrs: dict[str, Any] = {}
    for name, nested in msg_des.nested_types_by_name.items():
        attrs[name] = _build_message(module_name, nested, prefix + msg_des.name + ".")
    attrs["DESCRIPTOR"] = msg_des
    attrs["__module__"] = module_name
    attrs["__qualname__"] = prefix + msg_des.name
    return _MessageType(msg_des.name, (_message.Message,), attrs)


def build_messages(file_des: Any, module_name: str, module: dict[str, Any]) -> None:
    """Fill a generated module's globals from its file descriptor.

    Mirrors ``google.protobuf.internal.builder.BuildTopDescriptorsAndMessages``
    (top-level enums and their values, services, message classes) but does not
    touch the default symbol database or the default pool.
    """
    for name, enum_des in file_des.enum_types_by_name.items():
        module["_" + name.upper()] = enum_des
        module[name] = enum_type_wrapper.EnumTypeWrapper(enum_des)
        for value in enum_des.values:
            module[value.name] = value.number
    for name, ext_des in file_des.extensions_by_name.items():
        module[name.upper() + "_FIELD_NUMBER"] = ext_des.number
        module[name] = ext_des
    for name, service in file_des.services_by_name.items():
        module["_" + name.upper()] = service
    for name, msg_des in file_des.message_types_by_name.items():
        module[name] = _build_message(module_name, msg_des, "")
