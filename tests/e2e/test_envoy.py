"""A REST caller through Envoy's gRPC-JSON transcoder gets what a gRPC caller gets: the real
envoy binary, configured by deploy/envoy/, in front of a ``zaqar-grpc up`` stack."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from promql_parser import MatchOp
from zaqar_grpc.v2 import messages_pb2, messages_pb2_grpc, queues_pb2, queues_pb2_grpc

from services.common.config import Settings
from services.common.errors import ERROR_DOMAIN, RpcErrorInfo, decode_rpc_error
from services.edge_drain import IN_FLIGHT_STAT
from tests.certs import Pki
from tests.e2e.harness import Stack, start_stack
from tests.receivers import Receiver
from tests.servers import free_port, free_ports
from tests.stacks import up_stack
from tests.unit.test_deploy import envoy_binary, render_envoy_config
from tests.unit.test_k8s import Doc, container, of_kind, rendered
from tests.unit.test_k8s_grpc_edge import MOUNTED, OVERLAY, drain_arguments, edge_config
from tests.unit.test_monitoring import (
    EDGE_GROUP,
    EDGE_PANELS,
    panel_queries,
    parse,
    rules,
    vector_selectors,
)

pytestmark = pytest.mark.e2e

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


@dataclass
class Envoy:
    proc: asyncio.subprocess.Process
    url: str
    admin_url: str
    grpc_target: str
    log: Path
    metrics_url: str = ""


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Stack:
    """The session's ``zaqar-grpc up`` stack on SQLite."""
    return up_stack(request, "sqlite")


@contextlib.asynccontextmanager
async def running_envoy(stack: Stack, workdir: Path, *options: str) -> AsyncIterator[Envoy]:
    """Envoy in front of ``stack``, configured by deploy/envoy/render.py with ``options`` and
    started from ``workdir`` (not the repository)."""
    binary = envoy_binary()
    listen, admin, metrics = free_ports(3)
    host = stack.settings.host
    config = render_envoy_config(
        workdir / "envoy.yaml", "--listen", f"127.0.0.1:{listen}", "--admin-port", str(admin),
        "--metrics-listen", f"127.0.0.1:{metrics}",
        "--queue", f"{host}:{stack.settings.queue_port}",
        "--message", f"{host}:{stack.settings.message_port}",
        "--notifier", f"{host}:{stack.settings.notifier_port}", *options,
    )
    log = workdir / "envoy.log"
    with log.open("wb") as out:
        # A base id Envoy picks unused, so its shared memory never clashes with another envoy.
        proc = await asyncio.create_subprocess_exec(
            binary, "-c", str(config), "--use-dynamic-base-id", "--concurrency", "1",
            "--log-level", "info", cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
        )
    running = Envoy(proc, f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{admin}",
                    f"127.0.0.1:{listen}", log, f"http://127.0.0.1:{metrics}")
    try:
        await wait_ready(running)
        yield running
    finally:
        await stopped(proc)


async def stopped(proc: asyncio.subprocess.Process) -> None:
    """``proc`` sent SIGTERM (unless it ended), waited for, killed after 30 s."""
    if proc.returncode is None:
        proc.terminate()
        try:
            async with asyncio.timeout(30):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture(scope="module")
async def envoy(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Envoy]:
    """Envoy as deploy/envoy/ configures it, in front of ``stack``."""
    async with running_envoy(stack, tmp_path_factory.mktemp("envoy")) as running:
        yield running


async def wait_ready(envoy: Envoy, deadline: float = 30) -> None:
    """Until the admin /ready says LIVE: listeners up, clusters initialised (their first health
    checks done)."""
    try:
        async with asyncio.timeout(deadline), httpx.AsyncClient(timeout=2) as admin:
            while True:
                if envoy.proc.returncode is not None:
                    pytest.fail(f"envoy exited ({envoy.proc.returncode}):\n{envoy.log.read_text()}")
                try:
                    ready = await admin.get(f"{envoy.admin_url}/ready")
                    if ready.status_code == 200 and ready.text.strip() == "LIVE":
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"envoy not ready within {deadline} s:\n{envoy.log.read_text()}")


def b64(value: object) -> str:
    return base64.b64encode(orjson.dumps(value)).decode()


