"""The committed stubs must be exactly what scripts/gen_protos.py makes of the .proto files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools (test extra) missing"
)
def test_committed_stubs_match_the_proto_files(tmp_path: Path) -> None:
    import gen_protos

    gen_protos.generate(tmp_path)
    drifted = [
        name
        for name in gen_protos.GENERATED
        if (tmp_path / name).read_bytes() != (gen_protos.PROTO_DIR / name).read_bytes()
    ]
    assert not drifted, f"stale stubs {drifted}: run python scripts/gen_protos.py and commit"


def test_wire_names_are_etcds() -> None:
    from geeh._proto import kv_pb2, rpc_pb2

    assert kv_pb2.KeyValue.DESCRIPTOR.full_name == "mvccpb.KeyValue"
    assert rpc_pb2.RangeRequest.DESCRIPTOR.fields_by_name["max_create_revision"].number == 13
    assert rpc_pb2.WatchResponse.DESCRIPTOR.fields_by_name["events"].number == 11
    assert rpc_pb2.Compare.DESCRIPTOR.fields_by_name["range_end"].number == 64
