"""Driver for python-etcd3 0.12 (``etcd3``), run in bench/.venvs/etcd3.

etcd3's generated protobuf modules predate protobuf 4, so the runner starts this
driver with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python (pure-Python protobuf).
"""

from __future__ import annotations

import functools

import _etcd3_api
import _sync_harness as h
import etcd3

if __name__ == "__main__":
    h.main(functools.partial(_etcd3_api.Etcd3Adapter, etcd3, "etcd3"), "etcd3")
