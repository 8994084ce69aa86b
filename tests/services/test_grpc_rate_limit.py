"""Requests per project on the gRPC API (``project_rate_limit`` in keystone mode): each service
counts the calls a project makes with its own token, and refuses them past the project's
burst with RESOURCE_EXHAUSTED, reason RATE_LIMITED; calls with a service token (the gateway's,
which the gateway counted) are not counted. Against the real Keystone (``tests/keystone.py``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from zaqar_grpc.v2 import common_pb2, notifier_pb2, queues_pb2

from services.common.config import Settings
from services.common.errors import RpcErrorInfo, decode_rpc_error
from tests.keystone import Keystone, keystone_overrides
from tests.servers import service_ports
from tests.services._grpc import Metadata, Stubs, service, serving_stubs, token

# A project's burst; refilled by one request every 1,000 s, so none comes back during a test.
BURST = 3


@pytest.fixture(scope="module")
async def limited(
    keystone: Keystone, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stubs]:
    """queue_svc, message_svc and notifier_svc in keystone mode with requests per project."""
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(tmp_path_factory.mktemp("rate-limited")), **service_ports(),
        **keystone_overrides(keystone),
        "project_rate_limit": 0.001, "project_rate_burst": BURST,
    })
    async with serving_stubs(settings) as s:
        yield s


Call = Callable[[Stubs, Metadata, str], Awaitable[Any]]


async def list_queues(s: Stubs, metadata: Metadata, project: str) -> Any:
    return await s.queues.ListQueues(
        queues_pb2.ListQueuesRequest(project=project, limit=1), metadata=metadata)


async def queue_stats(s: Stubs, metadata: Metadata, project: str) -> Any:
    return await s.messages.GetStats(
        common_pb2.QueueRef(project=project, queue="counted"), metadata=metadata)


async def list_subscriptions(s: Stubs, metadata: Metadata, project: str) -> Any:
    return await s.subscriptions.ListSubscriptions(
        notifier_pb2.ListSubscriptionsRequest(project=project, queue="counted"),
        metadata=metadata)


# Each service counts in its own process: one public call of each.
CALLS: dict[str, Call] = {
    "queue_svc": list_queues, "message_svc": queue_stats, "notifier_svc": list_subscriptions,
}


async def refused(call: Awaitable[Any]) -> RpcErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return decode_rpc_error(caught.value)


@pytest.mark.parametrize("process", list(CALLS))
async def test_a_project_past_its_burst_is_refused_on_each_service(
    limited: Stubs, keystone: Keystone, process: str
) -> None:
    call = CALLS[process]
    # Given project a (its member's token), which has made its burst of calls to the service
    own = token(await keystone.atoken("user-a"))
    for _ in range(BURST):
        await call(limited, own, "")
    # Then its next call is refused before the method runs, saying when to come back
    failure = await refused(call(limited, own, ""))
    assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (failure.reason, failure.title) == ("RATE_LIMITED", "Too Many Requests")
    wait = re.fullmatch(
        r"This project makes requests faster than the 0\.001 per second allowed\. "
        r"Please retry in (\d+) s\.", failure.description)
    assert wait is not None and 0 < int(wait.group(1)) <= 1000, failure.description
    # While project b is served from its own budget
    await call(limited, token(await keystone.atoken("user-b")), "")
    # And a service's calls for project a (the gateway's, which the gateway counted) are not
    # counted
    project_a = keystone.users["user-a"].project_id
    for _ in range(BURST + 1):
        await call(limited, service(await keystone.atoken("zaqar")), project_a)
