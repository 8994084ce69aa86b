"""Pre-signed URLs: ``POST /v2/queues/{q}/share`` and requests carrying ``URL-Signature``.

Signatures are checked against an HMAC-SHA256 computed here, over the exact text of the
contract (§6), independently of ``services.common.signing``.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from services import preflight
from services.api_gateway.app import create_app
from services.api_gateway.upstream import Upstreams
from services.api_gateway.websocket import server as ws_server
from services.common import signing
from services.common.config import ConfigurationError, Settings
from services.common.startup import failure
from tests.gateway.conftest import (
    CLIENT_ID,
    MODES,
    GatewayFactory,
    error_body,
    live_client,
    new_queue,
    running_services,
)
from tests.stacks import SIGNED_URL_SECRET, up_stack

NOT_FOUND = {"title": "404 Not Found"}


def independent_signature(
    secret: str, paths: list[str], methods: list[str], project: str, expires: str
) -> str:
    r"""The contract's formula written out: fields joined by the two characters ``\n``."""
    text = (
        ",".join(sorted(paths)) + "\\n" + ",".join(sorted(methods)) + "\\n" + project + "\\n"
        + expires
    )
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


def test_independent_vector() -> None:
    """A known answer: the signed text is one line (backslash-n, not a newline)."""
    text = b"/v2/queues/shareq/messages\\nGET,POST\\ndemo-project\\n2030-01-01T00:00:00"
    assert b"\n" not in text
    expected = hmac.new(b"s3cr3t", text, hashlib.sha256).hexdigest()
    assert expected == independent_signature(
        "s3cr3t", ["/v2/queues/shareq/messages"], ["POST", "GET"], "demo-project",
        "2030-01-01T00:00:00",
    )
    assert expected == expected.lower() and len(expected) == 64
    assert signing.signature(
        "s3cr3t", ["/v2/queues/shareq/messages"], ["POST", "GET"], "demo-project",
        "2030-01-01T00:00:00",
    ) == expected
    # A newline separator would be a different signature.
    assert hmac.new(b"s3cr3t", text.replace(b"\\n", b"\n"), hashlib.sha256).hexdigest() != (
        expected
    )


