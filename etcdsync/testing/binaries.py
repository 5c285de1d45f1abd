"""Locate etcd server binaries for tests.

The search lives in :mod:`etcdsync._embedded.binaries`, which ``etcdsync server``
uses too; this module keeps its names where the harness's users import them.
"""

from __future__ import annotations

from .._embedded.binaries import (
    DEFAULT_VERSION,
    ENV_VAR,
    EtcdBinary,
    EtcdNotFound,
    available_binaries,
    find_etcd,
    requested_version,
)

__all__ = [
    "DEFAULT_VERSION",
    "ENV_VAR",
    "EtcdBinary",
    "EtcdNotFound",
    "available_binaries",
    "find_etcd",
    "requested_version",
]
