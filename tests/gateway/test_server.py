"""The gateway as its own process: READY line, real HTTP and WebSocket, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx
import orjson
from websockets.asyncio.client import connect

from services.cli import settings_environment
from services.common.config import Settings
from tests.gateway.conftest import HEADERS


async def test_serves_http_and_stops_on_sigterm(services: Settings) -> None:
    # Given the gateway started as a process in front of the running services
    env = {**os.environ, **settings_environment(services), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.api_gateway.server",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        # Then it announces where it listens (HTTP and WebSocket) once both accept connections
        url = f"http://{services.host}:{services.http_port}"
        ws_url = f"ws://{services.host}:{services.ws_port}"
        assert line.decode().strip() == f"READY api_gateway {url} {ws_url}"
        # And answers over real HTTP, 204s with Content-Length: 0
        async with httpx.AsyncClient(base_url=url, headers=HEADERS) as client:
            ping = await client.get("/v2/ping")
            assert ping.status_code == 204
            assert ping.headers["content-length"] == "0"
            assert ping.headers["x-openstack-request-id"].startswith("req-")
            created = await client.put("/v2/queues/served", content=b"{}")
            assert created.status_code == 201
            assert created.headers["content-length"] == "0"
            assert created.headers["content-type"] == "application/json"
            refused = await client.get("/v2/queues", headers={"Accept": "text/plain"})
            assert refused.status_code == 406
            assert refused.content == b""
        # And answers WebSocket requests on its second port, from the same services
        async with connect(ws_url) as socket:
            body = {"queue_name": "served"}
            request = {"action": "queue_get_stats", "headers": HEADERS, "body": body}
            await socket.send(orjson.dumps(request).decode())
            answer = orjson.loads(await socket.recv())
            assert answer["headers"] == {"status": 200}
            # When it gets SIGTERM with the socket still open
            proc.send_signal(signal.SIGTERM)
            # Then the server closes the socket
            await asyncio.wait_for(socket.wait_closed(), 15)
        # And it exits cleanly
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