@pytest.fixture(params=MODES)
async def signed_client(
    request: pytest.FixtureRequest, gateway_factory: GatewayFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway configured with :data:`SIGNED_URL_SECRET`, in-process and over ``up``."""
    if request.param == "asgi":
        make_settings: Callable[..., Settings] = request.getfixturevalue("make_settings")
        async with running_services(make_settings(signed_url_secret=SIGNED_URL_SECRET)) as s:
            yield await gateway_factory(s)
    else:
        async for http in live_client(request, request.param):
            yield http


def new_project() -> str:
    return "signed-" + uuid.uuid4().hex[:12]


def signed_headers(data: dict[str, Any], **overrides: str) -> dict[str, str]:
    """The headers a holder of share ``data`` sends (no other credential)."""
    headers = {
        "Client-ID": CLIENT_ID,
        "X-Project-ID": data["project"],
        "URL-Signature": data["signature"],
        "URL-Methods": ",".join(data["methods"]),
        "URL-Paths": ",".join(data["paths"]),
        "URL-Expires": data["expires"],
    }
    headers.update(overrides)
    return headers


async def share(
    client: httpx.AsyncClient, project: str, queue: str, doc: dict[str, Any]
) -> dict[str, Any]:
    resp = await client.post(
        f"/v2/queues/{queue}/share", json=doc, headers={"X-Project-ID": project}
    )
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


# Share ---------------------------------------------------------------------------------------


async def test_share_answer_verifies_independently(signed_client: httpx.AsyncClient) -> None:
    project, queue = new_project(), new_queue()
    doc = {"methods": ["POST", "GET"], "paths": ["messages", "claims"],
           "expires": "2030-01-01T00:00:00"}
    data = await share(signed_client, project, queue, doc)
    assert data == {
        "paths": [f"/v2/queues/{queue}/claims", f"/v2/queues/{queue}/messages"],
        "methods": ["GET", "POST"],
        "project": project,
        "expires": "2030-01-01T00:00:00",
        "signature": independent_signature(
            SIGNED_URL_SECRET,
            [f"/v2/queues/{queue}/messages", f"/v2/queues/{queue}/claims"],
            ["GET", "POST"], project, "2030-01-01T00:00:00",
        ),
    }


async def test_share_defaults(signed_client: httpx.AsyncClient) -> None:
    project, queue = new_project(), new_queue()
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    data = await share(signed_client, project, queue, {})
    after = datetime.now(UTC).replace(tzinfo=None)
    assert data["paths"] == [f"/v2/queues/{queue}/messages"]
    assert data["methods"] == ["GET"]
    expires = datetime.strptime(data["expires"], "%Y-%m-%dT%H:%M:%S")
    assert before + timedelta(days=1) <= expires <= after + timedelta(days=1)
    assert data["signature"] == independent_signature(
        SIGNED_URL_SECRET, data["paths"], ["GET"], project, data["expires"]
    )


async def test_share_expiry_with_offset_is_normalised_to_utc(
    signed_client: httpx.AsyncClient,
) -> None:
    data = await share(signed_client, new_project(), new_queue(),
                       {"expires": "2030-01-01T02:00:00+02:00"})
    assert data["expires"] == "2030-01-01T00:00:00"


@pytest.mark.parametrize(
    ("doc", "description"),
    [
        ({"paths": ["messages"], "bogus": 1}, "Unknown keys: {'bogus'}"),
        ({"paths": ["messages", "queues"]}, "Invalid paths: {'queues'}"),
        ({"methods": "GET"}, "`methods` should be a list"),
        ({"methods": ["GET", "FETCH"]}, "Invalid methods: ['FETCH']"),
        ({"expires": "2000-01-01T00:00:00"}, "`expires` is lower than the current time"),
        (
            {"expires": 1893456000},
            "`expires` should be date format, for example 2016-01-01T00:00:00, "
            "not integer value: 1893456000",
        ),
        (
            {"expires": "1893456000"},
            "`expires` should be date format, for example 2016-01-01T00:00:00, "
            "not integer value: 1893456000",
        ),
        ({"expires": "next tuesday"}, "Unable to parse date string 'next tuesday'"),
    ],
)
async def test_share_refusals(
    signed_client: httpx.AsyncClient, doc: dict[str, Any], description: str
) -> None:
    resp = await signed_client.post(f"/v2/queues/{new_queue()}/share", json=doc)
    assert resp.status_code == 400
    assert resp.json() == error_body("Invalid API request", description)


async def test_share_needs_a_body(signed_client: httpx.AsyncClient) -> None:
    resp = await signed_client.post(f"/v2/queues/{new_queue()}/share")
    assert resp.status_code == 400
    assert resp.json() == error_body("Invalid request body", "Request body can not be empty")
    resp = await signed_client.post(f"/v2/queues/{new_queue()}/share", json=["messages"])
    assert resp.status_code == 400
    assert resp.json() == error_body("Invalid request body", "Request body could not be parsed.")


async def test_share_without_a_secret(
    services: Settings, gateway_factory: GatewayFactory
) -> None:
    """No ``signed_url_secret`` configured (the up stacks have one, so in-process only)."""
    client = await gateway_factory(services)
    resp = await client.post(
        "/v2/queues/shareq/share",
        json={"methods": ["GET", "POST"], "paths": ["messages"],
              "expires": "2030-01-01T00:00:00"},
    )
    assert resp.status_code == 400
    assert resp.json() == error_body("Invalid API request", "The `key` can't be None")
    # And nothing verifies there: a signature made with any key is refused.
    paths, methods = ["/v2/queues/shareq/messages"], ["GET"]
    data = {
        "paths": paths, "methods": methods, "project": "demo-project",
        "expires": "2030-01-01T00:00:00",
        "signature": independent_signature("", paths, methods, "demo-project",
                                           "2030-01-01T00:00:00"),
    }
    resp = await client.get("/v2/queues/shareq/messages", headers=signed_headers(data))
    assert resp.status_code == 404


# Signed requests -----------------------------------------------------------------------------


async def test_signed_post_and_get_messages(signed_client: httpx.AsyncClient) -> None:
    project, queue = new_project(), new_queue()
    data = await share(signed_client, project, queue,
                       {"methods": ["GET", "POST"], "expires": "2030-01-01T00:00:00"})
    headers = signed_headers(data)
    resp = await signed_client.post(
        f"/v2/queues/{queue}/messages", json={"messages": [{"body": {"n": 1}, "ttl": 300}]},
        headers=headers,
    )
    assert resp.status_code == 201, resp.text
    href = resp.json()["resources"][0]
    # Listing (echo: the poster's own client id) and one message below the granted path.
    resp = await signed_client.get(f"/v2/queues/{queue}/messages?echo=true", headers=headers)
    assert resp.status_code == 200
    assert [m["body"] for m in resp.json()["messages"]] == [{"n": 1}]
    resp = await signed_client.get(href, headers=headers)
    assert resp.status_code == 200
    assert resp.json()["body"] == {"n": 1}
    # The messages landed in the signed project: its owner sees them without a signature.
    resp = await signed_client.get(
        f"/v2/queues/{queue}/messages?echo=true", headers={"X-Project-ID": project}
    )
    assert [m["body"] for m in resp.json()["messages"]] == [{"n": 1}]


async def test_signature_made_independently_is_accepted(
    signed_client: httpx.AsyncClient,
) -> None:
    project, queue = new_project(), new_queue()
    paths, methods, expires = [f"/v2/queues/{queue}/messages"], ["GET"], "2031-06-30T12:00:00"
    data = {"paths": paths, "methods": methods, "project": project, "expires": expires,
            "signature": independent_signature(SIGNED_URL_SECRET, paths, methods, project,
                                               expires)}
    resp = await signed_client.get(f"/v2/queues/{queue}/messages", headers=signed_headers(data))
    assert resp.status_code == 200
    assert resp.json() == {"messages": [], "links": []}


async def test_signed_requests_refused(signed_client: httpx.AsyncClient) -> None:
    project, queue = new_project(), new_queue()
    await signed_client.post(
        f"/v2/queues/{queue}/messages", json={"messages": [{"body": 1}]},
        headers={"X-Project-ID": project},
    )
    data = await share(signed_client, project, queue,
                       {"methods": ["GET"], "paths": ["messages"],
                        "expires": "2030-01-01T00:00:00"})
    messages = f"/v2/queues/{queue}/messages"
    tampered = ("0" if data["signature"][0] != "0" else "1") + data["signature"][1:]
    expired_at = "2001-01-01T00:00:00"
    expired = dict(data, expires=expired_at, signature=independent_signature(
        SIGNED_URL_SECRET, data["paths"], data["methods"], project, expired_at))
    other_queue = new_queue()
    refused: list[tuple[str, str, dict[str, str]]] = [
        ("wrong signature", messages, signed_headers(data, **{"URL-Signature": tampered})),
        ("expired", messages, signed_headers(expired)),
        ("expiry altered", messages,
         signed_headers(data, **{"URL-Expires": "2040-01-01T00:00:00"})),
        ("method not listed", messages, signed_headers(data)),  # sent as DELETE below
        ("path not listed", f"/v2/queues/{queue}/claims/abc", signed_headers(data)),
        ("path not listed", f"/v2/queues/{queue}/stats", signed_headers(data)),
        ("other queue", f"/v2/queues/{other_queue}/messages", signed_headers(data)),
        ("other queue, path claimed", f"/v2/queues/{other_queue}/messages",
         signed_headers(data, **{"URL-Paths": f"/v2/queues/{other_queue}/messages"})),
        ("other project", messages, signed_headers(data, **{"X-Project-ID": new_project()})),
        ("methods widened", messages, signed_headers(data, **{"URL-Methods": "GET,DELETE"})),
        ("no expiry", messages,
         {k: v for k, v in signed_headers(data).items() if k != "URL-Expires"}),
    ]
    for why, path, headers in refused:
        method = "DELETE" if why in {"method not listed", "methods widened"} else "GET"
        if method == "DELETE":
            path += "?pop=1"
        resp = await signed_client.request(method, path, headers=headers)
        assert (why, resp.status_code, resp.json()) == (why, 404, NOT_FOUND)
    # Nothing was popped.
    resp = await signed_client.get(
        f"{messages}?echo=true", headers={"X-Project-ID": project}
    )
    assert len(resp.json()["messages"]) == 1
    # The untouched headers still work.
    resp = await signed_client.get(f"{messages}?echo=true", headers=signed_headers(data))
    assert resp.status_code == 200 and len(resp.json()["messages"]) == 1


async def test_signed_request_still_needs_client_id(signed_client: httpx.AsyncClient) -> None:
    data = await share(signed_client, new_project(), new_queue(), {})
    headers = signed_headers(data)
    del headers["Client-ID"]
    request = signed_client.build_request("GET", data["paths"][0], headers=headers)
    del request.headers["Client-ID"]
    resp = await signed_client.send(request)
    assert resp.status_code == 400
    assert resp.json() == error_body("Missing header value", 'The "Client-Id" header is required.')


def test_verify_request_unit() -> None:
    """The pure check: each condition on its own."""
    now = datetime(2030, 1, 1, tzinfo=UTC)
    paths, methods, expires = ["/v2/queues/q.1/messages"], ["GET", "POST"], "2030-01-02T00:00:00"
    given = independent_signature("k", paths, methods, "p", expires)

    def check(**changes: Any) -> bool:
        values: dict[str, Any] = dict(
            method="GET", path="/v2/queues/q.1/messages", project="p", given=given,
            methods="GET,POST", paths=",".join(paths), expires=expires, now=now,
        )
        values.update(changes)
        return signing.verify_request(("k",), **values)

    assert check()
    assert check(methods=["POST", "GET"], paths=paths)  # WebSocket-style lists
    assert check(method="POST", path="/v2/queues/q.1/messages/abc")
    assert not check(method="DELETE")
    assert not check(path="/v2/queues/qX1/messages")  # "." is not a wildcard
    assert not check(path="/v2/queues/q.1/messagesX")
    assert not check(project="p2")
    assert not check(now=datetime(2030, 1, 2, tzinfo=UTC))
    assert not check(given=given[::-1])
    assert not signing.verify_request(
        ("",), method="GET", path=paths[0], project="p", given=given, methods="GET,POST",
        paths=paths[0], expires=expires, now=now,
    )
    # One secret given as a str would be read as its letters: refused outright
    with pytest.raises(TypeError, match="sequence of secrets"):
        signing.verify_request(
            "k", method="GET", path=paths[0], project="p", given=given, methods="GET",
            paths=paths[0], expires=expires, now=now,
        )



def test_verify_request_with_a_previous_secret() -> None:
    """While rotating, a signature made with the current or the previous secret verifies,
    and one made with any other does not."""
    now = datetime(2030, 1, 1, tzinfo=UTC)
    paths, methods, expires = ["/v2/queues/q/messages"], ["GET"], "2030-01-02T00:00:00"
    settings = Settings(signed_url_secret="new", signed_url_previous_secret="old")
    secrets = signing.Keys.from_settings(settings).verifying
    assert secrets == ("new", "old")

    def verifies(key: str, keys: Any = secrets) -> bool:
        return signing.verify_request(
            keys, method="GET", path=paths[0], project="p",
            given=independent_signature(key, paths, methods, "p", expires),
            methods="GET", paths=paths[0], expires=expires, now=now,
        )

    assert verifies("new") and verifies("old")
    assert not verifies("other")
    assert not verifies("old", keys=("new",))
    assert not verifies("", keys=("", ""))  # empty secrets are none
    assert signing.Keys.from_settings(Settings(signed_url_secret="new")).verifying == ("new",)
    assert signing.Keys.from_settings(Settings()).verifying == ()
    with pytest.raises(ConfigurationError, match="ZAQAR_SIGNED_URL_PREVIOUS_SECRET"):
        signing.Keys.from_settings(Settings(signed_url_previous_secret="old"))



async def test_a_previous_secret_alone_is_refused_at_start(tmp_path: Path) -> None:
    """The previous secret is a secret setting (read from a file, never shown), and without
    a current secret the gateway does not start: the one line says what to set."""
    (tmp_path / "old").write_text("old-secret\n")
    environ = {"ZAQAR_SIGNED_URL_PREVIOUS_SECRET_FILE": str(tmp_path / "old")}
    settings = Settings.load(environ=environ)
    assert settings.signed_url_previous_secret == "old-secret"
    shown = {name: value for name, value, _ in Settings.effective(environ=environ)}
    assert shown["ZAQAR_SIGNED_URL_PREVIOUS_SECRET"] == "'***'"
    with pytest.raises(ConfigurationError) as refused:
        await preflight.check(settings, ["gateway"])
    assert failure(refused.value, "gateway") == (2, (
        "configuration error: signed_url_previous_secret (ZAQAR_SIGNED_URL_PREVIOUS_SECRET) is "
        "set without signed_url_secret (ZAQAR_SIGNED_URL_SECRET): when rotating, the new "
        "secret signs and the previous one still verifies"
    ))
    with pytest.raises(ConfigurationError):
        create_app(settings, Upstreams(settings))

async def test_rotating_the_secret(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory
) -> None:
    """A gateway given a new secret and the previous one: URLs handed out before go on
    working over HTTP and WebSocket, new ones are signed with the new secret, and URLs of a
    secret it no longer has (or never had) are refused."""
    project, queue = new_project(), new_queue()
    paths, methods, expires = [f"/v2/queues/{queue}/messages"], ["GET", "POST"], (
        "2030-01-01T00:00:00"
    )

    def handed_out(secret: str) -> dict[str, Any]:
        return {"paths": paths, "methods": methods, "project": project, "expires": expires,
                "signature": independent_signature(secret, paths, methods, project, expires)}

    settings = make_settings(signed_url_secret="new-secret",
                             signed_url_previous_secret=SIGNED_URL_SECRET)
    async with running_services(settings) as s:
        client = await gateway_factory(s)
        for secret, status in ((SIGNED_URL_SECRET, 201), ("new-secret", 201),
                               ("retired-long-ago", 404)):
            resp = await client.post(
                paths[0], json={"messages": [{"body": secret}]},
                headers=signed_headers(handed_out(secret)),
            )
            assert (secret, resp.status_code) == (secret, status), resp.text
        data = await share(client, project, queue, {"methods": methods, "expires": expires})
        assert data["signature"] == handed_out("new-secret")["signature"]
        up = Upstreams(s)
        server = await ws_server.start(s, up)
        try:
            async with connect(f"ws://{s.host}:{ws_server.bound_port(server)}") as socket:
                for secret, status in ((SIGNED_URL_SECRET, 200), ("new-secret", 200),
                                       ("retired-long-ago", 404)):
                    grant = signed_headers(handed_out(secret))
                    answer = await ws_call(socket, "message_list",
                                           {"queue_name": queue, "echo": True}, grant)
                    assert (secret, answer[0]) == (secret, status)
                    if status == 200:
                        assert [m["body"] for m in answer[1]["messages"]] == [
                            SIGNED_URL_SECRET, "new-secret"
                        ]
        finally:
            server.close()
            await server.wait_closed()
            await up.close()

# WebSocket -----------------------------------------------------------------------------------


@pytest.fixture(params=MODES)
async def signed_ws(request: pytest.FixtureRequest) -> AsyncIterator[ClientConnection]:
    """A connection to the WebSocket API of a gateway configured with the secret."""
    if request.param != "asgi":
        stack = up_stack(request, request.param.removeprefix("up-"))
        async with connect(f"ws://{stack.settings.host}:{stack.settings.ws_port}") as socket:
            yield socket
        return
    make_settings: Callable[..., Settings] = request.getfixturevalue("make_settings")
    async with running_services(make_settings(signed_url_secret=SIGNED_URL_SECRET)) as settings:
        up = Upstreams(settings)
        server = await ws_server.start(settings, up)
        try:
            async with connect(f"ws://{settings.host}:{ws_server.bound_port(server)}") as socket:
                yield socket
        finally:
            server.close()
            await server.wait_closed()
            await up.close()


async def ws_call(
    socket: ClientConnection, action: str, body: dict[str, Any], headers: dict[str, Any]
) -> tuple[int, Any]:
    await socket.send(orjson.dumps({"action": action, "headers": headers, "body": body}).decode())
    answer = orjson.loads(await socket.recv())
    return answer["headers"]["status"], answer["body"]


def ws_grant(project: str, queue: str, methods: list[str], expires: str = "2030-01-01T00:00:00",
             as_lists: bool = False) -> dict[str, Any]:
    paths = [f"/v2/queues/{queue}/messages"]
    return {
        "Client-ID": CLIENT_ID,
        "X-Project-ID": project,
        "URL-Signature": independent_signature(SIGNED_URL_SECRET, paths, methods, project,
                                               expires),
        "URL-Methods": methods if as_lists else ",".join(methods),
        "URL-Paths": paths if as_lists else ",".join(paths),
        "URL-Expires": expires,
    }


async def test_websocket_signed_requests(signed_ws: ClientConnection) -> None:
    project, queue = new_project(), new_queue()
    q = {"queue_name": queue}
    grant = ws_grant(project, queue, ["GET", "POST"])
    listed_grant = ws_grant(project, queue, ["GET", "POST"], as_lists=True)
    status, posted = await ws_call(
        signed_ws, "message_post", {**q, "messages": [{"body": "hi"}]}, grant
    )
    assert status == 201
    message_id = posted["message_ids"][0]
    for headers in (grant, listed_grant):
        status, listed = await ws_call(signed_ws, "message_list", {**q, "echo": True}, headers)
        assert (status, [m["body"] for m in listed["messages"]]) == (200, ["hi"])
        status, one = await ws_call(
            signed_ws, "message_get", {**q, "message_id": message_id}, headers
        )
        assert (status, one["messages"]["body"]) == (200, "hi")  # Zaqar's shape

    refused_body = {"error": "404 Not Found", "title": "404 Not Found"}
    expired = ws_grant(project, queue, ["GET", "POST"], expires="2001-01-01T00:00:00")
    other_queue = new_queue()
    cases: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("wrong signature", "message_list", q, {**grant, "URL-Signature": "0" * 64}),
        ("expired", "message_list", q, expired),
        ("method not listed", "message_delete", {**q, "message_id": message_id}, grant),
        ("method not listed", "message_delete_many", {**q, "pop": 1}, grant),
        ("path not listed", "claim_create", q, grant),
        ("path not listed", "queue_get_stats", q, grant),
        ("path not listed", "queue_list", {}, grant),
        ("other queue", "message_list", {"queue_name": other_queue}, grant),
        ("other project", "message_list", q, {**grant, "X-Project-ID": new_project()}),
        ("not a segment", "message_get", {**q, "message_id": "a/b"}, grant),
        # Below the granted path as text, but dot segments: never a canonical path.
        ("dot segment", "message_get", {**q, "message_id": ".."}, grant),
        ("dot segment", "message_get", {**q, "message_id": "."}, grant),
    ]
    for why, action, body, headers in cases:
        answer = await ws_call(signed_ws, action, body, headers)
        assert (why, answer) == (why, (404, refused_body))
    # Nothing was deleted or claimed.
    status, listed = await ws_call(signed_ws, "message_list", {**q, "echo": True}, grant)
    assert [m["body"] for m in listed["messages"]] == ["hi"]
