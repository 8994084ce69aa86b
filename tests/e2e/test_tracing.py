"""OpenTelemetry tracing of a real ``zaqar-grpc up`` stack (``services/common/tracing.py``): a
W3C ``traceparent`` sent with an HTTP request continues through every gRPC hop into the
webhook delivery, as spans exported over OTLP/gRPC to a collector run here (a real gRPC
server speaking OpenTelemetry's collector protocol), and nothing is propagated when off."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from services.common.config import Settings
from tests.e2e.harness import Stack, start_stack
from tests.receivers import Receiver
from tests.servers import free_port, service_ports
from tests.stacks import up_stack

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int


@dataclass
class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    port: int
    spans: list[ExportedSpan] = field(default_factory=list)

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(ExportedSpan(
                        service, span.name, span.trace_id.hex(), span.span_id.hex(),
                        span.parent_span_id.hex(), span.kind))
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[ExportedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    server = grpc.aio.server()
    found = Collector(free_port())
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, server)
    server.add_insecure_port(f"127.0.0.1:{found.port}")
    await server.start()
    yield found
    await server.stop(0)


@pytest.fixture
def traced_stack(collector: Collector, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    for key, value in {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export soon after each span ends
    }.items():
        monkeypatch.setenv(key, value)
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(tmp_path / "data"), **service_ports(), "log_level": "WARNING",
    })
    stack = start_stack(settings)
    for key in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(key)
    yield stack
    assert stack.stop() == 0, "".join(stack.output)


def headers(project: str, traceparent: str | None = None) -> dict[str, str]:
    sent = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}
    if traceparent is not None:
        sent["traceparent"] = traceparent
    return sent


async def post_to_subscribed_queue(stack: Stack, receiver: Receiver,
                                   traceparent: str) -> None:
    project = f"trace-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        subscribed = await http.post("/v2/queues/traced/subscriptions", headers=headers(project),
                                     json={"subscriber": receiver.url(), "ttl": 3600})
        assert subscribed.status_code == 201, subscribed.text
        posted = await http.post("/v2/queues/traced/messages",
                                 headers=headers(project, traceparent),
                                 json={"messages": [{"body": {"traced": True}}]})
        assert posted.status_code == 201, posted.text
    async with asyncio.timeout(30):
        await receiver.arrived.wait()


async def test_a_traceparent_continues_through_every_hop_into_the_webhook(
    traced_stack: Stack, collector: Collector,
    receiver_factory: Callable[..., Awaitable[Receiver]],
) -> None:
    receiver = await receiver_factory()
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    await post_to_subscribed_queue(traced_stack, receiver, f"00-{trace_id}-{caller_span}-01")

    # The subscriber gets the trace: a traceparent of the same trace, under a span of ours
    (hit,) = receiver.hits
    sent = {k.lower(): v for k, v in hit.headers.items()}["traceparent"].split("-")
    assert sent[1] == trace_id and sent[2] != caller_span

    # And every process exported its spans of that trace, once each ends
    wanted = {
        ("api_gateway", "POST /v2/queues/{queue_name}/messages"),
        ("message_svc", "zaqar.v2.NotifierInternal/NotifyMany"),
        ("notifier_svc", "zaqar.v2.NotifierInternal/NotifyMany"),
        ("notifier_svc", "POST Notification"),
    }
    deadline = time.monotonic() + 30
    while True:
        spans = collector.of_trace(trace_id)
        seen = {(span.service, span.name) for span in spans}
        if wanted <= seen or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert wanted <= seen, seen
    by_id = {span.span_id: span for span in spans}
    # The gateway's span is the child of the caller's, and message_svc's server span of the
    # post is the child of a gateway client span
    (gateway,) = [s for s in spans if s.service == "api_gateway" and s.parent_id == caller_span]
    served = [s for s in spans if s.service == "message_svc" and s.kind == 2
              and s.parent_id in by_id and by_id[s.parent_id].service == "api_gateway"]
    assert served, spans
    # The delivery's span hangs under notifier_svc's NotifyMany server span
    (delivery,) = [s for s in spans if s.name == "POST Notification"]
    assert by_id[delivery.parent_id].name == "zaqar.v2.NotifierInternal/NotifyMany"
    assert sent[2] == delivery.span_id
    assert gateway.kind == 2  # SERVER


async def test_without_an_exporter_nothing_is_propagated(
    request: pytest.FixtureRequest, receiver_factory: Callable[..., Awaitable[Receiver]],
) -> None:
    assert "OTEL_TRACES_EXPORTER" not in os.environ
    stack = up_stack(request, "sqlite")
    receiver = await receiver_factory()
    trace_id = secrets.token_hex(16)
    await post_to_subscribed_queue(stack, receiver, f"00-{trace_id}-{secrets.token_hex(8)}-01")
    (hit,) = receiver.hits
    assert "traceparent" not in {k.lower() for k in hit.headers}
