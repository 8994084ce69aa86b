"""Installs Buf's ``buf`` command, which the tests use to check that the gRPC API stays
compatible with its baseline (tests/unit/test_api_compat.py, docs/api-compatibility.md).

Buf publishes its release binaries to the npm registry, one package per platform
(``@bufbuild/buf-linux-x64``, ...). This script takes the pinned version's tarball straight
from the registry (no Node.js needed), checks it against the integrity the registry listed
for that version (pinned below, so a changed tarball is refused), and puts the binary at
``.venv-tools/bin/buf``. Safe to run again: it does nothing when that version is in place.

    python3 scripts/fetch_buf.py [--dest .venv-tools/bin/buf]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "1.75.0"
REGISTRY = "https://registry.npmjs.org"
# machine (platform.machine()) -> (npm package, the sha512 integrity of its VERSION tarball)
PACKAGES = {
    "x86_64": (
        "@bufbuild/buf-linux-x64",
        "YGGJAx0lpMCE7aMWjNOJcfoEaG/e+iYHnTC4SZ0P5eS4IffMryA9Z4/bb1m1wNXAEJ8ATFMEZOAk/5x9VE47ig==",
    ),
    "aarch64": (
        "@bufbuild/buf-linux-aarch64",
        "eX+XyokzJDqsNIFo8b1O3DBvbnksOozPJX4QVsNn61JqSUtWspyTNeYqwg8lRDancML+bDqZEDFPABjAsVCQGQ==",
    ),
}
ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / ".venv-tools" / "bin" / "buf"


def installed(dest: Path) -> str | None:
    """The version of the buf at ``dest``, or None when there is none that runs."""
    if not dest.exists():
        return None
    try:
        done = subprocess.run([str(dest), "--version"], capture_output=True, text=True,
                              timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def fetch(machine: str) -> bytes:
    """The binary of ``VERSION`` for ``machine``, from its tarball checked against the pin."""
    if sys.platform != "linux" or machine not in PACKAGES:
        raise SystemExit(f"fetch_buf.py: no pinned buf for {sys.platform}/{machine}; "
                         f"install buf {VERSION} on the PATH as .venv-tools/bin/buf")
    package, integrity = PACKAGES[machine]
    name = package.rsplit("/", 1)[1]
    url = f"{REGISTRY}/{package}/-/{name}-{VERSION}.tgz"
    with urllib.request.urlopen(url, timeout=120) as answer:
        tarball = answer.read()
    digest = base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != integrity:
        raise SystemExit(f"fetch_buf.py: {url} is not the tarball pinned (sha512 {digest})")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        member = archive.extractfile("package/bin/buf")
        if member is None:
            raise SystemExit(f"fetch_buf.py: {url} has no package/bin/buf")
        return member.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEST)
    dest = parser.parse_args().dest
    if installed(dest) == VERSION:
        return
    binary = fetch(platform.machine())
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    os.replace(partial, dest)
    found = installed(dest)
    if found != VERSION:
        raise SystemExit(f"fetch_buf.py: {dest} says {found!r}, not {VERSION}")
    print(f"buf {VERSION} at {dest}")


if __name__ == "__main__":
    main()
