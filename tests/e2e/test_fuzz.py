"""The seeded fuzzer (``bench/fuzz``, ``docs/fuzzing.md``) against ``zaqar-grpc up``.

A short run per store with a fixed seed: every route and method of the router (read from the
app), every WebSocket action (read from the action table), every raw-HTTP generator and every
gRPC method of the services (read by reflection) once as a sweep, then random cases of all
five families (HTTP mutations, WebSocket, malformed raw HTTP, cross-project look-alikes, gRPC
requests straight to the services). The oracles are the fuzzer's: no 5xx and no 503, no answer
later than the bound, no connection dropped without an answer, no leak of one project's data
to another caller or change to it, every process alive, and the canary answered at the end.

Each bug a campaign found is also reproduced on its own below, so that it stays fixed. A bug
not fixed yet is listed in :data:`KNOWN_BUGS`: the run tolerates its failures (and only
those), and its reproducer is marked xfail (strict), so that its fix shows.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import orjson
import pytest
from websockets.asyncio.client import connect

from bench.fuzz import Failure, run
from bench.fuzz.grpc_family import method_table
from bench.fuzz.routes import route_table
from bench.fuzz.stack import target
from bench.fuzz.wire import Connection, call, encode_request
from bench.fuzz.ws_family import action_table
from tests.e2e.harness import Stack
from tests.stacks import REDIS_CLUSTER, up_stack

pytestmark = pytest.mark.e2e

SEED = 20261202
CASES = {"sqlite": 2500, "redis": 1200, REDIS_CLUSTER: 1200}


def unhandled(logged: str) -> bool:
    """An exception logged with its traceback, or an error of gRPC's core."""
    return logged.endswith("(traceback)") or logged.startswith("grpc ")


# Bugs not fixed yet: what identifies their failures, and what the stack logs when they happen
# (``Report.logged`` keys, by prefix).
KNOWN_BUGS: dict[str, Callable[[Failure], bool]] = {}
KNOWN_LOGGED: tuple[str, ...] = ()


@pytest.mark.parametrize("store", list(CASES))
async def test_a_seeded_fuzz_run_breaks_no_oracle(
    request: pytest.FixtureRequest, store: str
) -> None:
    fuzz_stack = up_stack(request, store)
    where = target(fuzz_stack)
    # The crash oracle watches every process of the stack.
    assert set(where.alive()) == {"up", "queue", "message", "notifier", "gateway"}
    report = await run(where, seed=SEED, cases=CASES[store], workers=4)
    print(report.summary())

    unknown = [f for f in report.failures
               if not any(known(f) for known in KNOWN_BUGS.values())]
    assert unknown == [], "\n\n".join(
        f"{f.kind} {f.label}\n{f.detail}\n{f.reproducer}\n" + "".join(f.log) for f in unknown)
    assert report.dead == []
    assert report.canary == "ok"
    # No other unhandled exception in any process of the stack, even where the answer was
    # right (errors logged without a traceback are in the summary printed above).
    assert [what for what in report.logged
            if unhandled(what) and not what.startswith(KNOWN_LOGGED)] == []
    # Every route and method of the router, every WebSocket action and every family ran.
    assert set(report.routes) == {r.key for r in route_table(fuzz_stack.settings)}
    assert report.generic_routes == set()
    assert set(report.actions) == set(action_table())
    assert set(report.methods) == {m.path for m in method_table(
        where.host, [fuzz_stack.settings.queue_port, fuzz_stack.settings.message_port,
                     fuzz_stack.settings.notifier_port])}
    assert set(report.families) == {"http", "ws", "raw", "leak", "grpc"}
    assert report.ran == CASES[store]
    assert report.leak_scenarios >= 2


# Bugs the campaign found, each reproduced alone ---------------------------------------

def _headers(project: str) -> dict[str, str]:
    return {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}


async def test_a_non_ascii_token_on_subscribe_is_not_a_service_error(live: Stack) -> None:
    conn = Connection(live.settings.host, live.settings.http_port, 10)
    body = orjson.dumps({"subscriber": "http://127.0.0.1:9/hook", "ttl": 3600})
    data = encode_request(
        "POST", "/v2/queues/fz-token/subscriptions",
        [*_headers("fz-token").items(), ("X-Auth-Token", "\u00e9".encode()),
         ("Content-Type", "application/json")], body)
    answer = await conn.exchange(data)
    conn.close()
    assert answer.status is not None and answer.status < 500, answer.describe()


