"""Quotas (``project_max_queues``, ``project_max_topics``, ``queue_max_subscriptions``,
extensions) through a real ``up`` set from the environment: a new queue or topic beyond the
quota, made by a PUT or by a post to an absent one, or a new subscription beyond its queue's,
over HTTP or WebSocket, is refused with 403 and leaves nothing; python-zaqarclient raises it as
an error."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from websockets.sync.client import connect
from zaqar_grpc.v2 import messages_pb2, messages_pb2_grpc, queues_pb2, queues_pb2_grpc
from zaqarclient.queues.v2 import client as zaqar
from zaqarclient.transport import errors as zaqar_errors

from services.common.config import Settings
from services.common.errors import decode_rpc_error
from tests.e2e.harness import Stack, start_stack
from tests.servers import service_ports

pytestmark = pytest.mark.e2e

TITLE = "Quota exceeded"


def refusal(project: str, kind: str) -> dict[str, str]:
    setting = f"ZAQAR_PROJECT_MAX_{kind.upper()}"
    return {"title": TITLE, "description": (
        f"Project {project} has 2 {kind}, the most it may have ({setting}); delete one first, "
        "or ask the operator for a larger quota.")}


@pytest.fixture(scope="module")
def quota_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data: Path = tmp_path_factory.mktemp("up-quotas")
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(data), **service_ports(),
        "project_max_queues": 2, "project_max_topics": 2, "queue_max_subscriptions": 2,
    })
    stack = start_stack(settings)
    yield stack
    assert stack.stop() == 0, "".join(stack.output)


@pytest.fixture
def http(quota_stack: Stack) -> Iterator[httpx.Client]:
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "qt-" + uuid.uuid4().hex[:8]}
    with httpx.Client(base_url=quota_stack.url, headers=headers, timeout=30) as client:
        yield client


def names(http: httpx.Client, kind: str = "queues") -> list[str]:
    answer = http.get(f"/v2/{kind}")
    assert answer.status_code == 200, answer.text
    return [item["name"] for item in answer.json()[kind]]


def post(http: httpx.Client, path: str) -> httpx.Response:
    return http.post(path, json={"messages": [{"body": {"n": 1}, "ttl": 300}]})


def test_a_queue_beyond_the_quota_is_refused_by_put_and_by_post(http: httpx.Client) -> None:
    project = http.headers["X-Project-ID"]
    # Given a project with its two queues: one made by a PUT, one by a post
    assert http.put("/v2/queues/a", json={"n": 1}).status_code == 201
    assert post(http, "/v2/queues/b/messages").status_code == 201
    # When a third is made by a PUT, or by a post to it
    for answer in (http.put("/v2/queues/c", json={}), post(http, "/v2/queues/c/messages")):
        # Then each is 403, saying why
        assert answer.status_code == 403, answer.text
        assert answer.json() == refusal(project, "queues")
    # And nothing of it is stored: the project still has two queues, the third has no message
    assert names(http) == ["a", "b"]
    listed = http.get("/v2/queues/c/messages", params={"echo": "true"})
    assert listed.status_code == 200 and listed.json()["messages"] == []
    # While its queues take messages and new metadata as before, and another project is free
    assert post(http, "/v2/queues/a/messages").status_code == 201
    assert http.put("/v2/queues/a", json={"n": 2}).status_code == 204
    other = {"X-Project-ID": "qt-" + uuid.uuid4().hex[:8]}
    assert http.put("/v2/queues/c", json={}, headers=other).status_code == 201
    # When one of its queues is deleted, a new one fits again
    assert http.delete("/v2/queues/b").status_code == 204
    assert post(http, "/v2/queues/c/messages").status_code == 201
    assert names(http) == ["a", "c"]


def test_topics_have_a_quota_of_their_own(http: httpx.Client) -> None:
    project = http.headers["X-Project-ID"]
    # Given a project with a queue and two topics
    assert http.put("/v2/queues/q", json={}).status_code == 201
    assert http.put("/v2/topics/t1", json={}).status_code == 201
    assert post(http, "/v2/topics/t2/messages").status_code == 201
    # Then a third topic is refused, by a PUT and by a post
    for answer in (http.put("/v2/topics/t3", json={}), post(http, "/v2/topics/t3/messages")):
        assert answer.status_code == 403, answer.text
        assert answer.json() == refusal(project, "topics")
    assert names(http, "topics") == ["t1", "t2"]
    # While a second queue still fits the queues' quota
    assert http.put("/v2/queues/q2", json={}).status_code == 201


def test_over_websocket_the_refusal_is_a_403_frame(quota_stack: Stack) -> None:
    project = "qt-" + uuid.uuid4().hex[:8]
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}

    def ask(ws: Any, action: str, body: dict[str, Any]) -> dict[str, Any]:
        ws.send(orjson.dumps({"action": action, "headers": headers, "body": body}).decode())
        answer: dict[str, Any] = orjson.loads(ws.recv(timeout=30))
        return answer

    with connect(f"ws://127.0.0.1:{quota_stack.settings.ws_port}") as ws:
        assert ask(ws, "queue_create", {"queue_name": "a"})["headers"]["status"] == 201
        assert ask(ws, "queue_create", {"queue_name": "b"})["headers"]["status"] == 201
        for answer in (
            ask(ws, "queue_create", {"queue_name": "c"}),
            ask(ws, "message_post", {"queue_name": "c", "messages": [{"body": 1}]}),
        ):
            assert answer["headers"]["status"] == 403, answer
            assert answer["body"]["error"] == refusal(project, "queues")["description"]
        listed = ask(ws, "queue_list", {})
        assert [q["name"] for q in listed["body"]["queues"]] == ["a", "b"]


def test_python_zaqarclient_raises_the_refusal(quota_stack: Stack) -> None:
    project = "qt-" + uuid.uuid4().hex[:8]
    cli = zaqar.Client(quota_stack.url, version=2, conf={"auth_opts": {
        "backend": "noauth",
        "options": {"client_uuid": str(uuid.uuid4()), "os_project_id": project}}})
    cli.queue("a", force_create=True)
    cli.queue("b").post([{"body": 1}])
    # A client that created or posted beyond the quota learns it, as an error.
    with pytest.raises(zaqar_errors.ForbiddenError):
        cli.queue("c", force_create=True)
    with pytest.raises(zaqar_errors.ForbiddenError):
        cli.queue("c").post([{"body": 1}])
    assert sorted(q.name for q in cli.queues()[0]) == ["a", "b"]
    for n in (1, 2):
        cli.subscription("a", subscriber=f"http://127.0.0.1:9/hook{n}", ttl=3600)
    with pytest.raises(zaqar_errors.ForbiddenError):
        cli.subscription("a", subscriber="http://127.0.0.1:9/hook3", ttl=3600)


def test_a_subscription_beyond_its_queue_s_quota_is_refused(http: httpx.Client) -> None:
    project = http.headers["X-Project-ID"]

    def subscribe(queue: str, n: int) -> httpx.Response:
        return http.post(f"/v2/queues/{queue}/subscriptions",
                         json={"subscriber": f"http://127.0.0.1:9/hook{n}", "ttl": 3600})

    # Given a queue with two subscriptions
    assert http.put("/v2/queues/q", json={}).status_code == 201
    first = subscribe("q", 1)
    assert first.status_code == 201 and subscribe("q", 2).status_code == 201
    # When a third subscriber subscribes
    refused = subscribe("q", 3)
    # Then it is 403, saying why, and the queue still has two
    assert refused.status_code == 403, refused.text
    assert refused.json() == {"title": TITLE, "description": (
        f"Queue q of project {project} has 2 subscriptions, the most it may have "
        "(ZAQAR_QUEUE_MAX_SUBSCRIPTIONS); delete one first, or ask the operator for a larger "
        "quota.")}
    listed = http.get("/v2/queues/q/subscriptions")
    assert len(listed.json()["subscriptions"]) == 2
    # While a subscriber subscribing again gets its subscription, another queue is free, and
    # deleting one makes room
    assert subscribe("q", 1).status_code == 201
    assert http.put("/v2/queues/r", json={}).status_code == 201
    assert subscribe("r", 3).status_code == 201
    subscription = first.json()["subscription_id"]
    assert http.delete(f"/v2/queues/q/subscriptions/{subscription}").status_code == 204
    assert subscribe("q", 3).status_code == 201


async def test_a_grpc_caller_gets_resource_exhausted_with_the_reason(quota_stack: Stack) -> None:
    project = "qt-" + uuid.uuid4().hex[:8]
    settings = quota_stack.settings
    async with grpc.aio.insecure_channel(settings.target("queue")) as queues_channel, \
            grpc.aio.insecure_channel(settings.target("message")) as messages_channel:
        queues = queues_pb2_grpc.QueuesStub(queues_channel)
        messages = messages_pb2_grpc.MessagesStub(messages_channel)
        for name in ("a", "b"):
            await queues.CreateQueue(queues_pb2.CreateQueueRequest(project=project, queue=name))
        # A service calling queue_svc or message_svc directly (a create, a post to an absent
        # queue) gets gRPC's code for it, and the reason that tells it from other refusals.
        for call in (
            queues.CreateQueue(queues_pb2.CreateQueueRequest(project=project, queue="c")),
            messages.PostMessages(messages_pb2.PostMessagesRequest(
                project=project, queue="c", client_id=str(uuid.uuid4()),
                messages=[messages_pb2.NewMessage(body=b"1", ttl=60)])),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            info = decode_rpc_error(refused.value)
            assert (info.code, info.reason, info.title) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED", TITLE)
            assert info.description == refusal(project, "queues")["description"]
