"""Driver for ``etcd-sdk-python`` (imports as ``pyetcd``), run in bench/.venvs/pyetcd.

A fork of python-etcd3 with the same API and regenerated protobuf modules.
"""

from __future__ import annotations

import functools

import _etcd3_api
import _sync_harness as h
import pyetcd

if __name__ == "__main__":
    h.main(functools.partial(_etcd3_api.Etcd3Adapter, pyetcd, "etcd-sdk-python"), "pyetcd")