async def test_a_non_ascii_token_on_a_subscription_update_is_not_a_service_error(
    live: Stack,
) -> None:
    conn = Connection(live.settings.host, live.settings.http_port, 10)
    headers = _headers("fz-token")
    created = await call(conn, "POST", "/v2/queues/fz-token/subscriptions", headers,
                         {"subscriber": "http://127.0.0.1:9/update", "ttl": 3600})
    assert created.status == 201, created.describe()
    path = f"/v2/queues/fz-token/subscriptions/{created.json()['subscription_id']}"
    data = encode_request("PATCH", path, [*headers.items(), ("X-Auth-Token", b"\xc3\xa9"),
                                          ("Content-Type", "application/json")], b'{"ttl": 7200}')
    answer = await conn.exchange(data)
    conn.close()
    assert answer.status is not None and answer.status < 500, answer.describe()


async def test_a_control_character_in_a_websocket_token_is_not_a_service_error(
    live: Stack,
) -> None:
    request = {"action": "subscription_create",
               "headers": {**_headers("fz-token"), "X-Auth-Token": "a\nb"},
               "body": {"queue_name": "fz-token", "subscriber": "http://127.0.0.1:9/ws",
                        "ttl": 3600}}
    async with asyncio.timeout(10), connect(
            f"ws://{live.settings.host}:{live.settings.ws_port}/") as socket:
        await socket.send(orjson.dumps(request).decode())
        answer = orjson.loads(await socket.recv())
    assert answer["headers"]["status"] < 500, answer


async def test_a_request_pipelined_ahead_of_a_malformed_one_is_answered(live: Stack) -> None:
    queue = f"fz-pipe-{uuid.uuid4().hex[:8]}"
    headers = _headers("fz-pipe")
    post = encode_request("POST", f"/v2/queues/{queue}/messages",
                          [*headers.items(), ("Content-Type", "application/json")],
                          b'{"messages": [{"body": "pipelined", "ttl": 300}]}')
    malformed = b"GET /v2/ping HTTP/1.1\r\nNoColon\r\n\r\n"
    reader, writer = await asyncio.open_connection(live.settings.host, live.settings.http_port)
    try:
        writer.write(post + malformed)
        async with asyncio.timeout(10):
            answers = await reader.read()
    finally:
        writer.close()
    conn = Connection(live.settings.host, live.settings.http_port, 10)
    listed = await call(conn, "GET", f"/v2/queues/{queue}/messages?echo=true", headers)
    conn.close()
    assert b"pipelined" in listed.body  # the first request took effect ...
    assert answers.startswith(b"HTTP/1.1 201 "), answers  # ... and its answer must come first


@pytest.fixture
def live(request: pytest.FixtureRequest) -> Stack:
    return up_stack(request, "sqlite")


SIGNED = {"URL-Methods": "GET", "URL-Expires": "2099-01-01T00:00:00"}


async def test_a_non_ascii_url_signature_is_refused_like_any_wrong_one(live: Stack) -> None:
    queue = f"fz-sig-{uuid.uuid4().hex[:8]}"
    headers = {**_headers("fz-sig"), **SIGNED, "URL-Paths": f"/v2/queues/{queue}/messages"}
    conn = Connection(live.settings.host, live.settings.http_port, 10)
    answer = await conn.exchange(encode_request(
        "GET", f"/v2/queues/{queue}/messages",
        [*headers.items(), ("URL-Signature", "\u00e9".encode())], None))
    conn.close()
    assert answer.status == 404, answer.describe()


async def test_a_non_ascii_url_signature_on_the_websocket_is_refused(live: Stack) -> None:
    queue = f"fz-sig-{uuid.uuid4().hex[:8]}"
    request = {"action": "message_list",
               "headers": {**_headers("fz-sig"), **SIGNED, "URL-Signature": "0" * 63 + "\u00e9",
                           "URL-Paths": f"/v2/queues/{queue}/messages"},
               "body": {"queue_name": queue}}
    async with asyncio.timeout(10), connect(
            f"ws://{live.settings.host}:{live.settings.ws_port}/") as socket:
        await socket.send(orjson.dumps(request).decode())
        answer = orjson.loads(await socket.recv())
    assert answer["headers"]["status"] == 404, answer
