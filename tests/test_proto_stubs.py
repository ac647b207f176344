"""The committed stubs in turnout/v1 are exactly what `make proto` generates."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
# Lines that name the generator's version: they differ across grpcio-tools
# releases without any change to the proto.
VERSION_LINE = re.compile(r"Protobuf Python Version|_runtime_version|GRPC_GENERATED_VERSION|^\s*\d+,\s*$|^\s*''\s*,\s*$")


def _normalised(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not VERSION_LINE.search(line)]


def test_generated_stubs_are_up_to_date(tmp_path):
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", *protos],
        cwd=ROOT, check=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*") if p.suffix in (".py", ".pyi"))
    committed = sorted(p.relative_to(ROOT) for p in (ROOT / "turnout").rglob("*_pb2*") if p.suffix in (".py", ".pyi"))
    assert generated == committed, "stub files differ from the protos: run `make proto`"
    for name in generated:
        assert _normalised(tmp_path / name) == _normalised(ROOT / name), f"{name} is stale: run `make proto`"
