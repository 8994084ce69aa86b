"""The committed generated package is exactly what protos/ produces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "services" / "common" / "gen"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    # Given the protos regenerated into a scratch folder with the pinned generator
    descriptor = tmp_path.parent / "zaqar.pb"
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable,
           "DESCRIPTOR_OUT": str(descriptor)}
    subprocess.run(["bash", str(ROOT / "scripts" / "proto_codegen.sh")], env=env, check=True)
    # Then every generated file matches the committed one, and none is missing or extra
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    committed = {
        p.relative_to(GEN): p.read_bytes()
        for p in GEN.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    assert sorted(map(str, fresh)) == sorted(map(str, committed))
    stale = [str(name) for name, data in fresh.items() if committed[name] != data]
    assert not stale, f"regenerate with scripts/proto_codegen.sh: {stale}"
    # And so is Envoy's descriptor set
    assert descriptor.read_bytes() == (ROOT / "deploy" / "envoy" / "zaqar.pb").read_bytes()


def test_wheel_ships_every_package_and_data_file(tmp_path: Path) -> None:
    # Given a wheel built from the tree, as a container image would install it
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    import zipfile

    (wheel,) = tmp_path.glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    # Then every package, Lua script and SQL schema of the source tree is in it
    tracked = subprocess.run(["git", "ls-files", "services"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.split()
    wanted = {
        name.removeprefix("services/common/gen/")
        for name in tracked
        if name.endswith(("__init__.py", ".lua", ".sql", ".pyi"))
    }
    assert wanted - shipped == set()
    # And its metadata declares the built-in store backends, which are found by entry point
    (entry_points,) = [name for name in shipped if name.endswith(".dist-info/entry_points.txt")]
    declared = zipfile.ZipFile(wheel).read(entry_points).decode()
    for group in ("queue_stores", "message_stores", "notifier_stores"):
        assert f"[zaqar_grpc.{group}]" in declared
    assert "sqlite = services.message_svc.storage.sqlite:SqliteMessageStore" in declared