def unb64(value: str) -> Any:
    return orjson.loads(base64.b64decode(value))


async def test_rest_creates_a_queue_posts_and_claims(envoy: Envoy, project: str) -> None:
    base = f"/v2/projects/{project}/queues/orders"
    async with httpx.AsyncClient(base_url=envoy.url, timeout=10) as http:
        # Given a queue created over REST through Envoy
        created = await http.put(base, json={"metadata": b64({"purpose": "envoy"})})
        assert created.status_code == 200, created.text
        assert created.json() == {"created": True}
        # When a message is posted, with a query parameter no method knows (ignored)
        posted = await http.post(f"{base}/messages", params={"trace": "1"}, json={
            "client_id": str(uuid.uuid4()),
            "messages": [{"body": b64({"n": 1}), "ttl": 120}],
        })
        assert posted.status_code == 200, posted.text
        (message_id,) = posted.json()["ids"]
        # And claimed
        claimed = await http.post(f"{base}/claims", params={"trace": "1"},
                                  json={"ttl": 60, "grace": 60, "limit": 5})
        assert claimed.status_code == 200, claimed.text
        claim = claimed.json()
        # Then the claim holds the message, body intact (bytes fields are base64 in JSON)
        assert claim["id"] and claim["ttl"] == 60
        assert [m["id"] for m in claim["messages"]] == [message_id]
        assert [unb64(m["body"]) for m in claim["messages"]] == [{"n": 1}]
        assert [m["claim_id"] for m in claim["messages"]] == [claim["id"]]
        assert all(isinstance(m["created"], str) for m in claim["messages"])  # int64 as string
        # And a second claim finds nothing: 200 with an empty claim (the gateway's 204)
        empty = await http.post(f"{base}/claims", json={})
        assert empty.status_code == 200, empty.text
        assert empty.json()["id"] == "" and empty.json()["messages"] == []
        # And the queue reads back with its metadata
        queue = (await http.get(base)).json()
        assert queue["exists"] is True and unb64(queue["metadata"])["purpose"] == "envoy"
    # And a gRPC caller sees the same claim
    async with grpc.aio.insecure_channel(envoy.grpc_target) as channel:
        got = await messages_pb2_grpc.MessagesStub(channel).GetClaim(
            messages_pb2.GetClaimRequest(project=project, queue="orders", claim_id=claim["id"]))
    assert [m.id for m in got.messages] == [message_id]


async def test_rest_topic_subscriptions_and_posts(
    envoy: Envoy, project: str, receiver: Receiver
) -> None:
    base = f"/v2/projects/{project}/topics/alerts"
    async with httpx.AsyncClient(base_url=envoy.url, timeout=10) as http:
        # Given a topic and a webhook subscription made over REST through Envoy (the
        # subscription's topic binding of zaqar.v2.Subscriptions)
        created = await http.put(base, json={"metadata": b64({"team": "ops"})})
        assert (created.status_code, created.json()) == (200, {"created": True})
        subscribed = await http.post(f"{base}/subscriptions",
                                     json={"subscriber": receiver.url()})
        assert subscribed.status_code == 200, subscribed.text
        listed = await http.get(f"{base}/subscriptions")
        assert [s["source"] for s in listed.json()["subscriptions"]] == ["alerts"]
        # When a message is posted to the topic
        posted = await http.post(f"{base}/messages", json={
            "client_id": str(uuid.uuid4()), "messages": [{"body": b64({"level": "high"})}]})
        assert posted.status_code == 200, posted.text
        (message_id,) = posted.json()["ids"]
        # Then the webhook gets it, and the topic reads back with its metadata
        (hit,) = await receiver.wait_for(1, within=30)
        assert hit.json()["message_id"] == message_id
        assert hit.json()["body"] == {"level": "high"}
        topic = (await http.get(base)).json()
        assert unb64(topic["metadata"])["team"] == "ops"


MESSAGE_ID = uuid.uuid4().hex


async def call_grpc(target: str, case: str, project: str) -> RpcErrorInfo:
    """What a gRPC caller gets for ``case``."""
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if case == "bad-queue-name":
                await queues_pb2_grpc.QueuesStub(channel).CreateQueue(
                    queues_pb2.CreateQueueRequest(project=project, queue="bad!name"))
            else:
                await messages_pb2_grpc.MessagesStub(channel).GetMessage(
                    messages_pb2.GetMessageRequest(
                        project=project, queue="absent", message_id=MESSAGE_ID))
    return decode_rpc_error(caught.value)


