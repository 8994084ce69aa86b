"""Rotated TLS files taken without a restart, on a real service and real channels.

queue_svc runs in-process with mutual TLS on copies of the test certificates; its caller is a
channel from ``open_channel`` (what the services use between themselves) on copies of its own.
Every file is then replaced, as cert-manager or an operator replaces them, by material of
another CA, and looked at again every 50 ms.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import Settings
from services.common.grpc_server import Running, open_channel
from services.common.tls import load_tls
from services.common.tls_channel import ReloadingChannel
from services.queue_svc.server import start as start_queue_svc
from tests.certs import Leaf, Pki
from tests.services.test_tls import client_channel, ensure_queue, health, start  # noqa: F401
from tests.unit.test_tls import rotate
from tests.waiting import until

INTERVAL = 0.05
SERVING = health_pb2.HealthCheckResponse.SERVING


def copies(folder: Path, leaf: Leaf, ca: Path) -> dict[str, Path]:
    folder.mkdir()
    files = {"cert": folder / "tls.crt", "key": folder / "tls.key", "ca": folder / "ca.crt"}
    put(files, leaf, ca)
    return files


def put(files: dict[str, Path], leaf: Leaf, ca: Path) -> None:
    rotate(files["cert"], leaf.cert)
    rotate(files["key"], leaf.key)
    rotate(files["ca"], ca)


def settings_of(files: dict[str, Path], **more: Any) -> dict[str, Any]:
    return {"tls_cert_file": str(files["cert"]), "tls_key_file": str(files["key"]),
            "tls_ca_file": str(files["ca"]), "tls_reload_interval": INTERVAL, **more}


async def answers(channel: grpc.aio.Channel) -> bool:
    try:
        return bool((await health(channel)).status == SERVING)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        return False


async def a_new_client_answers(target: str, pki: Pki, leaf: Leaf, ca: Path) -> bool:
    """Whether a client that has only ``leaf`` and trusts only ``ca`` is served now."""
    async with client_channel(target, pki, leaf, ca=str(ca)) as channel:
        return await answers(channel)


async def test_a_service_and_its_callers_take_rotated_files_without_a_restart(
    make_settings: Callable[..., Settings], pki: Pki, tmp_path: Path,
    start: Callable[..., Awaitable[Running]],  # noqa: F811
) -> None:
    # Given queue_svc with mutual TLS, and a caller, each on its own copies of the files
    served = copies(tmp_path / "server", pki.service, pki.ca)
    running = await start(start_queue_svc, make_settings(
        **settings_of(served, tls_require_client_cert=True)))
    target = f"127.0.0.1:{running.port}"
    calling = copies(tmp_path / "client", pki.client, pki.ca)
    tls = load_tls(Settings.load(environ={}, overrides=settings_of(calling)), serving=False)
    async with open_channel(target, tls) as channel:
        assert isinstance(channel, ReloadingChannel)
        assert await answers(channel)
        # And a call in flight: a health Watch stream
        watch = health_pb2_grpc.HealthStub(channel).Watch(  # type: ignore[no-untyped-call]
            health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == SERVING

        # When every file of both is replaced by material of another CA
        put(served, pki.stranger, pki.other_ca)
        put(calling, pki.stranger, pki.other_ca)

        # Then new connections to the service get the new material: a client of the new CA
        # is served, and one of the old is not
        await until(lambda: a_new_client_answers(target, pki, pki.stranger, pki.other_ca),
                    what="a client of the new CA served")
        assert not await a_new_client_answers(target, pki, pki.client, pki.ca)
        # And the caller's stubs go on a channel of the new material, without a restart
        await until(lambda: channel.current() and channel.generation == 1,
                    what="the caller's channel reopened")
        assert await answers(channel)
        # While the call in flight goes on where it started
        await running.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()


async def test_a_rotation_half_done_keeps_the_service_on_its_files_until_it_is_whole(
    make_settings: Callable[..., Settings], pki: Pki, tmp_path: Path,
    start: Callable[..., Awaitable[Running]],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    served = copies(tmp_path / "server", pki.service, pki.ca)
    running = await start(start_queue_svc, make_settings(**settings_of(served)))
    target = f"127.0.0.1:{running.port}"
    # Given a new certificate in place whose key is not there yet
    rotate(served["cert"], pki.stranger.cert)
    # When clients connect: the service looks, says once why it cannot take them
    async def warned_while_served() -> bool:
        served_now = await a_new_client_answers(target, pki, pki.client, pki.ca)
        return served_now and "TLS files changed but cannot be used" in caplog.text

    with caplog.at_level(logging.WARNING, logger="services.common.tls"):
        await until(warned_while_served, what="the warning, while served")
    # And goes on serving what it served
    assert await a_new_client_answers(target, pki, pki.client, pki.ca)
    assert not await a_new_client_answers(target, pki, pki.client, pki.other_ca)
    # Then, once the key comes, it serves the new certificate
    rotate(served["key"], pki.stranger.key)
    await until(lambda: a_new_client_answers(target, pki, pki.client, pki.other_ca),
                what="the new certificate served")
    assert not await a_new_client_answers(target, pki, pki.client, pki.ca)
