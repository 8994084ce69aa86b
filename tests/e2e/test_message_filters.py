"""Message filters through ``zaqar-grpc up``: the built-in message schema, and the filters of
a test-only distribution (tests/filter_plugins.py) that the processes find on PYTHONPATH, over
HTTP, WebSocket and gRPC alike."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from zaqar_grpc.v2 import messages_pb2, messages_pb2_grpc

from services.common.config import Settings
from services.common.errors import decode_rpc_error
from tests import filter_plugins
from tests.e2e.harness import Stack, start_stack
from tests.e2e.test_startup_failures import environment, the_line, zaqar_grpc
from tests.servers import service_ports

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
REFUSED = {
    "title": "Invalid request body",
    "description": "Message 1 was refused by message filter 'message_schema': the body does not "
                   "match the queue's _message_schema at JSON pointer \"/n\": 'x' is not of type "
                   "'integer'",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``up`` with the test filters installed and ``redact`` enabled for every queue."""
    folder = tmp_path_factory.mktemp("filters")
    site = filter_plugins.install(folder / "site")
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(folder / "data"), **service_ports(), "message_filters": "redact",
    })
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT)]))
        running = start_stack(settings)
    yield running
    assert running.stop() == 0, "".join(running.output)


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": f"f-{uuid.uuid4().hex[:8]}"}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as client:
        yield client


def post(http: httpx.Client, queue: str, *bodies: Any) -> httpx.Response:
    return http.post(f"/v2/queues/{queue}/messages",
                     json={"messages": [{"body": b} for b in bodies]})


def listed(http: httpx.Client, queue: str) -> list[Any]:
    answer = http.get(f"/v2/queues/{queue}/messages", params={"echo": "true"})
    assert answer.status_code in (200, 204), answer.text
    return [m["body"] for m in answer.json()["messages"]] if answer.status_code == 200 else []


def test_the_schema_refuses_over_http_and_grpc(stack: Stack, http: httpx.Client) -> None:
    # Given a queue with a message schema
    assert http.put("/v2/queues/typed", json={"_message_schema": SCHEMA}).status_code == 201
    # When a post over HTTP has a body that does not match
    answer = post(http, "typed", {"n": 1}, {"n": "x"})
    # Then it is refused naming the message's index and the JSON pointer
    assert (answer.status_code, answer.json()) == (400, REFUSED)
    # And gRPC callers get the same answer
    project = http.headers["X-Project-ID"]

    async def grpc_post() -> grpc.aio.AioRpcError:
        async with grpc.aio.insecure_channel(stack.settings.target("message")) as channel:
            stub = messages_pb2_grpc.MessagesStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.PostMessages(messages_pb2.PostMessagesRequest(
                    project=project, queue="typed", client_id=str(uuid.uuid4()),
                    messages=[messages_pb2.NewMessage(body=b'{"n": 1}'),
                              messages_pb2.NewMessage(body=b'{"n": "x"}')]))
            return caught.value

    info = decode_rpc_error(asyncio.run(grpc_post()))
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"title": info.title, "description": info.description} == REFUSED
    # And nothing was stored; a matching post is
    assert listed(http, "typed") == []
    assert post(http, "typed", {"n": 1}, {"n": 2}).status_code == 201
    assert listed(http, "typed") == [{"n": 1}, {"n": 2}]


def test_an_unusable_schema_is_refused(http: httpx.Client) -> None:
    answer = http.put("/v2/queues/bad", json={"_message_schema": {"type": 5}})
    assert answer.status_code == 400
    assert answer.json()["description"].startswith(
        "_message_schema is not a valid JSON Schema (draft 2020-12) at /type:"
    )
    answer = http.put("/v2/queues/bad", json={"_filters": ["no_such_filter"]})
    assert answer.status_code == 400
    assert "no message filter named 'no_such_filter' is installed" in answer.text


