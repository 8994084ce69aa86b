"""services.common.grpc_io: gRPC's older I/O path by default, only where gRPC has the switch,
and never over an operator's own choice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.common.grpc_io import OLDER_PATH, VARIABLE, prefer_iomgr


@pytest.mark.parametrize(("version", "applied"), [
    ("1.79.0", False),
    ("1.80.0", True),
    ("1.85.3", True),
    ("1.86.0rc1", True),
    ("1.87.0", False),
    ("2.0.0", False),
    ("not a version", False),
])
def test_only_versions_known_to_have_the_switch(version: str, applied: bool) -> None:
    environ: dict[str, str] = {}
    assert prefer_iomgr(environ, version) is applied
    assert environ == ({VARIABLE: OLDER_PATH} if applied else {})


@pytest.mark.parametrize("own", ["", "-event_engine_client"])
def test_an_operators_own_setting_wins(own: str) -> None:
    environ = {VARIABLE: own}
    assert prefer_iomgr(environ, "1.85.3") is False
    assert environ == {VARIABLE: own}


def test_a_service_process_starts_grpc_with_it_and_without_complaint() -> None:
    """Importing ``services`` before gRPC sets the switch for the installed grpcio, and that
    gRPC knows every experiment it names (a removed one would log an error line)."""
    code = (
        "import asyncio, os, services, grpc\n"
        "async def main():\n"
        "    server = grpc.aio.server()\n"
        "    port = server.add_insecure_port('127.0.0.1:0')\n"
        "    await server.start()\n"
        "    async with grpc.aio.insecure_channel(f'127.0.0.1:{port}') as channel:\n"
        "        await channel.channel_ready()\n"
        "    await server.stop(None)\n"
        "asyncio.run(main())\n"
        "print(os.environ.get('GRPC_EXPERIMENTS', ''))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    expected = OLDER_PATH if prefer_iomgr({}) else ""
    assert done.stdout.strip() == expected
    assert "Unknown experiment" not in done.stderr, done.stderr
