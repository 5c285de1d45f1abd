"""Tests of the generated etcd message modules in etcdsync._pb (no etcd server needed).

They check the wire format (round trips, known bytes, gRPC method paths) and that the
modules keep their descriptors in etcdsync's private pool, so they load next to other
etcd clients that register the same proto files and names in protobuf's default pool.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from etcdsync._pb import _pool, auth_pb2, kv_pb2, rpc_pb2, v3election_pb2, v3lock_pb2

PB_MODULES = [kv_pb2, auth_pb2, rpc_pb2, v3lock_pb2, v3election_pb2]
PB_DIR = Path(_pool.__file__).resolve().parent
# The directory that holds the etcdsync package this test imported.
PKG_PARENT = PB_DIR.parent.parent
REPO_ROOT = Path(__file__).resolve().parent.parent


def _roundtrip(msg: Any) -> Any:
    data = msg.SerializeToString()
    back = type(msg).FromString(data)
    assert back == msg
    assert back.SerializeToString() == data
    return back


# ---------------------------------------------------------------- wire format


def test_range_request_every_field_round_trips() -> None:
    req = rpc_pb2.RangeRequest(
        key=b"a",
        range_end=b"b",
        limit=10,
        revision=42,
        sort_order=rpc_pb2.RangeRequest.DESCEND,
        sort_target=rpc_pb2.RangeRequest.MOD,
        serializable=True,
        keys_only=True,
        count_only=True,
        min_mod_revision=1,
        max_mod_revision=2,
        min_create_revision=3,
        max_create_revision=4,
    )
    # Every field of the message is set (so a new field upstream shows up here).
    assert len(req.ListFields()) == len(rpc_pb2.RangeRequest.DESCRIPTOR.fields) == 13
    back = _roundtrip(req)
    assert back.sort_order == rpc_pb2.RangeRequest.DESCEND == 2
    assert back.sort_target == rpc_pb2.RangeRequest.MOD == 3
    assert back.max_create_revision == 4


def test_txn_request_nested_round_trips() -> None:
    inner = rpc_pb2.TxnRequest(
        success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"x", limit=1))]
    )
    txn = rpc_pb2.TxnRequest(
        compare=[
            rpc_pb2.Compare(
                key=b"k",
                target=rpc_pb2.Compare.VALUE,
                result=rpc_pb2.Compare.NOT_EQUAL,
                value=b"v",
            ),
            rpc_pb2.Compare(
                key=b"a",
                range_end=b"z",
                target=rpc_pb2.Compare.MOD,
                result=rpc_pb2.Compare.LESS,
                mod_revision=7,
            ),
        ],
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k", value=b"w", lease=5)),
            rpc_pb2.RequestOp(request_txn=inner),
        ],
        failure=[
            rpc_pb2.RequestOp(
                request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"k", prev_kv=True)
            )
        ],
    )
    back = _roundtrip(txn)
    assert back.compare[0].WhichOneof("target_union") == "value"
    assert back.compare[1].WhichOneof("target_union") == "mod_revision"
    assert back.compare[1].range_end == b"z"
    assert [op.WhichOneof("request") for op in back.success] == ["request_put", "request_txn"]
    assert back.success[1].request_txn.success[0].request_range.key == b"x"
    assert back.failure[0].request_delete_range.prev_kv is True

    resp = rpc_pb2.TxnResponse(
        header=rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=3, raft_term=4),
        succeeded=True,
        responses=[
            rpc_pb2.ResponseOp(
                response_range=rpc_pb2.RangeResponse(
                    kvs=[kv_pb2.KeyValue(key=b"k", value=b"v", mod_revision=3)], count=1
                )
            ),
            rpc_pb2.ResponseOp(response_txn=rpc_pb2.TxnResponse(succeeded=False)),
        ],
    )
    back_resp = _roundtrip(resp)
    assert back_resp.responses[0].response_range.kvs[0].value == b"v"
    assert back_resp.responses[1].WhichOneof("response") == "response_txn"


def test_watch_request_oneof() -> None:
    create = rpc_pb2.WatchRequest(
        create_request=rpc_pb2.WatchCreateRequest(
            key=b"a",
            range_end=b"b",
            start_revision=5,
            progress_notify=True,
            filters=[rpc_pb2.WatchCreateRequest.NOPUT, rpc_pb2.WatchCreateRequest.NODELETE],
            prev_kv=True,
            watch_id=9,
            fragment=True,
        )
    )
    back = _roundtrip(create)
    assert back.WhichOneof("request_union") == "create_request"
    assert list(back.create_request.filters) == [0, 1]

    # Setting another member of the oneof clears the first.
    msg = rpc_pb2.WatchRequest()
    msg.CopyFrom(create)
    msg.cancel_request.watch_id = 9
    assert msg.WhichOneof("request_union") == "cancel_request"
    assert not msg.HasField("create_request")
    assert _roundtrip(msg).cancel_request.watch_id == 9

    # An empty message member of the oneof still goes over the wire.
    progress = rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())
    assert progress.SerializeToString() == b"\x1a\x00"
    assert _roundtrip(progress).WhichOneof("request_union") == "progress_request"

    resp = rpc_pb2.WatchResponse(
        watch_id=9,
        events=[
            kv_pb2.Event(
                type=kv_pb2.Event.DELETE,
                kv=kv_pb2.KeyValue(key=b"a", mod_revision=6),
                prev_kv=kv_pb2.KeyValue(key=b"a", value=b"old"),
            )
        ],
    )
    assert _roundtrip(resp).events[0].prev_kv.value == b"old"


def test_known_wire_bytes() -> None:
    # Field numbers and types as etcd 3.5 puts them on the wire.
    assert rpc_pb2.PutRequest(key=b"a", value=b"b").SerializeToString() == b"\n\x01a\x12\x01b"
    assert rpc_pb2.RangeRequest(key=b"k", limit=1).SerializeToString() == b"\n\x01k\x18\x01"
    assert rpc_pb2.Compare(key=b"k", range_end=b"z").SerializeToString() == (
        b"\x1a\x01k\x82\x04\x01z"  # range_end is field 64
    )
    assert rpc_pb2.WatchResponse(events=[kv_pb2.Event()]).SerializeToString() == b"Z\x00"
    assert rpc_pb2.LeaseGrantRequest(TTL=5, ID=7).SerializeToString() == b"\x08\x05\x10\x07"
    kv = kv_pb2.KeyValue.FromString(b"\n\x03foo\x10\x02\x18\x03 \x01*\x03bar0\x04")
    assert (kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease) == (
        b"foo",
        2,
        3,
        1,
        b"bar",
        4,
    )


def test_other_modules_round_trip() -> None:
    _roundtrip(v3lock_pb2.LockRequest(name=b"lock", lease=1))
    _roundtrip(v3lock_pb2.LockResponse(header=rpc_pb2.ResponseHeader(revision=1), key=b"lock/1"))
    leader = v3election_pb2.LeaderKey(name=b"e", key=b"e/1", rev=3, lease=4)
    _roundtrip(v3election_pb2.ProclaimRequest(leader=leader, value=b"v"))
    _roundtrip(v3election_pb2.LeaderResponse(kv=kv_pb2.KeyValue(key=b"e/1", value=b"v")))
    perm = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"a", range_end=b"b")
    _roundtrip(rpc_pb2.AuthRoleGrantPermissionRequest(name="r", perm=perm))
    _roundtrip(
        auth_pb2.User(name=b"u", roles=["r"], options=auth_pb2.UserAddOptions(no_password=True))
    )
    _roundtrip(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET, alarm=rpc_pb2.NOSPACE))
    assert rpc_pb2.AlarmType.Name(rpc_pb2.CORRUPT) == "CORRUPT"
    _roundtrip(rpc_pb2.StatusResponse(version="3.5.1", dbSize=1, isLearner=True, errors=["e"]))


def test_messages_pickle() -> None:
    txn = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k"))])
    assert pickle.loads(pickle.dumps(txn)) == txn
    assert rpc_pb2.RangeRequest.__module__ == "etcdsync._pb.rpc_pb2"


# gRPC path -> (client streaming, server streaming), for every method etcdsync may call.
EXPECTED_METHODS = {
    "/etcdserverpb.KV/Range": (False, False),
    "/etcdserverpb.KV/Put": (False, False),
    "/etcdserverpb.KV/DeleteRange": (False, False),
    "/etcdserverpb.KV/Txn": (False, False),
    "/etcdserverpb.KV/Compact": (False, False),
    "/etcdserverpb.Watch/Watch": (True, True),
    "/etcdserverpb.Lease/LeaseGrant": (False, False),
    "/etcdserverpb.Lease/LeaseRevoke": (False, False),
    "/etcdserverpb.Lease/LeaseKeepAlive": (True, True),
    "/etcdserverpb.Lease/LeaseTimeToLive": (False, False),
    "/etcdserverpb.Lease/LeaseLeases": (False, False),
    "/etcdserverpb.Cluster/MemberAdd": (False, False),
    "/etcdserverpb.Cluster/MemberRemove": (False, False),
    "/etcdserverpb.Cluster/MemberUpdate": (False, False),
    "/etcdserverpb.Cluster/MemberList": (False, False),
    "/etcdserverpb.Cluster/MemberPromote": (False, False),
    "/etcdserverpb.Maintenance/Alarm": (False, False),
    "/etcdserverpb.Maintenance/Status": (False, False),
    "/etcdserverpb.Maintenance/Defragment": (False, False),
    "/etcdserverpb.Maintenance/Hash": (False, False),
    "/etcdserverpb.Maintenance/HashKV": (False, False),
    "/etcdserverpb.Maintenance/Snapshot": (False, True),
    "/etcdserverpb.Maintenance/MoveLeader": (False, False),
    "/etcdserverpb.Maintenance/Downgrade": (False, False),
    "/etcdserverpb.Auth/AuthEnable": (False, False),
    "/etcdserverpb.Auth/AuthDisable": (False, False),
    "/etcdserverpb.Auth/AuthStatus": (False, False),
    "/etcdserverpb.Auth/Authenticate": (False, False),
    "/etcdserverpb.Auth/UserAdd": (False, False),
    "/etcdserverpb.Auth/UserGet": (False, False),
    "/etcdserverpb.Auth/UserList": (False, False),
    "/etcdserverpb.Auth/UserDelete": (False, False),
    "/etcdserverpb.Auth/UserChangePassword": (False, False),
    "/etcdserverpb.Auth/UserGrantRole": (False, False),
    "/etcdserverpb.Auth/UserRevokeRole": (False, False),
    "/etcdserverpb.Auth/RoleAdd": (False, False),
    "/etcdserverpb.Auth/RoleGet": (False, False),
    "/etcdserverpb.Auth/RoleList": (False, False),
    "/etcdserverpb.Auth/RoleDelete": (False, False),
    "/etcdserverpb.Auth/RoleGrantPermission": (False, False),
    "/etcdserverpb.Auth/RoleRevokePermission": (False, False),
    "/v3lockpb.Lock/Lock": (False, False),
    "/v3lockpb.Lock/Unlock": (False, False),
    "/v3electionpb.Election/Campaign": (False, False),
    "/v3electionpb.Election/Proclaim": (False, False),
    "/v3electionpb.Election/Leader": (False, False),
    "/v3electionpb.Election/Observe": (False, True),
    "/v3electionpb.Election/Resign": (False, False),
}


def test_grpc_method_paths() -> None:
    found = {}
    for mod in PB_MODULES:
        for service in mod.DESCRIPTOR.services_by_name.values():
            # MethodDescriptor.client_streaming is missing on older upb runtimes
            # (protobuf 4.21); the proto form has it everywhere.
            proto = descriptor_pb2.ServiceDescriptorProto()
            service.CopyToProto(proto)
            for method in proto.method:
                path = f"/{service.full_name}/{method.name}"
                # Input and output types resolve to messages in our pool.
                for type_name in (method.input_type, method.output_type):
                    _pool.POOL.FindMessageTypeByName(type_name.lstrip("."))
                found[path] = (method.client_streaming, method.server_streaming)
    assert found == EXPECTED_METHODS


# ---------------------------------------------------------------- private pool


def test_descriptors_live_in_private_pool() -> None:
    default = descriptor_pool.Default()
    assert _pool.POOL is not default
    for mod in PB_MODULES:
        assert mod.DESCRIPTOR.pool is _pool.POOL
        assert _pool.POOL.FindFileByName(mod.DESCRIPTOR.name) is mod.DESCRIPTOR
        for msg_desc in mod.DESCRIPTOR.message_types_by_name.values():
            assert msg_desc.file.pool is _pool.POOL
            assert _pool.POOL.FindMessageTypeByName(msg_desc.full_name) is msg_desc
            # Another etcd client in this process may own the name in the default
            # pool; it must never resolve to our descriptor.
            try:
                other = default.FindMessageTypeByName(msg_desc.full_name)
            except KeyError:
                continue
            assert other is not msg_desc
        with pytest.raises(KeyError):
            default.FindFileByName(mod.DESCRIPTOR.name)


def _run_python(code: str, *, pure_python: bool) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PKG_PARENT), *filter(None, [env.get("PYTHONPATH")])])
    if pure_python:
        env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    else:
        env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# Registers, in the default pool, the files and names other etcd clients use
# (kv.proto / mvccpb.KeyValue, rpc.proto / etcdserverpb.RangeRequest), with a field
# layout different from etcd's so that any sharing would be noticed.
_REGISTER_OTHER_CLIENT = """
from google.protobuf import descriptor_pb2, descriptor_pool

