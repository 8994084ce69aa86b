"""What ``services/common/metrics.py`` records about stores and gRPC calls, in process, on
real stores and a real gRPC server (the exposition over HTTP: tests/e2e/test_metrics.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY
from zaqar_grpc.v2 import queues_pb2, queues_pb2_grpc

from services.common.config import Settings
from services.common.metrics import instrumented, split_method
from services.message_svc.storage.base import NewMessage, StaleQueue
from services.message_svc.storage.registry import open_store
from services.queue_svc import server as queue_server


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_every_store_operation_is_counted_once_with_its_outcome(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'messages.db'}")
    labels = {"store": "message", "backend": "sqlite"}
    try:
        posts = sample("zaqar_store_operations_total", operation="post", outcome="ok", **labels)
        timed = sample("zaqar_store_operation_seconds_count", operation="post", **labels)
        # When a message is posted
        project = f"p-{uuid.uuid4().hex[:6]}"
        await store.post(project, "q", "client", [NewMessage(body=b"1", ttl=60)])
        # Then one post is counted and timed
        assert sample("zaqar_store_operations_total", operation="post", outcome="ok",
                      **labels) == posts + 1
        assert sample("zaqar_store_operation_seconds_count", operation="post",
                      **labels) == timed + 1
        # And an operation that fails is counted under its error's name (a post checked
        # against a queue version the store does not have)
        stale = sample("zaqar_store_operations_total", operation="post", outcome="StaleQueue",
                       **labels)
        current = await store.queue_version(project, "q")
        with pytest.raises(StaleQueue):
            await store.post(project, "q", "client", [NewMessage(body=b"2", ttl=60)],
                             version=current + 7)
        assert sample("zaqar_store_operations_total", operation="post", outcome="StaleQueue",
                      **labels) == stale + 1
    finally:
        await store.close()


async def test_server_and_client_count_calls_by_method_and_code(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    running = await queue_server.start(settings)
    try:
        async with grpc.aio.insecure_channel(settings.target("queue")) as channel:
            stub = instrumented(queues_pb2_grpc.QueuesStub(channel))
            method = {"grpc_service": "zaqar.v2.Queues", "grpc_method": "GetQueue"}
            ok = {**method, "grpc_code": "OK"}
            bad = {**method, "grpc_code": "INVALID_ARGUMENT"}
            server_ok, client_ok = (sample("grpc_server_handled_total", **ok),
                                    sample("grpc_client_handled_total", **ok))
            server_bad, client_bad = (sample("grpc_server_handled_total", **bad),
                                      sample("grpc_client_handled_total", **bad))
            await stub.GetQueue(queues_pb2.GetQueueRequest(project="p", queue="q"), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetQueue(queues_pb2.GetQueueRequest(project="p", queue="bad name"),
                                    timeout=5)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        # Both sides saw one success and one refusal; the server timed both
        assert sample("grpc_server_handled_total", **ok) == server_ok + 1
        assert sample("grpc_client_handled_total", **ok) == client_ok + 1
        assert sample("grpc_server_handled_total", **bad) == server_bad + 1
        assert sample("grpc_client_handled_total", **bad) == client_bad + 1
        assert sample("grpc_server_handling_seconds_count", **method) >= 2
    finally:
        await running.stop()


def test_method_names_split_into_service_and_method() -> None:
    assert split_method("/zaqar.v2.Messages/Post") == ("zaqar.v2.Messages", "Post")
    assert split_method("/grpc.health.v1.Health/Check") == ("grpc.health.v1.Health", "Check")
