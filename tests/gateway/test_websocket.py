"""The WebSocket API (contract §7) with a real client, in front of real services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import orjson
import pytest
from websockets.asyncio.client import connect

from services.api_gateway.upstream import Upstreams
from services.api_gateway.websocket import server as ws_server
from services.api_gateway.websocket.actions import ACTIONS
from services.common.config import Settings
from tests.gateway._ws import Ws, headers_for, new_project
from tests.gateway.conftest import CLIENT_ID, new_queue

DEFAULT_METADATA = {
    "_max_messages_post_size": 262144,
    "_default_message_ttl": 3600,
    "_default_message_delay": 0,
    "_dead_letter_queue": None,
    "_dead_letter_queue_messages_ttl": None,
    "_max_claim_count": None,
    "_enable_encrypt_messages": False,
}


@pytest.fixture(params=["json", "msgpack"])
async def ws(ws_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Ws]:
    """A connection speaking JSON text frames or MessagePack binary frames, own project."""
    async with connect(ws_url) as socket:
        yield Ws(socket, new_project(), binary=request.param == "msgpack")


@pytest.fixture
async def text_ws(ws_url: str) -> AsyncIterator[Ws]:
    async with connect(ws_url) as socket:
        yield Ws(socket, new_project())


def error(status_body: tuple[int, Any]) -> tuple[int, str, str]:
    status, body = status_body
    assert set(body) == {"error", "title"}
    return status, body["title"], body["error"]


async def test_queue_actions(ws: Ws) -> None:
    queue = new_queue()
    # Given a queue created with metadata, then again
    create = {"queue_name": queue, "metadata": {"d": "x"}}
    assert await ws.call("queue_create", create) == (201, f"Queue {queue} created.")
    assert await ws.call("queue_create", create) == (204, f"Queue {queue} created.")
    # Then its metadata comes back with the reserved defaults
    assert await ws.call("queue_get", {"queue_name": queue}) == (
        200,
        {"d": "x", **DEFAULT_METADATA},
    )
    # And it is listed, plainly and in detail, with a next link carrying the marker
    status, listed = await ws.call("queue_list")
    assert status == 200
    assert listed["queues"] == [{"name": queue, "href": f"/v2/queues/{queue}"}]
    assert listed["links"] == [{"rel": "next", "href": f"/v2/queues?marker={queue}"}]
    status, detailed = await ws.call("queue_list", {"detailed": True, "limit": 5})
    assert detailed["queues"][0]["metadata"]["d"] == "x"
    assert detailed["links"][0]["href"] == f"/v2/queues?limit=5&detailed=true&marker={queue}"
    # And its stats are empty
    stats = await ws.call("queue_get_stats", {"queue_name": queue})
    assert stats == (200, {"messages": {"claimed": 0, "free": 0, "total": 0}})
    # When purged and deleted
    purge = {"queue_name": queue, "resource_types": ["messages"]}
    assert await ws.call("queue_purge", purge) == (204, {})
    assert await ws.call("queue_delete", {"queue_name": queue}) == (204, f"Queue {queue} removed.")
    # Then the project has no queues left
    assert await ws.call("queue_list") == (200, {"queues": [], "links": []})


async def test_message_actions(ws: Ws) -> None:
    queue = new_queue()
    # Given three posted messages
    messages = [{"body": {"n": 1}, "ttl": 300}, {"body": "two"}, {"body": [3]}]
    status, posted = await ws.call("message_post", {"queue_name": queue, "messages": messages})
    assert status == 201
    ids = posted["message_ids"]
    assert list(posted) == ["message_ids"] and len(ids) == 3
    # Then they are listed in order with echo, hidden from their own client without it
    status, page = await ws.call("message_list", {"queue_name": queue, "echo": True})
    assert [m["body"] for m in page["messages"]] == [{"n": 1}, "two", [3]]
    assert [m["id"] for m in page["messages"]] == ids
    assert page["links"][0]["href"].startswith(f"/v2/queues/{queue}/messages?echo=true&marker=")
    assert await ws.call("message_list", {"queue_name": queue}) == (
        200,
        {"messages": [], "links": []},
    )
    # And one is fetched under "messages", several as a list
    status, one = await ws.call("message_get", {"queue_name": queue, "message_id": ids[0]})
    assert status == 200
    assert one["messages"] == {
        "id": ids[0],
        "href": f"/v2/queues/{queue}/messages/{ids[0]}",
        "ttl": 300,
        "age": one["messages"]["age"],
        "body": {"n": 1},
    }
    status, many = await ws.call("message_get_many", {"queue_name": queue, "message_ids": ids[1:]})
    assert [m["body"] for m in many["messages"]] == ["two", [3]]
    # When one is deleted, one deleted by id in bulk and the last popped
    assert await ws.call("message_delete", {"queue_name": queue, "message_id": ids[0]}) == (204, {})
    bulk = {"queue_name": queue, "message_ids": [ids[1]]}
    assert await ws.call("message_delete_many", bulk) == (204, {})
    status, popped = await ws.call("message_delete_many", {"queue_name": queue, "pop": 1})
    assert status == 200
    assert [(m["id"], m["body"]) for m in popped["messages"]] == [(ids[2], [3])]
    # Then they are gone
    assert error(await ws.call("message_get", {"queue_name": queue, "message_id": ids[0]})) == (
        404,
        "Not found",
        f"Message {ids[0]} does not exist in queue {queue} for project {ws.project}",
    )


async def test_claim_actions(ws: Ws) -> None:
    queue = new_queue()
    body = {"queue_name": queue, "messages": [{"body": 1}, {"body": 2}]}
    _, posted = await ws.call("message_post", body)
    first, second = posted["message_ids"]
    # Given a claim of one message
    create = {"queue_name": queue, "limit": 1, "ttl": 120, "grace": 60}
    status, claimed = await ws.call("claim_create", create)
    assert status == 201
    claim_id = claimed["claim_id"]
    assert [m["id"] for m in claimed["messages"]] == [first]
    assert claimed["messages"][0]["href"].endswith(f"?claim_id={claim_id}")
    ref = {"queue_name": queue, "claim_id": claim_id}
    # Then it reads back, and renews
    status, got = await ws.call("claim_get", ref)
    assert (status, got["ttl"], got["href"]) == (200, 120, f"/v2/queues/{queue}/claims/{claim_id}")
    assert await ws.call("claim_update", {**ref, "ttl": 240}) == (204, f"Claim {claim_id} updated.")
    assert (await ws.call("claim_get", ref))[1]["ttl"] == 240
    # And deleting follows Zaqar's rules: 403 without the claim, 400 with a claim on a free one
    item = {"queue_name": queue, "message_id": first}
    assert error(await ws.call("message_delete", item))[:2] == (403, "Unable to delete")
    free = {"queue_name": queue, "message_id": second, "claim_id": claim_id}
    assert (await ws.call("message_delete", free))[0] == 400
    assert await ws.call("message_delete", {**item, "claim_id": claim_id}) == (204, {})
    # When released, it is gone; the other message is claimable, then nothing is
    assert await ws.call("claim_delete", ref) == (204, f"Claim {claim_id} deleted.")
    assert (await ws.call("claim_get", ref))[0] == 404
    assert (await ws.call("claim_create", {"queue_name": queue}))[0] == 201
    assert await ws.call("claim_create", {"queue_name": queue}) == (204, {"claim_id": None})


async def test_node_actions(text_ws: Ws) -> None:
    ws = text_ws
    # No-auth mode: authenticate is accepted as is
    token = await ws.call("authenticate", X_Auth_Token="anything")
    assert token == (200, {"message": "Authentified."})
    status, home = await ws.call("get_home_doc")
    assert status == 200 and "rel/queues" in home["resources"]
    assert await ws.call("ping_node") == (204, {})
    # Health is for admins only
    assert error(await ws.call("check_node_health"))[:2] == (403, "Not authorized")
    status, health = await ws.call("check_node_health", X_Roles="admin")
    assert status == 200 and health["storage_reachable"] is True
    assert health["operation_status"]["create_queue"]["succeeded"] is True


async def test_unknown_action(text_ws: Ws) -> None:
    assert error(await text_ws.call("queue_rename", {"queue_name": "q"})) == (
        400,
        "Invalid API request",
        "queue_rename is not a valid action",
    )


async def test_every_action_names_its_missing_body_keys(text_ws: Ws) -> None:
    for name, action in ACTIONS.items():
        if not action.required:
            continue
        # Given a request without a body at all
        status, _title, text = error(await text_ws.call(name))
        keys = ", ".join(f'"{key}"' for key in action.required)
        # Then 400 names every required key
        assert (status, text) == (400, f"The {name} action requires {keys} in its body."), name
    # message_delete_many needs ids, claim ids or a pop count as well
    assert error(await text_ws.call("message_delete_many", {"queue_name": "q"}))[2] == (
        'The message_delete_many action requires one of "message_ids", "claim_ids", "pop"'
        " in its body."
    )



async def test_every_action_takes_frames_up_to_its_http_body_limit(ws: Ws) -> None:
    """Each action of the table takes a frame as long as its HTTP route's body limit plus the
    envelope, and refuses one byte more with 400 before anything else."""
    def request(name: str, body: dict[str, Any], pad: int) -> dict[str, Any]:
        return {"action": name, "headers": headers_for(ws.project),
                "body": {**body, "pad": "p" * pad}}

    for name, action in ACTIONS.items():
        limit = ws_server.frame_max(action)
        body: dict[str, Any] = {key: "x" for key in action.required}
        pad = limit - len(ws.encode(request(name, body, 0)))
        # (A MessagePack string's length prefix grows with it: take the pad to the limit.)
        while len(ws.encode(request(name, body, pad))) > limit:
            pad -= 1
        at_limit, over = request(name, body, pad), request(name, body, pad + 1)
        assert len(ws.encode(at_limit)) == limit, name
        answer = await ws.send_raw(ws.encode(over))
        assert (name, answer["headers"]["status"], answer["body"]["error"]) == (name, 400, (
            f"The {name} request is too large. Max size: {limit} (a body of "
            f"{action.body_max} bytes, headers and envelope)."
        ))
        answer = await ws.send_raw(ws.encode(at_limit))
        assert "too large" not in str(answer["body"]), (name, answer)

async def test_a_text_frame_is_measured_in_the_bytes_it_was_sent_in(text_ws: Ws) -> None:
    """A text frame's limit counts its UTF-8 bytes, as HTTP counts a body's: characters of
    two, three or four bytes do not take a frame past it."""
    action = ACTIONS["message_post"]
    limit = ws_server.frame_max(action)

    def frame(pad: str) -> str:
        return orjson.dumps({"action": "message_post", "headers": headers_for(text_ws.project),
                             "body": {"queue_name": "q", "messages": [{"body": 1}],
                                      "pad": pad}}).decode()

    for char in ("é", "€", "😀"):
        width = len(char.encode())
        room = limit - len(frame("").encode())
        at_limit = frame(char * (room // width) + "x" * (room % width))
        over = frame(char * (room // width + 1))
        assert len(at_limit.encode()) == limit and len(over.encode()) > limit
        # A frame of fewer characters than the limit, but more bytes, is refused
        assert len(over) < limit
        answer = await text_ws.send_raw(over)
        assert answer["headers"]["status"] == 400, (char, answer)
        assert answer["body"]["error"].startswith("The message_post request is too large.")
        # And one of exactly the limit's bytes gets past the check
        answer = await text_ws.send_raw(at_limit)
        assert "request is too large" not in str(answer["body"]), (char, answer)


@pytest.mark.parametrize(
    ("frame", "text"),
    [
        ("not json", "Can't decode text (JSON) request. JSONDecodeError"),
        (b"\xc1", "Can't decode binary (MessagePack) request."),
        ("[1, 2]", "Unexpected body type. Expected dict or dict like."),
        (msgpack.packb([1, 2]), "Unexpected body type. Expected dict or dict like."),
        ('"text"', "Unexpected body type. Expected dict or dict like."),
        (
            msgpack.packb({"action": "message_post", "body": {"messages": [{"body": b"\x00"}]}}),
            "The request holds values JSON cannot represent",
        ),
        (msgpack.packb({"action": "queue_list", 1: 2}), "Can't decode binary (MessagePack)"),
        (
            '{"action": "message_post", "body": {"messages": [{"body": %s}]}}'
            % ("[" * 300 + "]" * 300),
            "The JSON document nests too deeply.",
        ),
    ],
)
async def test_bad_frames(text_ws: Ws, frame: str | bytes, text: str) -> None:
    # When a frame is not an object in its framing
    response = await text_ws.send_raw(frame)
    # Then the answer, in the same framing, is a 400 that says why
    assert response["headers"] == {"status": 400}
    assert response["body"]["error"].startswith(text)
    assert response["request"] == {"action": None, "body": {}, "headers": None, "api": "v2"}
    # And the connection goes on
    assert (await text_ws.call("queue_list"))[0] == 200


@pytest.mark.parametrize(
    ("request_doc", "text"),
    [
        ({"headers": {}}, 'The request must have an "action".'),
        ({"action": "queue_list"}, 'The request must have a "headers" object.'),
        ({"action": "queue_list", "headers": "x"}, 'The request must have a "headers" object.'),
        (
            {
                "action": "queue_get",
                "headers": {"Client-ID": CLIENT_ID, "X-Project-ID": "p"},
                "body": [1],
            },
            'The request "body" must be an object.',
        ),
    ],
)
@pytest.mark.parametrize("binary", [False, True])
async def test_malformed_requests(
    text_ws: Ws, request_doc: dict[str, Any], text: str, binary: bool
) -> None:
    text_ws.binary = binary
    response = await text_ws.send_raw(text_ws.encode(request_doc))
    assert response["headers"] == {"status": 400}
    assert response["body"] == {"error": text, "title": "Invalid API request"}


@pytest.mark.parametrize(
    ("change", "title", "text"),
    [
        ({"Client-ID": None}, "Missing header value", 'The "Client-Id" header is required.'),
        ({"Client-ID": "not-a-uuid"}, "Wrong UUID value", "Malformed hexadecimal UUID."),
        ({"X-Project-ID": None}, "Project-Id Missing", "The header X-PROJECT-ID was missing"),
        ({"X-Project-ID": ""}, "Empty project header not allowed", None),
        ({"X-Project-ID": "p" * 257}, "Invalid project id", None),
    ],
)
async def test_header_rules_as_on_http(
    text_ws: Ws, change: dict[str, str | None], title: str, text: str | None
) -> None:
    headers: dict[str, Any] = {"Client-ID": CLIENT_ID, "X-Project-ID": text_ws.project}
    headers.update(change)
    headers = {k: v for k, v in headers.items() if v is not None}
    request = {"action": "queue_list", "headers": headers}
    response = await text_ws.send_raw(text_ws.encode(request))
    assert response["headers"] == {"status": 400}
    assert response["body"]["title"] == title
    if text is not None:
        assert response["body"]["error"] == text


async def test_header_names_are_case_insensitive_and_ids_may_be_undashed(text_ws: Ws) -> None:
    headers = {"client-id": CLIENT_ID.replace("-", "").upper(), "x-project-id": text_ws.project}
    response = await text_ws.send_raw(text_ws.encode({"action": "queue_list", "headers": headers}))
    assert response["headers"] == {"status": 200}


@pytest.mark.parametrize(
    ("action", "body", "text"),
    [
        ("queue_get", {"queue_name": 5}, 'The value of the "queue_name" field must be a str.'),
        ("message_list", {"queue_name": "q", "limit": "x"}, 'The value of the "limit" field'),
        ("message_list", {"queue_name": "q", "echo": 3}, 'The value of the "echo" field'),
        (
            "message_get_many",
            {"queue_name": "q", "message_ids": "a"},
            'The value of the "message_ids" field must be a list of str.',
        ),
        ("message_list", {"queue_name": "q", "limit": 0}, "Limit must be at least 1"),
        ("queue_create", {"queue_name": "bad name"}, "The format of the submitted queue name"),
        ("message_post", {"queue_name": "q", "messages": []}, "No messages to enqueu."),
        ("claim_create", {"queue_name": "q", "ttl": 10}, "The TTL for a claim may not exceed"),
        (
            "message_delete_many",
            {"queue_name": "q", "message_ids": ["a"], "pop": 1},
            "pop and id params cannot be present together",
        ),
    ],
)
async def test_invalid_fields_are_400(
    text_ws: Ws, action: str, body: dict[str, Any], text: str
) -> None:
    status, _, error_text = error(await text_ws.call(action, body))
    assert status == 400
    assert error_text.startswith(text)


@pytest.fixture
async def dead_ws(make_settings: Callable[..., Settings]) -> AsyncIterator[Ws]:
    """The WebSocket server with nothing listening behind it."""
    settings = make_settings(rpc_timeout=2.0)
    up = Upstreams(settings)
    server = await ws_server.start(settings, up)
    try:
        async with connect(f"ws://{settings.host}:{ws_server.bound_port(server)}") as socket:
            yield Ws(socket, new_project())
    finally:
        server.close()
        await server.wait_closed()
        await up.close()


async def test_a_down_service_is_503(dead_ws: Ws) -> None:
    for action, body in [("queue_list", None), ("message_list", {"queue_name": "q"})]:
        status, title, text = error(await dead_ws.call(action, body))
        assert (status, title) == (503, "Service temporarily unavailable")
        assert "try again" in text
    assert (await dead_ws.call("ping_node"))[0] == 503
    # A push subscription needs notifier_svc as well
    assert (await dead_ws.call("subscription_create", {"queue_name": "q"}))[0] == 503


async def test_only_the_root_path_is_served(ws_url: str) -> None:
    with pytest.raises(Exception, match="404"):
        async with connect(ws_url + "/v2/queues"):
            pass