async def test_the_schema_refuses_over_websocket_and_delivery_is_filtered(
    stack: Stack,
) -> None:
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": f"f-{uuid.uuid4().hex[:8]}"}
    async with connect(f"ws://127.0.0.1:{stack.settings.ws_port}") as ws:

        async def call(action: str, body: dict[str, Any]) -> dict[str, Any]:
            await ws.send(orjson.dumps({"action": action, "headers": headers,
                                        "body": body}).decode())
            while True:
                answer: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
                if "request" in answer:
                    return answer

        created = await call("queue_create", {"queue_name": "typed",
                                              "metadata": {"_message_schema": SCHEMA}})
        assert created["headers"]["status"] == 201, created
        # When a post over WebSocket does not match the schema, it is refused as over HTTP
        refused = await call("message_post", {"queue_name": "typed", "messages": [
            {"body": {"n": 1}}, {"body": {"n": "x"}}]})
        assert refused["headers"]["status"] == 400, refused
        assert refused["body"] == {"title": REFUSED["title"], "error": REFUSED["description"]}
        # And a socket subscribed to a queue gets its messages through the deployment's
        # filters ("redact" hides "secret")
        subscribed = await call("subscription_create", {"queue_name": "feed", "ttl": 600})
        assert subscribed["headers"]["status"] == 201, subscribed
        posted = await call("message_post", {"queue_name": "feed", "messages": [
            {"body": {"secret": "s", "n": 1}}]})
        assert posted["headers"]["status"] == 201, posted
        pushed = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        assert pushed["Message_Type"] == "Notification", pushed
        assert pushed["body"] == {"secret": "***", "n": 1}


def test_a_queues_filter_changes_bodies_and_the_deployments_redacts(
    http: httpx.Client,
) -> None:
    assert http.put("/v2/queues/stamped", json={"_filters": ["stamp"]}).status_code == 201
    assert post(http, "stamped", {"n": 1}, {"secret": "s"}).status_code == 201
    assert listed(http, "stamped") == [{"n": 1, "stamp": "post"},
                                       {"secret": "***", "stamp": "post"}]


def wait_for_line(stack: Stack, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(stack.output):
            if text in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no line with {text!r} in:\n" + "".join(stack.output))


def test_a_crashing_filter_answers_no_5xx(stack: Stack, http: httpx.Client) -> None:
    # Given a queue whose filter crashes on every post
    assert http.put("/v2/queues/fragile", json={"_filters": ["crash"]}).status_code == 201
    answer = post(http, "fragile", {"n": 1})
    # Then the post is refused with 400 naming the filter, and the failure is logged
    assert answer.status_code == 400
    assert answer.json()["title"] == "Message filter failed"
    assert answer.json()["description"].startswith(
        "Message filter 'crash' failed, so the messages were not posted (nothing was stored)."
    )
    wait_for_line(stack, "message filter 'crash' failed on post of")
    # And a filter that crashes on the way out lets the messages through
    assert http.put("/v2/queues/leaky", json={"_filters": ["crash_on_read"]}).status_code == 201
    assert post(http, "leaky", {"n": 1}).status_code == 201
    assert listed(http, "leaky") == [{"n": 1}]
    claimed = http.post("/v2/queues/leaky/claims", json={"ttl": 60})
    assert claimed.status_code == 201
    assert [m["body"] for m in claimed.json()["messages"]] == [{"n": 1}]
    wait_for_line(stack, "message filter 'crash_on_read' failed on list of")


@pytest.mark.parametrize("command", [["up"], ["serve", "message"]])
def test_an_unknown_deployment_filter_is_one_line_at_start(
    make_settings: Callable[..., Settings], command: list[str]
) -> None:
    settings = make_settings(message_filters="stamp,nope")
    env = {**environment(settings), "PYTHONPATH": os.pathsep.join([
        str(filter_plugins.install(Path(settings.data_dir) / "site")), str(ROOT)])}
    result = zaqar_grpc(env, *command)
    assert result.returncode == 2
    assert the_line(result).startswith(
        "zaqar-grpc: configuration error: ZAQAR_MESSAGE_FILTERS: no message filter named "
        "'nope' is installed (installed: "
    )
