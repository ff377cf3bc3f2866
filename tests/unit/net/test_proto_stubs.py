"""The committed gRPC stubs are exactly what scripts/gen-proto.sh makes from proto/ (never hand-edited)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_committed_stubs_match_the_proto_files(tmp_path: Path) -> None:
    out = tmp_path / "stubs"
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-proto.sh"), str(out)],
        check=True,
        cwd=ROOT,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    committed = ROOT / "qbfl" / "_proto" / "v1"
    generated = sorted(p.name for p in (out / "v1").glob("*_pb2*"))
    assert generated == sorted(p.name for p in committed.glob("*_pb2*")), "stub files differ"
    for name in generated:
        assert (out / "v1" / name).read_text() == (committed / name).read_text(), (
            f"qbfl/_proto/v1/{name} differs from what scripts/gen-proto.sh generates: "
            "run scripts/gen-proto.sh and commit the result (never edit the stubs by hand)"
        )


def test_stubs_import_from_their_own_folder() -> None:
    from qbfl._proto.v1 import node_pb2_grpc, publisher_pb2_grpc

    assert node_pb2_grpc.NodeStub and publisher_pb2_grpc.PublisherStub
