"""The gRPC -> HTTP status table, per-route overrides, and answers when services fail."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import falcon.asgi
import grpc
import httpx
import orjson
import pytest
from grpc_status import rpc_status

from services.api_gateway.app import create_app
from services.api_gateway.errors import ROUTE_OVERRIDES, STATUS_TABLE, api_error_from_rpc
from services.common.config import Settings
from services.common.errors import (
    ClaimNotFound,
    MessageIsClaimed,
    MessageNotClaimed,
    MessageNotClaimedBy,
    ServiceError,
    to_status,
)
from tests.conftest import FAIL_FAST
from tests.gateway.conftest import HEADERS, GatewayFactory, lifespan

EXPECTED_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.UNKNOWN: 503,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

MESSAGE_DELETE = "DELETE /v2/queues/{queue_name}/messages/{message_id}"


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """A failed call as the aio client raises it, without rich details."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def service_error(err: ServiceError) -> grpc.aio.AioRpcError:
    """A failed call carrying the ErrorInfo a service attaches."""
    status = rpc_status.to_status(to_status(err))
    return grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        status.details,
    )


def test_the_table_maps_all_seventeen_codes() -> None:
    assert len(grpc.StatusCode) == 17
    assert {code: status for code, (status, _) in STATUS_TABLE.items()} == EXPECTED_STATUS


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_every_code_without_details_becomes_a_zaqar_error(code: grpc.StatusCode) -> None:
    # Given a failed call with no ErrorInfo
    err = api_error_from_rpc(rpc_error(code, "upstream said no"))
    # Then the table decides status and title, and the body is Zaqar's shape
    assert err.status == EXPECTED_STATUS[code]
    assert err.title == STATUS_TABLE[code][1]
    assert err.description
    assert orjson.loads(err.body()) == {"title": err.title, "description": err.description}


def test_transport_failures_get_a_retry_hint_not_channel_details() -> None:
    err = api_error_from_rpc(rpc_error(grpc.StatusCode.UNAVAILABLE, "ipv4:127.0.0.1:1 refused"))
    assert err.status == 503
    assert err.title == "Service temporarily unavailable"
    assert "127.0.0.1" not in (err.description or "")
    assert "try again" in (err.description or "")


def test_service_title_and_description_win() -> None:
    err = api_error_from_rpc(service_error(MessageIsClaimed()))
    assert (err.status, err.title) == (403, "Unable to delete")
    assert err.description == (
        "This message is claimed; it cannot be deleted without a valid claim ID."
    )


@pytest.mark.parametrize(
    ("error", "default_status", "on_message_delete"),
    [
        (MessageNotClaimed(), 409, 400),
        (ClaimNotFound(claim_id="c", queue="q", project="p"), 404, 400),
        (MessageIsClaimed(), 403, 403),
        (MessageNotClaimedBy(), 403, 403),
    ],
)
def test_message_delete_overrides_by_reason(
    error: ServiceError, default_status: int, on_message_delete: int
) -> None:
    # Given the same failure on another route and on message delete
    elsewhere = api_error_from_rpc(service_error(error), "GET /v2/queues/{queue_name}")
    on_delete = api_error_from_rpc(service_error(error), MESSAGE_DELETE)
    # Then only message delete applies Zaqar's quirk
    assert elsewhere.status == default_status
    assert on_delete.status == on_message_delete
    assert error.reason in ROUTE_OVERRIDES[MESSAGE_DELETE]


async def test_a_down_service_is_503_quickly(dead_client: httpx.AsyncClient) -> None:
    # Given nothing listens on the upstream ports
    for method, path in [
        ("GET", "/v2/queues"),
        ("PUT", "/v2/queues/q"),
        ("GET", "/v2/queues/q/messages"),
        ("POST", "/v2/queues/q/claims"),
    ]:
        started = time.monotonic()
        resp = await dead_client.request(method, path)
        # Then each call fails fast with a Zaqar 503, never a 500 or a hang
        assert time.monotonic() - started < FAIL_FAST
        assert resp.status_code == 503
        assert resp.json()["title"] == "Service temporarily unavailable"
        assert "try again" in resp.json()["description"]


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_slow_service_is_503_after_the_deadline(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory, silent_port: int
) -> None:
    # Given upstreams that accept connections but never answer, and a 0.3 s deadline
    settings = make_settings(queue_port=silent_port, message_port=silent_port, rpc_timeout=0.3)
    client = await gateway_factory(settings)
    # When a call is made
    started = time.monotonic()
    resp = await client.get("/v2/queues/q/messages")
    # Then the deadline turns into a 503 soon after
    assert time.monotonic() - started < FAIL_FAST
    assert resp.status_code == 503
    assert resp.json()["title"] == "Service temporarily unavailable"


async def test_unexpected_gateway_failures_are_503_and_logged(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a route that fails in an unforeseen way
    class Broken:
        async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
            raise RuntimeError("boom")

    app = create_app(make_settings())
    app.add_route("/v2/broken", Broken())
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            with caplog.at_level(logging.ERROR, logger="services.api_gateway.errors"):
                resp = await client.get("/v2/broken", headers=HEADERS)
    # Then the client gets a Zaqar 503 and the failure is logged with its traceback
    assert resp.status_code == 503
    assert resp.json()["title"] == "Service temporarily unavailable"
    assert "x-openstack-request-id" in resp.headers
    assert any("boom" in (r.exc_text or "") for r in caplog.records)
