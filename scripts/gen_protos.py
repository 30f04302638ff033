"""Regenerate the committed protobuf stubs in src/geeh/_proto.

Usage: python scripts/gen_protos.py [--out DIR]

The .proto files live beside the stubs and are imported as "geeh/_proto/...", so
the generated modules import each other through the package. No gRPC service
stubs are generated: geeh.transport names the few methods it calls, which keeps
the runtime free of a grpcio version pin. Requires the
`dev` (or `test`) extra, which pins grpcio-tools so the output is reproducible.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PROTO_DIR = SRC / "geeh" / "_proto"
PROTOS = ("kv.proto", "rpc.proto")
GENERATED = ("kv_pb2.py", "kv_pb2.pyi", "rpc_pb2.py", "rpc_pb2.pyi")


def generate(out: Path) -> None:
    """Write the generated stubs for PROTOS into out (a directory)."""
    from grpc_tools import protoc  # dev-only dependency

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{SRC}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            *(str(PROTO_DIR / name) for name in PROTOS),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        out.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            shutil.copy(Path(tmp) / "geeh" / "_proto" / name, out / name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_DIR)
    generate(parser.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
