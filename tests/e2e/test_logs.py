"""Logs of a real ``zaqar-grpc up`` stack: request ids from the caller's header to the answer,
the gateway's access log and the services' log lines; the JSON format; the access log off
(``services/common/logs.py``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from services.common.config import Settings
from tests.e2e.harness import Stack, start_stack
from tests.e2e.test_startup_failures import environment, the_line, zaqar_grpc
from tests.servers import service_ports
from tests.stacks import up_stack

pytestmark = pytest.mark.e2e


def new_id() -> str:
    return "req-" + str(uuid.uuid4())


def headers(request_id: str | None = None) -> dict[str, str]:
    sent = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": f"logs-{uuid.uuid4().hex[:8]}"}
    if request_id is not None:
        sent["X-OpenStack-Request-ID"] = request_id
    return sent


def wait_for_line(stack: Stack, found: Callable[[str], bool], timeout: float = 15) -> str:
    """The first output line of ``stack`` for which ``found`` holds, polled until a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        for line in list(stack.output):
            if found(line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError("no such line in:\n" + "".join(stack.output[-40:]))
        time.sleep(0.05)


def post_message(url: str, sent: dict[str, str]) -> tuple[str, httpx.Response]:
    queue = f"logs-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=url, headers=sent) as http:
        assert http.put(f"/v2/queues/{queue}").status_code == 201
        posted = http.post(f"/v2/queues/{queue}/messages?ttl=60",
                           json={"messages": [{"body": {"n": 1}, "ttl": 60}]})
    assert posted.status_code == 201, posted.text
    return queue, posted


def own_stack(tmp_path: Path, **overrides: Any) -> Iterator[Stack]:
    settings = Settings.load(
        environ={}, overrides={"data_dir": str(tmp_path), **service_ports(), **overrides}
    )
    stack = start_stack(settings)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def debug_json_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own logging JSON at DEBUG (each service logs every call it answers)."""
    yield from own_stack(tmp_path, log_level="DEBUG", log_format="json")


@pytest.fixture
def quiet_stack(tmp_path: Path) -> Iterator[Stack]:
    yield from own_stack(tmp_path, access_log=False)


def test_a_callers_request_id_is_answered_and_in_the_access_log(
    request: pytest.FixtureRequest,
) -> None:
    # Given the session's stack (text logs, access log on) and a caller's request id
    stack = up_stack(request, "sqlite")
    given = new_id()
    # When a message is posted with it
    queue, posted = post_message(stack.url, headers(given))
    # Then the answer carries it, and so does the gateway's access line of the request
    assert posted.headers["x-openstack-request-id"] == given
    line = wait_for_line(stack, lambda line: f"[{given}] POST" in line)
    assert line.startswith("[gateway] ")
    assert f" INFO zaqar.access [{given}] POST /v2/queues/{queue}/messages?ttl 201 " in line
    assert "ttl=60" not in line
    assert line.rstrip().endswith("project=" + posted.request.headers["X-Project-ID"])


def test_a_malformed_request_id_is_replaced(request: pytest.FixtureRequest) -> None:
    stack = up_stack(request, "sqlite")
    with httpx.Client(base_url=stack.url) as http:
        answer = http.get("/v2/ping", headers=headers("req-not-a-uuid"))
    assert answer.status_code == 204
    made = answer.headers["x-openstack-request-id"]
    assert made.startswith("req-") and made != "req-not-a-uuid" and len(made) == 40
    wait_for_line(stack, lambda line: f"[{made}] GET /v2/ping 204" in line)
    assert not any("req-not-a-uuid" in line for line in stack.output)


def test_the_request_id_reaches_every_service_and_json_lines_parse(
    debug_json_stack: Stack,
) -> None:
    # Given a stack logging JSON at DEBUG, and a caller's request id
    stack = debug_json_stack
    given = new_id()
    # When a message is posted to a new queue (message_svc asks queue_svc about the queue)
    queue, posted = post_message(stack.url, headers(given))
    assert posted.headers["x-openstack-request-id"] == given

    def entries(service: str) -> list[dict[str, Any]]:
        prefix = f"[{service}] "
        return [orjson.loads(line[len(prefix):]) for line in list(stack.output)
                if line.startswith(prefix)]

    def logged(service: str, method: str) -> Callable[[str], bool]:
        return lambda line: (line.startswith(f"[{service}] ") and given in line
                             and method in line)

    # Then message_svc logs the call it answered with the id, and so does queue_svc for the
    # call message_svc made while answering it
    wait_for_line(stack, logged("message", "/zaqar.v2.Messages/PostMessages"))
    wait_for_line(stack, logged("queue", "/zaqar.v2.Queues/"))
    wait_for_line(stack, logged("gateway", "zaqar.access"))
    stack.stop()
    # And every line of every process is one JSON object with the fields of the format
    for service in ("queue", "message", "notifier", "gateway"):
        lines = entries(service)
        assert lines, service
        for entry in lines:
            assert {"time", "level", "logger", "message", "request_id"} <= entry.keys()
            assert entry["time"].endswith("Z")
    post = [e for e in entries("message") if e["request_id"] == given
            and "/zaqar.v2.Messages/PostMessages" in e["message"]]
    assert post and post[0]["level"] == "DEBUG"
    assert post[0]["logger"] == "services.common.errors"
    access = [e for e in entries("gateway") if e["logger"] == "zaqar.access"
              and e["request_id"] == given and e["method"] == "POST"]
    assert len(access) == 1
    assert access[0]["path"] == f"/v2/queues/{queue}/messages?ttl"
    assert access[0]["status"] == 201
    assert isinstance(access[0]["duration_ms"], float) and access[0]["duration_ms"] > 0
    assert access[0]["project"] == posted.request.headers["X-Project-ID"]


def test_the_access_log_can_be_turned_off(quiet_stack: Stack) -> None:
    given = new_id()
    post_message(quiet_stack.url, headers(given))
    quiet_stack.stop()  # every line it wrote is read once it stopped
    assert not any("zaqar.access" in line for line in quiet_stack.output)
    assert not any(given in line for line in quiet_stack.output)


@pytest.mark.parametrize("command", [["up"], ["serve", "queue"], ["serve", "gateway"]])
def test_an_unknown_log_format_fails_in_one_line(
    make_settings: Callable[..., Settings], command: list[str]
) -> None:
    result = zaqar_grpc(environment(make_settings(), ZAQAR_LOG_FORMAT="xml"), *command)
    assert the_line(result) == (
        "zaqar-grpc: configuration error: log_format must be one of text, json, not 'xml'"
    )
    assert result.returncode == 2