@pytest.mark.parametrize(
    ("case", "method", "path", "body", "http_status", "reason"),
    [
        ("bad-queue-name", "PUT", "/queues/bad!name", {}, 400, "INVALID_QUEUE_NAME"),
        ("missing-message", "GET", f"/queues/absent/messages/{MESSAGE_ID}", None, 404,
         "MESSAGE_NOT_FOUND"),
    ],
    ids=["bad-queue-name", "missing-message"],
)
async def test_rest_error_body_is_the_grpc_status(
    envoy: Envoy, stack: Stack, project: str, case: str, method: str, path: str,
    body: object, http_status: int, reason: str,
) -> None:
    # Given what a gRPC caller gets, straight from the service and through Envoy alike
    service = "queue" if case == "bad-queue-name" else "message"
    expected = await call_grpc(stack.settings.target(service), case, project)
    assert expected.reason == reason
    assert await call_grpc(envoy.grpc_target, case, project) == expected
    # When a REST caller makes the same request through Envoy
    async with httpx.AsyncClient(base_url=envoy.url, timeout=10) as http:
        r = await http.request(method, f"/v2/projects/{project}{path}", json=body)
    # Then the HTTP status is the code's, and the JSON body is the google.rpc.Status with the
    # service's ErrorInfo
    assert r.status_code == http_status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {
        "code": expected.code.value[0],
        "message": expected.description,
        "details": [{"@type": ERROR_INFO, "reason": reason, "domain": ERROR_DOMAIN,
                     "metadata": {"title": expected.title}}],
    }


async def test_envoy_health_checks_every_service(envoy: Envoy) -> None:
    # Once ready, every cluster has passed a gRPC health check of its service
    async with httpx.AsyncClient(base_url=envoy.admin_url, timeout=5) as admin:
        stats = (await admin.get("/stats", params={"filter": r"health_check\.success$"})).text
        clusters = (await admin.get("/clusters")).text
    successes = dict(re.findall(r"cluster\.(\w+)\.health_check\.success: (\d+)", stats))
    assert sorted(successes) == ["message_svc", "notifier_svc", "queue_svc"]
    assert all(int(count) >= 1 for count in successes.values()), stats
    flags = re.findall(r"^(\w+)::[^:]+:\d+::health_flags::(\S+)$", clusters, re.MULTILINE)
    # (envoy_admin, the metrics listener's way to the admin API, has no health check)
    assert sorted(f for f in flags if f[0] != "envoy_admin") == [
        ("message_svc", "healthy"), ("notifier_svc", "healthy"), ("queue_svc", "healthy")]


async def test_rest_redrive_through_envoy(envoy: Envoy, project: str) -> None:
    base = f"/v2/projects/{project}/queues"
    async with httpx.AsyncClient(base_url=envoy.url, timeout=10) as http:
        # Given a dead-letter queue with two messages and a destination, made through Envoy
        for name in ("dlq", "back"):
            assert (await http.put(f"{base}/{name}", json={})).status_code == 200
        posted = await http.post(f"{base}/dlq/messages", json={
            "client_id": str(uuid.uuid4()),
            "messages": [{"body": b64(n), "ttl": 120} for n in (1, 2)],
        })
        assert posted.status_code == 200, posted.text
        # When a redrive is started through the transcoder (Messages.StartRedrive)
        started = await http.post(f"{base}/dlq/redrive", json={"destination": "back"})
        assert started.status_code == 200, started.text
        assert started.json()["destination"] == "back"
        # Then GET reports it until it is done, with both messages moved
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            job = (await http.get(f"{base}/dlq/redrive")).json()
            if job["status"] != "running" or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert (job["status"], job["moved"]) == ("done", "2")  # int64 as a JSON string
        # And DELETE answers the finished job as it is; a queue without a job is 404
        cancelled = await http.delete(f"{base}/dlq/redrive")
        assert (cancelled.status_code, cancelled.json()["status"]) == (200, "done")
        assert (await http.get(f"{base}/back/redrive")).status_code == 404


