"""``zaqar-grpc up`` as an operator sees it: clean stops, a dead child, a crash, a bad URI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from services.cli import settings_environment
from services.common.config import Settings
from tests.e2e.harness import running, start_stack

pytestmark = pytest.mark.e2e


def wait_gone(pids: list[int], timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if running(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if running(p)]


def headers() -> dict[str, str]:
    return {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "ops",
            "Content-Type": "application/json"}


def test_ctrl_c_stops_every_service(make_settings: Callable[..., Settings]) -> None:
    stack = start_stack(make_settings())
    pids = list(stack.child_pids().values())
    assert len(pids) == 4
    # When the operator presses Ctrl-C
    stack.proc.send_signal(signal.SIGINT)
    # Then up exits 0 and every service process is gone
    assert stack.stop() == 0
    assert wait_gone(pids) == []
    assert any("zaqar-grpc stopped" in line for line in stack.output)
    # And the gateway had stopped before the others began to (by their logs' clocks): no
    # request came in to them while they stopped
    def logged_at(line: str) -> str:
        return line.split("] ", 1)[1][:23]  # "2026-12-07 01:00:02,703", which sorts as time

    gateway_gone = [logged_at(line) for line in stack.output
                    if line.startswith("[gateway]") and "api_gateway stopped" in line]
    stopping = [logged_at(line) for line in stack.output if "stopping (grace" in line]
    assert len(gateway_gone) == 1 and len(stopping) == 3, stack.output
    assert min(stopping) >= gateway_gone[0], stack.output


def test_every_port_set_to_0_gets_one_picked_and_the_services_find_each_other(
    make_settings: Callable[..., Settings],
) -> None:
    # Given one process per service and every port left to up ("0 = any")
    zero = {name: 0 for name in (
        "http_port", "ws_port", "queue_port", "message_port", "notifier_port",
        "queue_metrics_port", "message_metrics_port", "notifier_metrics_port")}
    stack = start_stack(make_settings(**zero))
    try:
        # Then up comes up and names the gateway's real port
        line = next(x for x in stack.output if x.startswith("zaqar-grpc is up"))
        url = next(u for u in line.split() if u.startswith("http://")).removesuffix("/v2/")
        assert not url.endswith(":0"), line
        # and a post and a claim go through every service
        with httpx.Client(base_url=url, headers=headers(), timeout=30) as http:
            assert http.put("/v2/queues/any").status_code == 201
            reply = http.post("/v2/queues/any/messages", json={"messages": [{"body": 1}]})
            assert reply.status_code == 201, reply.text
            reply = http.post("/v2/queues/any/claims", json={"ttl": 60, "grace": 60})
            assert reply.status_code == 201 and reply.json()["messages"][0]["body"] == 1
    finally:
        assert stack.stop() == 0, "".join(stack.output)


def test_a_dead_service_stops_the_rest_and_fails(make_settings: Callable[..., Settings]) -> None:
    stack = start_stack(make_settings())
    pids = stack.child_pids()
    # When message_svc dies on its own
    os.kill(pids["message"], signal.SIGKILL)
    # Then up stops the others and exits non-zero, saying which one died
    assert stack.proc.wait(30) == 1
    stack.stop()
    assert wait_gone(list(pids.values())) == []
    assert any("message exited" in line for line in stack.output)


def test_services_stop_when_up_is_killed(make_settings: Callable[..., Settings]) -> None:
    stack = start_stack(make_settings())
    pids = list(stack.child_pids().values())
    assert len(pids) == 4
    # When up itself is killed with SIGKILL, so that it cannot stop its children
    os.kill(stack.proc.pid, signal.SIGKILL)
    stack.stop()
    # Then every service it started stops too, and none is left holding its ports
    assert wait_gone(pids, timeout=60) == []


def test_acknowledged_messages_survive_a_crash_of_everything(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    stack = start_stack(settings)
    pids = list(stack.child_pids().values())
    # Given 50 messages, each acknowledged with a 201
    posted: list[str] = []
    with httpx.Client(base_url=stack.url, headers=headers()) as http:
        for i in range(50):
            r = http.post("/v2/queues/durable/messages", json={"messages": [{"body": i}]})
            assert r.status_code == 201
            posted.append(r.json()["resources"][0].rsplit("/", 1)[1])
    # When every process is killed at once, as in a power cut of the host's processes
    for pid in [stack.proc.pid, *pids]:
        os.kill(pid, signal.SIGKILL)
    stack.stop()
    assert wait_gone(pids) == []
    # Then a new up on the same data serves every acknowledged message, in order
    again = start_stack(settings)
    try:
        seen: list[str] = []
        with httpx.Client(base_url=again.url, headers=headers()) as http:
            params: dict[str, str] = {"limit": "20"}
            while True:
                page = http.get("/v2/queues/durable/messages", params=params).json()
                if not page["messages"]:
                    break
                seen += [m["id"] for m in page["messages"]]
                params["marker"] = page["links"][0]["href"].rsplit("marker=", 1)[1]
        assert seen == posted
    finally:
        assert again.stop() == 0


def test_bad_store_uri_is_one_clear_error(make_settings: Callable[..., Settings]) -> None:
    env = {**os.environ, **settings_environment(make_settings())}
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "up", "--message-store", "nosuch://x"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    # Then up starts nothing and says which store and scheme, in one line
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("zaqar-grpc: configuration error: message store URI")
    assert "unsupported scheme 'nosuch'" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("uri", ["redis://127.0.0.1:{port}/0", "mongodb://127.0.0.1:{port}/z"])
def test_unreachable_store_at_start_is_one_clear_error(
    make_settings: Callable[..., Settings], uri: str
) -> None:
    from tests.servers import free_port

    store = uri.format(port=free_port())  # nothing listens there
    env = {**os.environ, **settings_environment(make_settings())}
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "up", "--store", store],
        env=env, capture_output=True, text=True, timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "cannot use the queue store" in output
    assert "Traceback" not in output
