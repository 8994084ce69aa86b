"""``admin_mode``: every no-auth caller is an admin, so python-zaqarclient's own functional
tests of pools, flavors and health (``zaqarclient.tests.queues``, unmodified) run against a
local ``up`` with pooling on, without sending ``X-Roles``.

Those tests register pools at ``mongodb://127.0.0.1:27017``, and a pool must be reachable to be
registered, so a MongoDB wire server listens on that port for the module.
"""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.sync.client import connect
from zaqarclient.tests.queues import flavor, health, pool
from zaqarclient.transport import http

from services.common.config import ConfigurationError, Settings
from services.common.keystone import check_settings
from tests.e2e.harness import Stack, start_stack
from tests.servers import ServerProcess, service_ports
from tests.stacks import up_stack

pytestmark = pytest.mark.e2e

CLIENT_MONGODB_PORT = 27017


@pytest.fixture(scope="module")
def client_mongodb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The MongoDB wire server at the address the client's tests name."""
    with socket.socket() as probe:
        taken = probe.connect_ex(("127.0.0.1", CLIENT_MONGODB_PORT)) == 0
    assert not taken, f"port {CLIENT_MONGODB_PORT} is taken; the client's tests need it free"
    workdir = tmp_path_factory.mktemp("mongodb-27017")
    servers = Path(__file__).resolve().parents[1] / "servers.py"
    server = ServerProcess(
        [sys.executable, str(servers), "mongodb", str(CLIENT_MONGODB_PORT), str(workdir / "db")],
        CLIENT_MONGODB_PORT, workdir,
    )
    server.start()
    yield server
    server.stop()


def admin_settings(data: Path, **overrides: object) -> Settings:
    return Settings.load(environ={}, overrides={
        "data_dir": str(data), **service_ports(), "pooling": True, "admin_mode": True,
        **overrides,
    })


@pytest.fixture(scope="module")
def admin_stack(
    tmp_path_factory: pytest.TempPathFactory, client_mongodb: ServerProcess
) -> Iterator[Stack]:
    stack = start_stack(admin_settings(tmp_path_factory.mktemp("up-admin-mode")))
    yield stack
    assert stack.stop() == 0, "".join(stack.output)


@pytest.fixture(autouse=True)
def _client_url(request: pytest.FixtureRequest, admin_stack: Stack) -> None:
    """Point the client's test classes (``url``, read in their ``setUp``) at the stack."""
    if request.cls is not None:
        request.cls.url = admin_stack.url


# The client's functional classes, as its own tests/functional/queues/v2 modules declare them:
# the HTTP transport against a live server. ``is_functional`` stays False: it only makes them
# skip unless ZAQARCLIENT_TEST_FUNCTIONAL is set, and asks for Keystone credentials.
class TestClientPoolFunctional(pool.QueuesV2PoolFunctionalTest):
    transport_cls = http.HttpTransport


class TestClientFlavorFunctional(flavor.QueuesV2FlavorFunctionalTest):
    transport_cls = http.HttpTransport


class TestClientHealthFunctional(health.QueuesV2HealthFunctionalTest):
    transport_cls = http.HttpTransport


def test_admin_apis_answer_a_caller_without_roles(admin_stack: Stack) -> None:
    # Given a no-auth caller that sends no X-Roles
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "dev"}
    with httpx.Client(base_url=admin_stack.url, headers=headers) as client:
        # Then the admin-only APIs answer it, as they answer an admin
        assert client.get("/v2/health").status_code == 200
        assert client.get("/v2/pools").status_code == 200
        # And the ordinary APIs are unchanged
        assert client.put("/v2/queues/dev-q").status_code == 201
        assert client.get("/v2/queues/dev-q/stats").status_code == 200


def test_admin_mode_over_websocket(admin_stack: Stack) -> None:
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "dev"}
    with connect(f"ws://127.0.0.1:{admin_stack.settings.ws_port}") as ws:
        # When a frame without X-Roles asks for the admin-only health report
        frame = {"action": "check_node_health", "headers": headers, "body": {}}
        ws.send(orjson.dumps(frame).decode())
        answer = orjson.loads(ws.recv(timeout=30))
    # Then it is answered as an admin's
    assert answer["headers"]["status"] == 200, answer


def test_without_admin_mode_a_caller_without_roles_is_refused(
    request: pytest.FixtureRequest,
) -> None:
    # Given the session's SQLite stack: pooling on, admin_mode off (the default)
    stack = up_stack(request, "sqlite")
    assert stack.settings.admin_mode is False
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "dev"}
    with httpx.Client(base_url=stack.url, headers=headers) as client:
        # Then the admin-only APIs refuse the same caller with Zaqar's 403
        for path in ("/v2/health", "/v2/pools"):
            answer = client.get(path)
            assert answer.status_code == 403, (path, answer.text)
            assert answer.json()["title"] == "Not authorized"


def test_admin_mode_is_refused_with_keystone() -> None:
    settings = Settings.load(environ={}, overrides={
        "auth_strategy": "keystone", "keystone_url": "http://127.0.0.1:5000/v3",
        "keystone_username": "zaqar", "admin_mode": True,
    })
    with pytest.raises(ConfigurationError, match="cannot be set with auth_strategy keystone"):
        check_settings(settings)