def register_other_client():
    F = descriptor_pb2.FieldDescriptorProto
    kv = descriptor_pb2.FileDescriptorProto(name="kv.proto", package="mvccpb", syntax="proto3")
    m = kv.message_type.add(name="KeyValue")
    m.field.add(name="key", number=1, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    m.field.add(name="other_client", number=99, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    kv.message_type.add(name="Event")
    rpc = descriptor_pb2.FileDescriptorProto(
        name="rpc.proto", package="etcdserverpb", syntax="proto3", dependency=["kv.proto"])
    r = rpc.message_type.add(name="RangeRequest")
    r.field.add(name="key", number=1, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    r.field.add(name="kvs", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                type_name=".mvccpb.KeyValue")
    svc = rpc.service.add(name="KV")
    svc.method.add(name="Range", input_type=".etcdserverpb.RangeRequest",
                   output_type=".etcdserverpb.RangeRequest")
    pool = descriptor_pool.Default()
    pool.AddSerializedFile(kv.SerializeToString())
    pool.AddSerializedFile(rpc.SerializeToString())
    return pool
"""

_USE_OURS = """
def use_ours():
    from etcdsync._pb import _pool, kv_pb2, rpc_pb2, v3election_pb2, v3lock_pb2
    req = rpc_pb2.RangeRequest(key=b"k", range_end=b"l", limit=3)
    assert rpc_pb2.RangeRequest.FromString(req.SerializeToString()) == req
    resp = rpc_pb2.RangeResponse(kvs=[kv_pb2.KeyValue(key=b"k", value=b"v", version=1)])
    assert rpc_pb2.RangeResponse.FromString(resp.SerializeToString()).kvs[0].value == b"v"
    lead = v3election_pb2.LeaderResponse(kv=kv_pb2.KeyValue(key=b"e"))
    assert v3election_pb2.LeaderResponse.FromString(lead.SerializeToString()) == lead
    assert v3lock_pb2.LockRequest(name=b"n").name == b"n"
    assert kv_pb2.KeyValue.DESCRIPTOR.file.pool is _pool.POOL
    assert "other_client" not in kv_pb2.KeyValue.DESCRIPTOR.fields_by_name
"""

_CHECK_OTHER_INTACT = """
def check_other_intact(pool):
    other = pool.FindMessageTypeByName("mvccpb.KeyValue")
    assert other.file.name == "kv.proto", other.file.name
    assert "other_client" in other.fields_by_name
    assert pool.FindMessageTypeByName("etcdserverpb.RangeRequest").file.name == "rpc.proto"
    for name in ("etcd/mvccpb/kv.proto", "etcd/etcdserverpb/rpc.proto"):
        try:
            pool.FindFileByName(name)
        except KeyError:
            pass
        else:
            raise AssertionError(name + " leaked into the default pool")
"""


@pytest.mark.parametrize("pure_python", [False, True], ids=["native", "pure-python"])
@pytest.mark.parametrize("order", ["other-client-first", "etcdsync-first"])
def test_loads_next_to_conflicting_default_pool_registration(order: str, pure_python: bool) -> None:
    if order == "other-client-first":
        main = "pool = register_other_client()\nuse_ours()\ncheck_other_intact(pool)\n"
    else:
        main = "use_ours()\npool = register_other_client()\ncheck_other_intact(pool)\nuse_ours()\n"
    code = (
        _REGISTER_OTHER_CLIENT
        + _USE_OURS
        + _CHECK_OTHER_INTACT
        + main
        + "from google.protobuf.internal import api_implementation\n"
        + "print('OK', api_implementation.Type())\n"
    )
    proc = _run_python(code, pure_python=pure_python)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.startswith("OK")
    if pure_python:
        assert proc.stdout.strip() == "OK python"


def test_default_pool_untouched_in_fresh_process() -> None:
    code = """
    from google.protobuf import descriptor_pb2, descriptor_pool
    import etcdsync._pb.rpc_pb2, etcdsync._pb.v3lock_pb2, etcdsync._pb.v3election_pb2
    d = descriptor_pool.Default()
    for name in ("mvccpb.KeyValue", "authpb.User", "etcdserverpb.RangeRequest",
                 "v3lockpb.LockRequest", "v3electionpb.LeaderKey"):
        try:
            d.FindMessageTypeByName(name)
        except KeyError:
            continue
        raise SystemExit(name + " found in the default pool")
    print("OK")
    """
    for pure_python in (False, True):
        proc = _run_python(code, pure_python=pure_python)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert proc.stdout.strip() == "OK"


# ---------------------------------------------------------------- generated files


def test_generated_files_header_and_imports() -> None:
    for mod in PB_MODULES:
        for suffix in (".py", ".pyi"):
            path = PB_DIR / (mod.__name__.rsplit(".", 1)[1] + suffix)
            text = path.read_text(encoding="utf-8")
            assert text.startswith("# Generated by scripts/gen_protos.py"), path
            assert "DO NOT EDIT" in text.splitlines()[0]
            for line in text.splitlines():
                if line.startswith(("from ", "import ")):
                    assert not line.startswith(("from etcd.", "import etcd")), (path, line)
            assert "sys.path" not in text
            if suffix == ".py":
                assert "_descriptor_pool.Default()" not in text
                assert "_pool.POOL.AddSerializedFile(" in text


def _grpcio_tools_version() -> str | None:
    try:
        return metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:
        return None


@pytest.mark.skipif(
    not (REPO_ROOT / "scripts" / "gen_protos.py").is_file() or _grpcio_tools_version() != "1.62.3",
    reason="needs the source checkout and grpcio-tools==1.62.3",
)
def test_generated_modules_are_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
