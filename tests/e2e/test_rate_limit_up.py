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
from tests.e2e.test_replicas_up import gateway_urls, websocket_urls
from tests.servers import ServerProcess, service_ports

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


def test_with_a_shared_store_every_gateway_replica_counts_one_budget(
    tmp_path: Path, redis_server: ServerProcess,
) -> None:
    """``up --replicas 2`` with ``project_rate_store``: a project's burst taken through one
    gateway is gone at the other, over HTTP and WebSocket alike."""
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(tmp_path / "data"), "http_port": 0, "ws_port": 0, "queue_port": 0,
        "message_port": 0, "notifier_port": 0, "queue_metrics_port": 0,
        "message_metrics_port": 0, "notifier_metrics_port": 0,
        "project_rate_limit": 0.001, "project_rate_burst": 2,
        # Time for Redis to answer on a loaded machine: past the default 0.25 s a request
        # would go through unlimited.
        "project_rate_store": f"redis://127.0.0.1:{redis_server.port}/0"
                              f"?prefix=zr-{uuid.uuid4().hex[:8]}&socket_timeout=30",
    })
    stack = start_stack(settings, ["--replicas", "2"])
    try:
        first, second = gateway_urls(stack)
        ws_second = websocket_urls(stack)[1]
        headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "rl-" + uuid.uuid4().hex[:8]}
        with httpx.Client(headers=headers, timeout=30) as http, connect(ws_second) as ws:
            # The burst of two, taken at the first gateway
            assert http.get(first + "/v2/queues").status_code == 200
            assert http.get(first + "/v2/queues").status_code == 200
            # is gone at the second, over HTTP and WebSocket
            refused = http.get(second + "/v2/queues")
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["Retry-After"]) > 990
            ws.send(orjson.dumps({"action": "queue_list", "headers": headers,
                                  "body": {}}).decode())
            assert orjson.loads(ws.recv(timeout=30))["headers"]["status"] == 429
            # and at the first
            assert http.get(first + "/v2/queues").status_code == 429
    finally:
        assert stack.stop() == 0, "".join(stack.output)
