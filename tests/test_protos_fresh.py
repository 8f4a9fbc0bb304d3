"""The committed protobuf stubs must be exactly what scripts/gen_protos makes now."""
from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py")


def _generated_files(root: Path) -> set[Path]:
    return {p.relative_to(root) for pattern in GENERATED for p in root.rglob(pattern)}


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    fresh = _generated_files(tmp_path)
    committed = _generated_files(PROTOS)
    assert fresh, "gen_protos produced no stubs"
    assert fresh == committed, (
        f"stub files differ: missing {sorted(map(str, fresh - committed))}, "
        f"extra {sorted(map(str, committed - fresh))}; run scripts/gen_protos"
    )
    stale = [str(p) for p in sorted(fresh) if not filecmp.cmp(tmp_path / p, PROTOS / p, shallow=False)]
    assert not stale, f"stale stubs {stale}: run scripts/gen_protos and commit the result"


def test_stubs_import_under_the_edgetpud_package() -> None:
    from edgetpud.protos.edgetpud.v1 import edgetpud_pb2, edgetpud_pb2_grpc
    from edgetpud.protos.kserve import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc

    assert edgetpud_pb2_grpc.InferenceStub is not None
    assert edgetpud_pb2.DESCRIPTOR.package == "edgetpud.v1"
    assert grpc_predict_v2_pb2.DESCRIPTOR.package == "inference"
    assert grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub is not None