async def test_the_edge_answers_a_request_whose_headers_do_not_come_in_time_408(
    envoy: Envoy,
) -> None:
    """``request_headers_timeout``: a client that sends half of its headers is answered and
    its connection closed after 10 s, rather than held."""
    host, _, port = envoy.grpc_target.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        writer.write(b"POST /v2/queues/edge HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        async with asyncio.timeout(60):
            answer = await reader.read()  # until Envoy closes
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert loop.time() - began >= 9.9
    finally:
        writer.close()


# Longer than the 10 s route timeout this config had, which cut long polls and streaming pulls.
PAST_ROUTE_TIMEOUT = 11.0


async def test_long_polls_and_streaming_pulls_outlive_a_route_timeout(
    envoy: Envoy, project: str,
) -> None:
    """A claim that waits 20 s (the API's longest) and a streaming pull, the one public
    streaming call, go through Envoy for as long as they last: no route timeout cuts them (a
    10 s one did)."""
    async with grpc.aio.insecure_channel(envoy.grpc_target) as channel:
        stub = messages_pb2_grpc.MessagesStub(channel)
        for queue in ("waited", "pulled"):
            await queues_pb2_grpc.QueuesStub(channel).CreateQueue(
                queues_pb2.CreateQueueRequest(project=project, queue=queue))
        # Given a claim waiting on an empty queue, and a streaming pull of another
        waiting = asyncio.ensure_future(stub.CreateClaim(messages_pb2.CreateClaimRequest(
            project=project, queue="waited", ttl=60, grace=60, wait_seconds=20)))
        pull = stub.StreamingPull(messages_pb2.StreamingPullRequest(project=project,
                                                                    queue="pulled"))
        # When messages come only once a route timeout would have passed
        await asyncio.sleep(PAST_ROUTE_TIMEOUT)
        assert not waiting.done()
        for queue in ("waited", "pulled"):
            await stub.PostMessages(messages_pb2.PostMessagesRequest(
                project=project, queue=queue, client_id=str(uuid.uuid4()),
                messages=[messages_pb2.NewMessage(body=b'{"late": true}')]))
        # Then the waiting claim and the stream each get theirs
        async with asyncio.timeout(30):
            claim = await waiting
            pulled = await pull.read()
        assert [m.body for m in claim.messages] == [b'{"late": true}']
        assert [m.body for m in pulled.messages] == [b'{"late": true}']
        pull.cancel()


# More than Envoy's default circuit breaker let through to a cluster at once (1,024).
MANY_WAITING = 1100


async def test_more_long_polls_than_envoys_default_breaker_reach_message_svc(
    envoy: Envoy, project: str,
) -> None:
    """1,100 claims waiting at once through one Envoy all reach message_svc and are answered
    at their deadline; with Envoy's default circuit breaker 76 of them were refused at once,
    UNAVAILABLE "overflow"."""
    # Envoy takes 100 streams per client connection: connections of their own (not gRPC's
    # shared subchannels), enough to hold every claim at once
    channels = [grpc.aio.insecure_channel(envoy.grpc_target,
                                          options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(MANY_WAITING // 50)]
    try:
        await queues_pb2_grpc.QueuesStub(channels[0]).CreateQueue(
            queues_pb2.CreateQueueRequest(project=project, queue="many-waiting"))
        request = messages_pb2.CreateClaimRequest(project=project, queue="many-waiting",
                                                  ttl=60, grace=60, wait_seconds=5)
        async with asyncio.timeout(30):
            await asyncio.gather(*(channel.channel_ready() for channel in channels))

        async def claim(channel: grpc.aio.Channel) -> str:
            for attempt in (1, 2):
                try:
                    answer = await messages_pb2_grpc.MessagesStub(channel).CreateClaim(
                        request, timeout=60)
                except grpc.aio.AioRpcError as exc:
                    # A burst of calls on many channels gets about 1 % CANCELLED from grpc.aio's
                    # own side, against a bare grpc.aio server too (no Envoy): made once more.
                    # Envoy's breaker refuses UNAVAILABLE "overflow", which fails the test.
                    if exc.code() == grpc.StatusCode.CANCELLED and attempt == 1:
                        continue
                    return f"{exc.code().name}: {exc.details()}"
                return "answered" if not answer.messages else "a message?"
            raise AssertionError("unreachable")

        async with asyncio.timeout(120):
            outcomes = await asyncio.gather(*(claim(channels[i % len(channels)])
                                              for i in range(MANY_WAITING)))
        refused = sorted({o for o in outcomes if o != "answered"})
        assert outcomes.count("answered") == MANY_WAITING, refused
    finally:
        for channel in channels:
            await channel.close()


# The per-client-address bucket of the limited Envoy: 3 requests, refilled by one every 100 s
# (so that none comes back while the test runs).
BURST = 3
LIMIT_TEXT = "Too many requests from this client address"


async def test_a_client_address_past_its_bucket_is_refused_and_another_is_not(
    stack: Stack, project: str, tmp_path: Path,
) -> None:
    """Envoy's requests per client address: past its bucket an address is refused before any
    service sees the call, RESOURCE_EXHAUSTED to gRPC and 429 to REST (a google.rpc.Status in
    JSON), with the x-ratelimit headers; another address still has its own bucket."""
    async with running_envoy(stack, tmp_path, "--per-client-burst", str(BURST),
                             "--per-client-rate", "0.01") as envoy:
        stats = f"{envoy.url}/v2/projects/{project}/queues/limited/messages:stats"
        first = httpx.AsyncHTTPTransport(local_address="127.0.0.1")
        async with httpx.AsyncClient(transport=first, timeout=10) as client:
            # Given an address that has used its bucket (each call reaches queue/message_svc)
            for left in range(BURST - 1, -1, -1):
                answer = await client.get(stats)
                assert answer.status_code != 429, answer.text
                assert answer.headers["x-ratelimit-remaining"] == str(left)
            # Then its next REST call is refused, with the body a failed call has here
            refused = await client.get(stats)
            assert refused.status_code == 429
            assert refused.headers["x-ratelimit-limit"] == str(BURST)
            assert int(refused.headers["x-ratelimit-reset"]) > 0
            body = refused.json()
            assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert body["message"].startswith(LIMIT_TEXT)
        # And so is its next gRPC call
        async with grpc.aio.insecure_channel(envoy.grpc_target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await queues_pb2_grpc.QueuesStub(channel).CreateQueue(
                    queues_pb2.CreateQueueRequest(project=project, queue="limited"), timeout=10)
            assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (failed.value.details() or "").startswith(LIMIT_TEXT)
        # While another client address is served from a bucket of its own
        other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=other, timeout=10) as client:
            answer = await client.get(stats)
            assert answer.status_code != 429, answer.text
            assert answer.headers["x-ratelimit-remaining"] == str(BURST - 1)
        # And Prometheus reads the two refusals on the metrics listener
        async with httpx.AsyncClient(timeout=10) as client:
            scraped = await client.get(f"{envoy.metrics_url}/stats/prometheus")
            assert scraped.status_code == 200
            assert re.search(r'^envoy_http_local_rate_limit_rate_limited\{envoy_local_http_'
                             r'ratelimit_prefix="per_client_address"\} 2$', scraped.text, re.M)


async def test_the_metrics_listener_passes_on_nothing_but_the_metrics(envoy: Envoy) -> None:
    """The metrics listener reaches the admin API for GET /stats/prometheus only: the admin
    API can also stop Envoy, drop its health checks or dump its configuration."""
    async with httpx.AsyncClient(timeout=10) as client:
        scraped = await client.get(f"{envoy.metrics_url}/stats/prometheus")
        assert scraped.status_code == 200 and "# TYPE envoy_" in scraped.text
        for method, path in (("POST", "/quitquitquit"), ("POST", "/healthcheck/fail"),
                             ("GET", "/config_dump"), ("GET", "/clusters"),
                             ("POST", "/stats/prometheus"), ("GET", "/stats/prometheus/../../")):
            answer = await client.request(method, f"{envoy.metrics_url}{path}")
            assert answer.status_code == 404, (method, path, answer.text)
        # Envoy is still serving
        assert (await client.get(f"{envoy.admin_url}/ready")).text.strip() == "LIVE"


@contextlib.asynccontextmanager
async def edge_pod(stack: Stack, folder: Path) -> AsyncIterator[tuple[Envoy, Doc]]:
    """components/grpc-edge's Envoy, run as a local process: the Envoy the tests run, with the
    container's arguments and the ConfigMap's files, the Services' names and ports pointed at
    the stack (no cluster DNS here); and the Deployment it comes from."""
    docs = rendered(OVERLAY)
    config = edge_config(docs)
    deployment = of_kind(docs, "Deployment")["grpc-edge"]
    listen, admin, metrics = free_ports(3)
    host = stack.settings.host
    text = config["data"]["envoy.yaml"].replace(MOUNTED, str(folder))
    for old, new in (
        ('"0.0.0.0", port_value: 8080', f'"127.0.0.1", port_value: {listen}'),
        ('"0.0.0.0", port_value: 9902', f'"127.0.0.1", port_value: {metrics}'),
        ("port_value: 9901 }\n", f"port_value: {admin} }}\n"),
        ("port_value: 9901 } } }", f"port_value: {admin} }} }} }}"),
        ('"queue-svc", port_value: 50061', f'"{host}", port_value: {stack.settings.queue_port}'),
        ('"message-svc", port_value: 50062',
         f'"{host}", port_value: {stack.settings.message_port}'),
        ('"notifier-svc", port_value: 50063',
         f'"{host}", port_value: {stack.settings.notifier_port}'),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (folder / "envoy.yaml").write_text(text)
    (folder / "zaqar.pb").write_bytes(base64.b64decode(config["binaryData"]["zaqar.pb"]))
    args = [a.replace(MOUNTED, str(folder)) for a in container(deployment, "envoy")["args"]]
    log = folder / "envoy.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            envoy_binary(), *args, "--use-dynamic-base-id",
            cwd=folder, stdout=out, stderr=subprocess.STDOUT,
        )
    edge = Envoy(proc, f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{admin}",
                 f"127.0.0.1:{listen}", log, f"http://127.0.0.1:{metrics}")
    try:
        await wait_ready(edge)
        yield edge, deployment
    finally:
        await stopped(proc)


async def test_the_edge_alerts_and_panels_select_series_this_envoy_exports(
    envoy: Envoy,
) -> None:
    """deploy/monitoring/'s alert rules and dashboard panels on Envoy's series name metrics,
    and label values, that the Envoy the tests run exports on its metrics listener: an Envoy
    release that renames one breaks this test, not an alert nobody sees fire."""
    async with httpx.AsyncClient(timeout=10) as client:
        scraped = await client.get(f"{envoy.metrics_url}/stats/prometheus")
    assert scraped.status_code == 200
    # The names as exposed, which Prometheus keeps (a client's parser adds "_total" to counters)
    samples: dict[str, list[dict[str, str]]] = {}
    for line in scraped.text.splitlines():
        sample = re.match(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? ", line)
        if sample is not None:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', sample.group(2) or ""))
            samples.setdefault(sample.group(1), []).append(labels)
    edge_rules = rules(EDGE_GROUP)
    assert {rule["alert"] for rule in edge_rules} == {
        "ZaqarEdgeNoHealthyService", "ZaqarEdgeRefusingClients", "ZaqarEdgeOverloaded"}
    panels = [(title, expr) for title, expr in panel_queries() if title.startswith(EDGE_PANELS)]
    assert len(panels) == 4
    for what, expr in [(rule["alert"], rule["expr"]) for rule in edge_rules] + panels:
        for selector in vector_selectors(parse(expr)):
            assert selector.name in samples, (what, selector.name)
            for matcher in selector.matchers.matchers:
                if matcher.name == "namespace":  # added by the scrape, not by Envoy
                    continue
                wanted = (matcher.value.split("|") if matcher.op == MatchOp.Re
                          else [matcher.value])
                found = {labels.get(matcher.name) for labels in samples[selector.name]}
                assert set(wanted) <= found, (what, matcher.name, found)


async def test_the_kubernetes_edge_pod_serves_as_rendered(
    stack: Stack, project: str, tmp_path: Path,
) -> None:
    """The edge pod's Envoy (``edge_pod``) serves the gRPC API and answers its TCP probe."""
    async with edge_pod(stack, tmp_path) as (edge, _):
        # The kubelet's TCP probe
        _, writer = await asyncio.open_connection("127.0.0.1", int(edge.url.rsplit(":", 1)[1]))
        writer.close()
        # A gRPC caller creates a queue and posts through it
        async with grpc.aio.insecure_channel(edge.grpc_target) as channel:
            created = await queues_pb2_grpc.QueuesStub(channel).CreateQueue(
                queues_pb2.CreateQueueRequest(project=project, queue="edge-pod"), timeout=10)
            assert created.created
            posted = await messages_pb2_grpc.MessagesStub(channel).PostMessages(
                messages_pb2.PostMessagesRequest(
                    project=project, queue="edge-pod", client_id=str(uuid.uuid4()),
                    messages=[messages_pb2.NewMessage(body=b'{"via": "edge"}')]), timeout=10)
            assert len(posted.ids) == 1
        # Prometheus scrapes the pod's metrics port
        async with httpx.AsyncClient(timeout=10) as client:
            scraped = await client.get(f"{edge.metrics_url}/stats/prometheus")
            assert scraped.status_code == 200 and "envoy_cluster_upstream_rq" in scraped.text


async def _start_drain(deployment: Doc, edge: Envoy, port: int, *extra: str,
                       ) -> asyncio.subprocess.Process:
    """The edge pod's container "drain" as a local process, with its arguments but for the
    admin API's address and its own port (``extra`` appended), serving once it returns."""
    args = list(container(deployment, "drain")["args"])
    args[args.index("--admin") + 1] = edge.admin_url
    args[args.index("--listen") + 1] = f"127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "zaqar-grpc"), *args, *extra)
    async with asyncio.timeout(30):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                assert proc.returncode is None, f"edge-drain exited {proc.returncode}"
                await asyncio.sleep(0.05)
            else:
                writer.close()
                return proc


async def _until_counted(admin: httpx.AsyncClient, edge: Envoy, name: str) -> None:
    """Until Envoy's statistic ``name`` is above 0 (polled: there is no event to wait on)."""
    async with asyncio.timeout(10):
        while True:
            answer = await admin.get(f"{edge.admin_url}/stats",
                                     params={"filter": f"^{re.escape(name)}$"})
            if int(answer.text.split(":")[1]):
                return
            await asyncio.sleep(0.05)


async def test_a_hook_without_sigterm_leaves_the_edge_serving(
    stack: Stack, project: str, tmp_path: Path,
) -> None:
    """Envoy's preStop hook, a GET of /drained that anyone the kubelet's way could send, never
    starts a drain: without the pod's SIGTERM it answers 503 and Envoy keeps serving."""
    async with edge_pod(stack, tmp_path) as (edge, deployment):
        port = free_port()
        drain = await _start_drain(deployment, edge, port, "--signal-wait", "0.5")
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                hook = await client.get(f"http://127.0.0.1:{port}/drained")
                assert hook.status_code == 503, hook.text
                assert "No drain" in hook.text
                assert (await client.get(f"{edge.admin_url}/ready")).text.strip() == "LIVE"
            async with grpc.aio.insecure_channel(edge.grpc_target) as channel:
                await queues_pb2_grpc.QueuesStub(channel).CreateQueue(
                    queues_pb2.CreateQueueRequest(project=project, queue="undrained"),
                    timeout=10)
            assert drain.returncode is None
        finally:
            await stopped(drain)


async def test_a_deleted_edge_pod_answers_the_calls_in_flight_before_envoy_stops(
    stack: Stack, project: str, tmp_path: Path,
) -> None:
    """What the kubelet does when it deletes the edge pod: SIGTERM to the container "drain"
    and, at the same moment, Envoy's preStop hook; Envoy's SIGTERM once the hook is answered.
    A claim waiting through Envoy is answered, not cut (Envoy alone stops at once and cuts it:
    UNAVAILABLE) and its connection closed gracefully, a call made during the drain is
    served, and the hook is answered once no call is in flight, after the shortest drain."""
    async with edge_pod(stack, tmp_path) as (edge, deployment):
        port = free_port()
        min_drain = drain_arguments(deployment).min_drain
        drain = await _start_drain(deployment, edge, port)
        try:
            loop = asyncio.get_running_loop()
            async with grpc.aio.insecure_channel(edge.grpc_target) as channel, \
                    httpx.AsyncClient(timeout=60) as client:
                stub = messages_pb2_grpc.MessagesStub(channel)
                await queues_pb2_grpc.QueuesStub(channel).CreateQueue(
                    queues_pb2.CreateQueueRequest(project=project, queue="drained"), timeout=10)
                # Given a claim waiting through Envoy on an empty queue, longer than the shortest
                # drain
                waiting = asyncio.ensure_future(stub.CreateClaim(messages_pb2.CreateClaimRequest(
                    project=project, queue="drained", ttl=60, grace=60,
                    wait_seconds=int(min_drain) + 2)))
                await _until_counted(client, edge, IN_FLIGHT_STAT)
                # When the pod is deleted
                deleted = loop.time()
                drain.send_signal(signal.SIGTERM)
                hook = asyncio.ensure_future(client.get(f"http://127.0.0.1:{port}/drained"))
                # Then the claim is answered when its wait is over (nothing to claim), the hook
                # still waiting, and Envoy closes the claim's connection, told to go away
                claim = await waiting
                assert list(claim.messages) == []
                assert not hook.done()
                await _until_counted(client, edge, "http.grpc_api.downstream_cx_drain_close")
                # And a call made during the drain is served
                posted = await stub.PostMessages(messages_pb2.PostMessagesRequest(
                    project=project, queue="drained", client_id=str(uuid.uuid4()),
                    messages=[messages_pb2.NewMessage(body=b'{"during": "drain"}')]), timeout=10)
                assert len(posted.ids) == 1
                # And the hook is answered once no call is in flight, after the shortest drain
                drained = await hook
                assert drained.status_code == 200, drained.text
                assert "no call in flight" in drained.text
                assert loop.time() - deleted >= min_drain
            async with asyncio.timeout(30):
                assert await drain.wait() == 0
        finally:
            await stopped(drain)
        # Then the kubelet's SIGTERM stops Envoy
        edge.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await edge.proc.wait() == 0


async def _pull_through(envoy: Envoy, project: str) -> str:
    """A queue created and a message posted through ``envoy``: "ok", or the failure."""
    async with grpc.aio.insecure_channel(envoy.grpc_target) as channel:
        try:
            await queues_pb2_grpc.QueuesStub(channel).CreateQueue(
                queues_pb2.CreateQueueRequest(project=project, queue="over-tls"), timeout=10)
            await messages_pb2_grpc.MessagesStub(channel).PostMessages(
                messages_pb2.PostMessagesRequest(
                    project=project, queue="over-tls", client_id=str(uuid.uuid4()),
                    messages=[messages_pb2.NewMessage(body=b'{"tls": true}')]), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    return "ok"


def _mounted_like_the_mtls_component(pki: Pki, folder: Path) -> Path:
    """The service certificate, its key and the CA as the mtls component mounts them."""
    folder.mkdir()
    for name, source in (("tls.crt", pki.service.cert), ("tls.key", pki.service.key),
                         ("ca.crt", pki.ca)):
        shutil.copyfile(source, folder / name)
    return folder


async def test_envoy_speaks_mutual_tls_to_services_that_require_it(
    make_settings: Callable[..., Settings], pki: Pki, tmp_path: Path, project: str,
) -> None:
    """``render.py --upstream-tls``: in front of services that refuse plaintext and require
    client certificates, Envoy's clusters speak TLS with its certificate and check each
    service's against the CA and the address it connects to; without it, nothing gets
    through."""
    settings = make_settings(
        tls_cert_file=str(pki.service.cert), tls_key_file=str(pki.service.key),
        tls_ca_file=str(pki.ca), tls_require_client_cert=True,
    )
    stack = await asyncio.to_thread(start_stack, settings)
    try:
        certs = _mounted_like_the_mtls_component(pki, tmp_path / "tls")
        with_tls = tmp_path / "with"
        with_tls.mkdir()
        async with running_envoy(stack, with_tls, "--upstream-tls", str(certs)) as envoy:
            assert await _pull_through(envoy, project) == "ok"
        plain = tmp_path / "plain"
        plain.mkdir()
        async with running_envoy(stack, plain) as envoy:
            refused = await _pull_through(envoy, project)
        assert refused.startswith("UNAVAILABLE"), refused
    finally:
        assert await asyncio.to_thread(stack.stop) == 0, "".join(stack.output)
