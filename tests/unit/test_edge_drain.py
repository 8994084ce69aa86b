"""``zaqar-grpc edge-drain`` (services/edge_drain.py) on its own: bad arguments are one line,
and a pod whose Envoy is already gone still stops at once. tests/e2e/test_envoy.py drains a
real Envoy with it."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import httpx
import pytest

from services import cli
from tests.servers import free_ports

ZAQAR_GRPC = str(Path(sys.executable).parent / "zaqar-grpc")


@pytest.mark.parametrize(("args", "message"), [
    (["--listen", "9903"], "--listen '9903': expected HOST:PORT"),
    (["--listen", "0.0.0.0:http"], "--listen '0.0.0.0:http': expected HOST:PORT"),
    (["--min-drain", "30", "--max-drain", "20"], "expected 0 <= --min-drain <= --max-drain"),
    (["--min-drain", "-1"], "expected 0 <= --min-drain <= --max-drain"),
])
def test_bad_arguments_are_refused_with_what_is_expected(args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as refused:
        cli.main(["edge-drain", *args])
    assert str(refused.value) == message


async def test_with_envoy_gone_the_hook_is_answered_and_the_process_exits_at_once() -> None:
    # Envoy's admin port has nothing behind it (Envoy stopped first, or never started)
    admin, port = free_ports(2)
    proc = await asyncio.create_subprocess_exec(
        ZAQAR_GRPC, "edge-drain", "--admin", f"http://127.0.0.1:{admin}", "--listen",
        f"127.0.0.1:{port}", "--min-drain", "0", "--max-drain", "20",
        stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            assert b"Waiting for SIGTERM" in await proc.stderr.readline()
            async with httpx.AsyncClient(timeout=30) as client:
                # (the liveness probe's path)
                alive = await client.get(f"http://127.0.0.1:{port}/healthz")
                assert (alive.status_code, alive.text) == (200, "ok\n")
                hook = asyncio.ensure_future(client.get(f"http://127.0.0.1:{port}/drained"))
                assert b"preStop hook is waiting" in await proc.stderr.readline()
                proc.send_signal(signal.SIGTERM)
                answer = await hook
            assert answer.status_code == 200
            assert answer.text.startswith(f"Envoy drained: could not drain Envoy at "
                                          f"http://127.0.0.1:{admin}: "), answer.text
            assert await proc.wait() == 0
            assert b"Envoy drain over after 0.0 s: could not drain" in await proc.stderr.read()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
