"""``zaqar-grpc up --replicas 2`` with one replica of queue_svc and one of message_svc hung.

A hung replica (SIGSTOP here: its connections stay open, it answers nothing) is not one that
cannot be reached, which gRPC skips at once. The gateway's calls to queue_svc are unary, and
to message_svc too with ``ZAQAR_MESSAGE_STREAM`` off (with it on, the ``Exchange`` stream has
a guard of its own: tests/gateway/test_coalesce.py); they go to the replicas in turn, so
without more each second call waits out its deadline for as long as the replica hangs. gRPC's
outlier detection (``services/common/grpc_server.py``) leaves a replica whose calls all failed
out of the turn: after one or two failed calls, requests stop failing while it still hangs.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.common.config import Settings
from tests.e2e.harness import Stack, start_stack
from tests.e2e.test_replicas_up import START_TIMEOUT, gateway_urls

pytestmark = pytest.mark.e2e

# The gateway's deadline on each call: short, so that failed calls come quickly.
RPC_TIMEOUT = 2.0
HUNG = ("queue.0", "message.0")
# Requests in a row that must succeed while the replicas hang. Calls go to the replicas in
# turn, so without the hung ones left out about half would fail.
IN_A_ROW = 20
# How long the hung replicas may take to be left out: each is after a failed call and gRPC's
# next look (every 5 s); the bound is generous for a loaded machine.
LEFT_OUT_WITHIN = 90.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    overrides: dict[str, Any] = {
        "data_dir": str(tmp_path_factory.mktemp("hung")), "rpc_timeout": RPC_TIMEOUT,
        "message_stream": False,
        "queue_port": 0, "message_port": 0, "notifier_port": 0, "http_port": 0, "ws_port": 0,
        "queue_metrics_port": 0, "message_metrics_port": 0, "notifier_metrics_port": 0,
    }
    stack = start_stack(Settings.load(environ={}, overrides=overrides),
                        ["--replicas", "2"], timeout=START_TIMEOUT)
    try:
        yield stack
    finally:
        for label in HUNG:
            pid = stack.child_pids().get(label)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        assert stack.stop() == 0, "up did not stop cleanly:\n" + "".join(stack.output)


def test_requests_stop_failing_while_a_replica_of_each_service_they_call_hangs(
    stack: Stack,
) -> None:
    url = gateway_urls(stack)[0]
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "hung"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        assert http.put("/v2/queues/q").status_code == 201
        # queue_svc lists queues; message_svc lists a queue's messages
        requests = ["/v2/queues", "/v2/queues/q/messages?echo=true"]
        assert http.post("/v2/queues/q/messages",
                         json={"messages": [{"body": 1, "ttl": 300}]}).status_code == 201
        for path in requests:
            assert http.get(path).status_code == 200
        pids = stack.child_pids()
        for label in HUNG:
            os.kill(pids[label], signal.SIGSTOP)
        try:
            failed: dict[str, list[int]] = {path: [] for path in requests}
            in_a_row = 0
            deadline = time.monotonic() + LEFT_OUT_WITHIN
            while in_a_row < IN_A_ROW:
                assert time.monotonic() < deadline, (
                    f"no {IN_A_ROW} requests in a row succeeded within {LEFT_OUT_WITHIN:g} s "
                    f"of hanging {', '.join(HUNG)}; failed: {failed}")
                in_a_row += 1
                for path in requests:
                    reply = http.get(path)
                    if reply.status_code != 200:
                        failed[path].append(reply.status_code)
                        in_a_row = 0
            # The replicas did hang: requests to each service failed (a deadline, so 503)
            # before its hung replica was left out, and nothing else.
            for path, codes in failed.items():
                assert codes and set(codes) == {503}, (path, codes)
        finally:
            for label in HUNG:
                os.kill(pids[label], signal.SIGCONT)
        # Awake again, they answer, and nothing failed for good.
        for path in requests:
            assert http.get(path).status_code == 200
