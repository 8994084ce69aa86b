"""Request ids at the gateway (kept or made, passed on to the services, over HTTP and
WebSocket) and its access log (``middleware.py``, ``services/common/logs.py``)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from services.api_gateway.coalesce import CoalescingMessages
from services.api_gateway.upstream import Upstreams
from services.api_gateway.websocket import server as ws_server
from services.common.config import Settings
from services.common.logs import ACCESS_LOGGER, RequestIdFilter
from tests.gateway.conftest import HEADERS, GatewayFactory, new_queue, running_services
from tests.gateway.test_coalesce import gateway as coalescing_gateway

# A fixed UUID for parameters: every test run collects the same test ids.
FIXED = "5d0c3e1a-8b7f-4a2e-9d6c-1b2a3c4d5e6f"


def new_id() -> str:
    return "req-" + str(uuid.uuid4())


@pytest.fixture
def calls(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[tuple[str, str]]]]:
    """(request id, message) of every gRPC call the in-process services answered."""
    handler_filter = RequestIdFilter()
    caplog.handler.addFilter(handler_filter)
    caplog.set_level(logging.DEBUG, logger="services.common.errors")

    def seen() -> list[tuple[str, str]]:
        return [(r.request_id, r.getMessage()) for r in caplog.records  # type: ignore[attr-defined]
                if r.name == "services.common.errors"]

    yield seen
    caplog.handler.removeFilter(handler_filter)


async def test_the_request_id_goes_to_every_service_call(
    make_settings: Callable[..., Settings],
    gateway_factory: GatewayFactory,
    calls: Callable[[], list[tuple[str, str]]],
) -> None:
    async with running_services(make_settings()) as settings:
        http = await gateway_factory(settings)
        given, queue = new_id(), new_queue()
        # When a queue is made and a message posted with a caller's id, and one without
        sent = {"X-OpenStack-Request-ID": given}
        assert (await http.put(f"/v2/queues/{queue}", headers=sent)).status_code == 201
        posted = await http.post(f"/v2/queues/{queue}/messages", headers=sent,
                                 json={"messages": [{"body": 1}]})
        other = await http.get(f"/v2/queues/{queue}/stats")
    # Then each answer carries its id, and every call made for a request carries its id
    assert posted.headers["x-openstack-request-id"] == given
    made = other.headers["x-openstack-request-id"]
    assert made != given
    seen = calls()
    ours = [message for rid, message in seen if rid == given]
    assert any("/zaqar.v2.Queues/CreateQueue OK" in m for m in ours), seen
    assert any("/zaqar.v2.Messages/PostMessages OK" in m for m in ours), seen
    assert any("Stats OK" in message for rid, message in seen if rid == made), seen


@pytest.mark.parametrize("given", ["req-123", "REQ-" + FIXED, "req-" + FIXED + "0"])
async def test_a_malformed_request_id_is_replaced(
    down_client: httpx.AsyncClient, given: str
) -> None:
    answer = await down_client.get("/healthz", headers={"X-OpenStack-Request-ID": given})
    made = answer.headers["x-openstack-request-id"]
    assert made != given and made.startswith("req-") and len(made) == 40


async def test_a_refused_request_keeps_the_callers_id(down_client: httpx.AsyncClient) -> None:
    given = new_id()
    answer = await down_client.get(
        "/v2/queues", headers={"X-OpenStack-Request-ID": given, "Client-ID": "not-a-uuid"}
    )
    assert answer.status_code == 400
    assert answer.headers["x-openstack-request-id"] == given


@pytest.mark.parametrize("access_log", [True, False])
async def test_the_access_log(
    make_settings: Callable[..., Settings],
    gateway_factory: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
    access_log: bool,
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    http = await gateway_factory(make_settings(access_log=access_log))
    given = new_id()
    # When requests are answered, one with a query whose values could be secrets
    await http.get("/v2/queues?limit=5&marker=s3cret&detailed",
                   headers={"X-OpenStack-Request-ID": given})
    await http.get("/healthz")
    lines = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    if not access_log:
        assert lines == []
        return
    # Then there is one line per request, with the query's keys only
    assert len(lines) == 2
    first, second = lines
    fields = first.fields  # type: ignore[attr-defined]
    assert first.request_id == given  # type: ignore[attr-defined]
    assert fields["method"] == "GET"
    assert fields["path"] == "/v2/queues?limit&marker&detailed"
    assert fields["project"] == HEADERS["X-Project-ID"]
    assert fields["status"] in (200, 503)  # nothing behind this gateway
    assert fields["duration_ms"] >= 0
    assert "s3cret" not in first.getMessage()
    assert first.getMessage().startswith("GET /v2/queues?limit&marker&detailed ")
    assert second.getMessage().startswith("GET /healthz 200 ")
    assert second.getMessage().endswith("project=-")
    assert second.fields["project"] is None  # type: ignore[attr-defined]


async def test_a_websocket_request_has_an_id_that_goes_to_the_services(
    make_settings: Callable[..., Settings], calls: Callable[[], list[tuple[str, str]]],
) -> None:
    given = new_id()
    async with running_services(make_settings()) as settings:
        up = Upstreams(settings)
        server = await ws_server.start(settings, up)
        try:
            url = f"ws://{settings.host}:{ws_server.bound_port(server)}"
            async with connect(url) as socket:
                for request_id in (given, "bad", None):
                    sent = {"Client-ID": HEADERS["Client-ID"], "X-Project-ID": "ws-ids"}
                    if request_id is not None:
                        sent["x-openstack-request-id"] = request_id
                    await socket.send(orjson.dumps({
                        "action": "queue_create", "headers": sent,
                        "body": {"queue_name": new_queue()},
                    }).decode())
                    answer = orjson.loads(await socket.recv())
                    assert answer["headers"] == {"status": 201}
        finally:
            server.close()
            await server.wait_closed()
            await up.close()
    created = [rid for rid, message in calls() if "/zaqar.v2.Queues/CreateQueue" in message]
    assert len(created) == 3
    assert created[0] == given
    assert created[1] != "bad" and created[1].startswith("req-")
    assert created[2].startswith("req-") and len({*created}) == 3


async def test_coalesced_calls_keep_each_requests_id(
    make_settings: Callable[..., Settings], calls: Callable[[], list[tuple[str, str]]],
) -> None:
    # Given a gateway that coalesces its calls to message_svc
    async with running_services(make_settings()) as settings:
        async with coalescing_gateway(settings) as (http, up):
            ids: list[str] = []
            for _ in range(10):  # rounds of concurrent posts until some went in a Batch
                round_ids = [new_id() for _ in range(16)]
                answers = await asyncio.gather(*(
                    http.post(f"/v2/queues/{new_queue()}/messages",
                              headers={"X-OpenStack-Request-ID": rid},
                              json={"messages": [{"body": 1}]})
                    for rid in round_ids
                ))
                assert [a.status_code for a in answers] == [201] * 16
                ids += round_ids
                messages = up.messages
                assert isinstance(messages, CoalescingMessages)
                if messages.stats.batches:
                    break
            assert messages.stats.batches
    # Then message_svc asked queue_svc about each new queue under the id of the request
    # that posted to it, batched or not
    seen = calls()
    asked = {rid for rid, message in seen if message.startswith("/zaqar.v2.Queues/")}
    assert set(ids) <= asked, set(ids) - asked
    # And each post (batched on the Exchange stream, or alone) was logged under its own id
    posted = {rid for rid, message in seen
              if message.startswith("/zaqar.v2.Messages/PostMessages OK")}
    assert set(ids) <= posted, set(ids) - posted
