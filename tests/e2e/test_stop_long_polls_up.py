"""A long poll in flight when ``zaqar-grpc up`` is asked to stop is answered at once, as at its
deadline (204 over HTTP, with ``Connection: close``; status 204 over WebSocket), and not cut
off when the shutdown grace runs out. ``up`` stops the gateway first, while message_svc still
serves, so this is the gateway's own handling; message_svc's is in
``tests/services/test_stop_ends_waits.py``. Before it, a rolling restart answered every long
poll of a stopping gateway 500 after the grace."""

from __future__ import annotations

import concurrent.futures
import socket
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from services.common.config import Settings
from tests.e2e.harness import start_stack
from tests.servers import service_ports
from tests.waiting import until

pytestmark = pytest.mark.e2e

# A grace far shorter than the waits: a wait still held when it runs out is cut off (the
# failure this guards against), not answered at its own deadline.
GRACE = 1.0
WAIT = 20
# Only how long a broken test waits before it fails.
WITHIN = 60.0


def waiting(metrics_url: str) -> float:
    text = httpx.get(metrics_url, timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "zaqar_long_polls_waiting":
            return sum(sample.value for sample in family.samples)
    return 0.0


def http_long_poll(host: str, port: int, project: str) -> bytes:
    """A claim waiting WAIT s, over a raw connection: everything the server sends until it
    closes (the answer says Connection: close, and the gateway closes)."""
    with socket.create_connection((host, port), timeout=WITHIN) as raw:
        raw.sendall(
            f"POST /v2/queues/idle/claims?wait={WAIT} HTTP/1.1\r\nHost: x\r\n"
            f"Client-ID: {uuid.uuid4()}\r\nX-Project-ID: {project}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".encode())
        chunks = []
        while chunk := raw.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def ws_long_poll(url: str, project: str) -> dict[str, Any]:
    with connect(url) as ws:
        ws.send(orjson.dumps({
            "action": "claim_create", "body": {"queue_name": "idle", "wait": WAIT},
            "headers": {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project},
        }).decode())
        answer: dict[str, Any] = orjson.loads(ws.recv(timeout=WITHIN))
        return answer


async def test_a_stopping_gateway_answers_its_long_polls_at_once(tmp_path: Path) -> None:
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(tmp_path), **service_ports(), "shutdown_grace": GRACE,
    })
    stack = start_stack(settings)
    project = f"stop-{uuid.uuid4().hex[:8]}"
    metrics = f"http://{settings.host}:{settings.message_metrics_port}/metrics"
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            # Given a claim waiting over HTTP and one over WebSocket, both held in message_svc
            over_http = pool.submit(http_long_poll, settings.host, settings.http_port, project)
            over_ws = pool.submit(ws_long_poll, f"ws://{settings.host}:{settings.ws_port}",
                                  project)
            await until(lambda: waiting(metrics) >= 2, WITHIN, "two long polls waiting")
            # When up is asked to stop (the gateway first, with a 1 s grace)
            stack.terminate()
            http_answer = over_http.result(WITHIN)
            ws_answer = over_ws.result(WITHIN)
    finally:
        code = stack.stop()
    # Then each was answered as at its deadline: nothing to claim
    head = http_answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 204 "), http_answer
    assert b"connection: close" in head.split(b"\r\n"), http_answer
    assert ws_answer["headers"]["status"] == 204, ws_answer
    # And the stack stopped cleanly, with nothing logged as an error
    assert code == 0, "".join(stack.output)
    assert not [line for line in stack.output if " ERROR " in line], "".join(stack.output)
