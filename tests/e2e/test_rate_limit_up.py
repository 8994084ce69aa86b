"""Requests per project through a real ``up``: the gateway process counts a project's HTTP and
WebSocket requests in one budget, set from the environment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from services.common.config import Settings
from tests.e2e.harness import Stack, start_stack
from tests.servers import service_ports

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def limited_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data: Path = tmp_path_factory.mktemp("up-rate-limit")
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(data), **service_ports(),
        # One request per 1000 s after a burst of two: nothing refills during the test.
        "project_rate_limit": 0.001, "project_rate_burst": 2,
    })
    stack = start_stack(settings)
    yield stack
    assert stack.stop() == 0, "".join(stack.output)


def test_http_and_websocket_share_a_project_budget(limited_stack: Stack) -> None:
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "rl-" + uuid.uuid4().hex[:8]}
    frame = orjson.dumps({"action": "queue_list", "headers": headers, "body": {}}).decode()
    with httpx.Client(base_url=limited_stack.url, headers=headers) as http, connect(
        f"ws://127.0.0.1:{limited_stack.settings.ws_port}"
    ) as ws:
        assert http.get("/v2/queues").status_code == 200
        ws.send(frame)
        assert orjson.loads(ws.recv(timeout=30))["headers"]["status"] == 200
        refused = http.get("/v2/queues")
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "1000"
        ws.send(frame)
        assert orjson.loads(ws.recv(timeout=30))["headers"]["status"] == 429
        # Another project is not held back.
        other = {**headers, "X-Project-ID": "rl-" + uuid.uuid4().hex[:8]}
        assert http.get("/v2/queues", headers=other).status_code == 200
