"""etcd's messages: in gee-h's own descriptor pool, on any protobuf, matching the .proto files.

The chain .proto -> descriptors -> modules and stubs is checked link by link, comparing
descriptors rather than protoc's text, so any grpcio-tools version (or none) will do.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from geeh._proto import kv_pb2, rpc_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import gen_protos  # noqa: E402

MODULES = {"kv.proto": kv_pb2, "rpc.proto": rpc_pb2}


def _committed(module: Any) -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)


@pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools (protos extra) missing"
)
def test_committed_descriptors_match_the_proto_files(tmp_path: Path) -> None:
    compiled = gen_protos.compile_protos(tmp_path)
    for name, serialized in zip(gen_protos.PROTOS, compiled, strict=True):
        expected = descriptor_pb2.FileDescriptorProto.FromString(serialized)
        assert _committed(MODULES[name]) == expected, (
            f"{name} changed: run python scripts/gen_protos.py and commit"
        )


@pytest.mark.parametrize("proto", gen_protos.PROTOS)
def test_committed_modules_are_what_the_generator_writes(proto: str) -> None:
    module = MODULES[proto]
    path = gen_protos.PROTO_DIR / f"{Path(proto).stem}_pb2.py"
    assert path.read_text() == gen_protos.module_source(module.DESCRIPTOR.serialized_pb)


def _stub_class(node: ast.ClassDef) -> dict[str, Any]:
    """What a .pyi class declares: fields (__slots__), enums with values, nested messages."""
    shape: dict[str, Any] = {"slots": [], "enums": {}, "nested": {}}
    for item in node.body:
        if isinstance(item, ast.Assign) and ast.unparse(item.targets[0]) == "__slots__":
            shape["slots"] = list(ast.literal_eval(item.value))
        elif isinstance(item, ast.ClassDef):
            if any(k.arg == "metaclass" for k in item.keywords):
                values = [a.target for a in item.body if isinstance(a, ast.AnnAssign)]
                shape["enums"][item.name] = [ast.unparse(v) for v in values]
            else:
                shape["nested"][item.name] = _stub_class(item)
    return shape


def _descriptor_class(desc: Any) -> dict[str, Any]:
    return {
        "slots": [field.name for field in desc.fields],
        "enums": {e.name: [v.name for v in e.values] for e in desc.enum_types},
        "nested": {n.name: _descriptor_class(n) for n in desc.nested_types},
    }


@pytest.mark.parametrize("proto", gen_protos.PROTOS)
def test_typing_stubs_match_the_descriptors(proto: str) -> None:
    module = MODULES[proto]
    stub = ast.parse((gen_protos.PROTO_DIR / f"{Path(proto).stem}_pb2.pyi").read_text())
    classes = {node.name: node for node in stub.body if isinstance(node, ast.ClassDef)}
    file = module.DESCRIPTOR
    assert sorted(classes) == sorted([*file.message_types_by_name, *file.enum_types_by_name])
    for name, desc in file.message_types_by_name.items():
        assert _stub_class(classes[name]) == _descriptor_class(desc), name


def test_wire_names_are_etcds() -> None:
    assert kv_pb2.KeyValue.DESCRIPTOR.full_name == "mvccpb.KeyValue"
    assert rpc_pb2.RangeRequest.DESCRIPTOR.fields_by_name["max_create_revision"].number == 13
    assert rpc_pb2.WatchResponse.DESCRIPTOR.fields_by_name["events"].number == 11
    assert rpc_pb2.Compare.DESCRIPTOR.fields_by_name["range_end"].number == 64


def test_messages_work_like_protocs_gencode() -> None:
    assert (rpc_pb2.RangeRequest.ASCEND, rpc_pb2.RangeRequest.SortOrder.Name(2)) == (1, "DESCEND")
    assert rpc_pb2.WatchCreateRequest.NOPUT == 0 and kv_pb2.Event.DELETE == 1
    assert rpc_pb2.RangeRequest.__module__ == "geeh._proto.rpc_pb2"
    response = rpc_pb2.WatchResponse(
        events=[kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=b"k"))]
    )
    again = rpc_pb2.WatchResponse.FromString(response.SerializeToString())
    assert again == response and again.events[0].kv.key == b"k"
    assert pickle.loads(pickle.dumps(response)) == response


_IMPORT_CHECK = """
from google.protobuf import descriptor_pool
from google.protobuf.internal import api_implementation
import geeh
from geeh._proto import kv_pb2, rpc_pb2
for name in ("mvccpb.KeyValue", "etcdserverpb.RangeRequest"):
    try:
        descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        pass
    else:
        raise SystemExit(f"{name} is in protobuf's default pool")
assert rpc_pb2.RangeRequest.DESCRIPTOR.file.pool is not descriptor_pool.Default()
print(api_implementation.Type())
"""


@pytest.mark.parametrize("backend", [None, "python"], ids=["default-backend", "python-backend"])
def test_import_is_silent_and_stays_out_of_the_default_pool(backend: str | None) -> None:
    env = dict(os.environ)
    env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)
    if backend:
        env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = backend
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _IMPORT_CHECK],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    if backend:
        assert done.stdout.strip() == backend
