"""Prometheus metrics of a real ``zaqar-grpc up`` stack: the gateway's ``/metrics`` and each
gRPC service's metrics port, read back after real traffic (``services/common/metrics.py``).

Counters are compared before and after the traffic of each test, so the other tests that
share the session's stack do not matter (tests run one at a time).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Stack
from tests.receivers import Receiver
from tests.stacks import up_stack

pytestmark = pytest.mark.e2e

MESSAGES_ROUTE = "/v2/queues/{queue_name}/messages"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Stack:
    return up_stack(request, "sqlite")


def headers(project: str) -> dict[str, str]:
    return {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}


def scrape(url: str, accept: str | None = None) -> tuple[str, Samples]:
    """The content type and every sample of one exposition."""
    answer = httpx.get(url, headers={"Accept": accept} if accept else {}, timeout=10)
    assert answer.status_code == 200, answer.text
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return answer.headers["content-type"], samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def service_metrics(stack: Stack, service: str) -> str:
    port = getattr(stack.settings, f"{service}_metrics_port")
    return f"http://{stack.settings.host}:{port}/metrics"


def test_gateway_counts_and_times_requests_by_route_method_and_status(stack: Stack) -> None:
    gateway = f"{stack.url}/metrics"
    _, before = scrape(gateway)
    project, queue = f"metrics-{uuid.uuid4().hex[:8]}", "q1"
    with httpx.Client(base_url=stack.url, headers=headers(project), timeout=10) as http:
        for i in range(3):
            posted = http.post(f"/v2/queues/{queue}/messages",
                               json={"messages": [{"body": i, "ttl": 300}]})
            assert posted.status_code == 201, posted.text
        bad = http.post(f"/v2/queues/{queue}/messages", json={"messages": []})
        assert bad.status_code == 400
        assert http.get("/no/such/route").status_code == 404
    # The exposition itself needs no Zaqar header, and answers the scraper's format
    content_type, after = scrape(gateway, accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    _, after = scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("zaqar_http_requests_total", route=MESSAGES_ROUTE, method="POST",
                 status="201") == 3
    assert delta("zaqar_http_requests_total", route=MESSAGES_ROUTE, method="POST",
                 status="400") == 1
    assert delta("zaqar_http_requests_total", route="none", method="GET", status="404") == 1
    assert delta("zaqar_http_request_duration_seconds_count", route=MESSAGES_ROUTE,
                 method="POST") == 4
    # No label holds a project or a queue name
    assert not [key for key in after if any(project in v or "/q1" in v for _, v in key[1])]
    # The gateway's calls to message_svc, client side, and the process itself
    assert total(after, "grpc_client_handled_total", grpc_code="OK") > total(
        before, "grpc_client_handled_total", grpc_code="OK")
    assert value(after, "process_resident_memory_bytes") > 0


def test_each_service_serves_its_own_metrics(stack: Stack) -> None:
    scraped = {name: scrape(service_metrics(stack, name))[1]
               for name in ("queue", "message", "notifier")}
    project = f"metrics-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack.url, headers=headers(project), timeout=10) as http:
        assert http.put("/v2/queues/q2", json={}).status_code == 201
        posted = http.post("/v2/queues/q2/messages", json={"messages": [{"body": 1}]})
        assert posted.status_code == 201
        claimed = http.post("/v2/queues/q2/claims", json={"ttl": 60, "grace": 60})
        assert claimed.status_code == 201
        assert http.get("/v2/queues/nope/claims/0123456789abcdef01234567").status_code == 404
    after = {name: scrape(service_metrics(stack, name))[1]
             for name in ("queue", "message", "notifier")}

    def grew(service: str, name: str, **labels: str) -> float:
        return total(after[service], name, **labels) - total(scraped[service], name, **labels)

    # queue_svc: the queue's creation, server side and in its store
    assert grew("queue", "grpc_server_handled_total", grpc_service="zaqar.v2.Queues",
                grpc_code="OK") >= 1
    assert grew("queue", "zaqar_store_operations_total", store="queue", backend="sqlite",
                outcome="ok") >= 1
    # message_svc: the post and the claim reached its store; the unknown claim is a NOT_FOUND
    assert grew("message", "zaqar_store_operations_total", store="message", operation="post",
                outcome="ok") >= 1
    assert grew("message", "zaqar_store_operations_total", store="message", operation="claim",
                outcome="ok") >= 1
    assert grew("message", "grpc_server_handled_total", grpc_code="NOT_FOUND") >= 1
    assert grew("message", "zaqar_store_operation_seconds_count", store="message",
                operation="claim") >= 1
    for name in ("queue", "message", "notifier"):
        assert total(after[name], "zaqar_store_reachable") == 1, name
        assert value(after[name], "process_resident_memory_bytes") > 0, name


async def test_deliveries_and_websocket_connections_are_counted(
    stack: Stack, receiver_factory: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receiver_factory()
    notifier = service_metrics(stack, "notifier")
    gateway = f"{stack.url}/metrics"
    _, before = await asyncio.to_thread(scrape, notifier)
    project = f"metrics-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=stack.url, headers=headers(project),
                                 timeout=10) as http:
        subscribed = await http.post("/v2/queues/q3/subscriptions",
                                     json={"subscriber": receiver.url(), "ttl": 3600})
        assert subscribed.status_code == 201, subscribed.text
        posted = await http.post("/v2/queues/q3/messages", json={"messages": [{"body": 1}]})
        assert posted.status_code == 201
    # The delivery is counted once the receiver has it (the store is updated right after)
    deadline = time.monotonic() + 30
    while True:
        _, after = await asyncio.to_thread(scrape, notifier)
        delivered = (value(after, "zaqar_notifier_deliveries_total", kind="Notification",
                           outcome="delivered")
                     - value(before, "zaqar_notifier_deliveries_total", kind="Notification",
                             outcome="delivered"))
        if delivered >= 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert delivered >= 1
    assert receiver.hits

    # A WebSocket connection is in the gauge while it is open
    _, idle = await asyncio.to_thread(scrape, gateway)
    ws_url = f"ws://{stack.settings.host}:{stack.settings.ws_port}"
    async with websockets.connect(ws_url) as socket:
        await socket.send('{"action": "queue_list", "headers": {}}')
        await socket.recv()  # answered: the connection is being served
        _, open_ = await asyncio.to_thread(scrape, gateway)
        assert (value(open_, "zaqar_websocket_connections")
                == value(idle, "zaqar_websocket_connections") + 1)
        assert (value(open_, "zaqar_websocket_requests_total", action="queue_list", status="400")
                == value(idle, "zaqar_websocket_requests_total", action="queue_list",
                         status="400") + 1)
