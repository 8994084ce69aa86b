"""Process entry of the API gateway: the HTTP app on uvicorn and the WebSocket server, in one
event loop over one set of upstream channels.

``run(settings)`` serves until SIGTERM/SIGINT, then stops accepting HTTP, lets in-flight
requests finish (``settings.shutdown_grace``), closes the WebSocket connections (ending their
push subscriptions) and the upstream channels. Once both sockets accept connections it prints
``READY api_gateway http://<host>:<http port> ws://<host>:<ws port>`` on stdout.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
import socket

import uvicorn
from websockets.asyncio.server import Server

from services.api_gateway import open_files, rate_limit
from services.api_gateway.app import create_app
from services.api_gateway.limits import Receiving
from services.api_gateway.rate_limit import RateLimit
from services.api_gateway.upstream import Upstreams
from services.api_gateway.websocket import server as ws_server
from services.common import metrics, signing
from services.common.config import Settings, check_limits
from services.common.grpc_server import service_main
from services.common.keystone import KeystoneAuth, check_settings, keystone_parts
from services.common.secret_files import SecretFiles
from services.common.startup import CannotListen, bind, os_reason
from services.common.tls import load_tls

log = logging.getLogger(__name__)


def _http_protocol(
    settings: Settings, receiving: Receiving | None = None,
) -> type[asyncio.Protocol] | str:
    """httptools (a dependency; several times cheaper per request than h11), with bounds on
    the request head, the time to send a request, open connections and the bytes of requests
    being received (``http_protocol.py``); h11 only where httptools cannot be imported."""
    if importlib.util.find_spec("httptools") is None:
        log.warning("httptools is not installed: HTTP is served by h11, without the bounds "
                    "of http_max_connections, http_request_timeout and "
                    "http_max_receiving_bytes")
        return "h11"
    from services.api_gateway import http_protocol

    return http_protocol.configured(
        settings.http_max_connections, settings.http_request_timeout,
        receiving or Receiving(settings.http_max_receiving_bytes),
    )


def build_server(
    settings: Settings,
    access_log: bool = False,
    up: Upstreams | None = None,
    auth: KeystoneAuth | None = None,
    limit: RateLimit | None = None,
    keys: signing.Keys | None = None,
    receiving: Receiving | None = None,
) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings, up, auth, limit, keys),
        host=settings.host,
        port=settings.http_port,
        http=_http_protocol(settings, receiving),
        ws="none",
        lifespan="on",
        access_log=access_log,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)),
    )
    return uvicorn.Server(config)


def _bound_port(server: uvicorn.Server) -> int:
    for listener in server.servers:
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    return server.config.port


def _listen_http(settings: Settings) -> list[socket.socket]:
    """The HTTP port's sockets, bound here rather than by uvicorn, whose bind failure is a
    log line and ``sys.exit``."""
    try:
        return bind(settings.host, settings.http_port)
    except OSError as exc:
        raise CannotListen(settings.host, settings.http_port, os_reason(exc), "http_port") from None


async def _listen_ws(
    settings: Settings, up: Upstreams, auth: KeystoneAuth | None, limit: RateLimit | None,
    keys: signing.Keys, receiving: Receiving,
) -> Server:
    try:
        return await ws_server.start(settings, up, auth, limit, keys, receiving)
    except OSError as exc:
        raise CannotListen(settings.host, settings.ws_port, os_reason(exc), "ws_port") from None


async def run(settings: Settings) -> None:
    """Serve the Zaqar v2 HTTP API on ``settings.http_port`` and its WebSocket API on
    ``settings.ws_port`` until a signal; the channels to the services use TLS when the
    ``tls_*`` settings say so. The pre-signed URL secrets and the Keystone password are read
    again from their files (``secret_files.py``), when they come from files.

    Raises:
        ConfigurationError: bad auth, TLS, signing or rate-limit settings.
        CannotListen: the HTTP or the WebSocket port cannot be bound (nothing is left open).
    """
    check_settings(settings)
    check_limits(settings, "gateway")
    settings = open_files.fit(open_files.fit_memory(settings, open_files.memory_limit()))
    # One set of pre-signed URL secrets for both transports, replaced when their files change.
    keys = signing.Keys.from_settings(settings)
    auth = KeystoneAuth(settings) if settings.auth_strategy == "keystone" else None
    # The secrets' files, followed while the process runs: the keys', and the Keystone
    # password's.
    secret_files = SecretFiles.of(
        settings, [(signing.KEY_SETTINGS, keys.take), *keystone_parts(auth)]
    )
    # One limit for both transports: a project's requests count together.
    limit = rate_limit.from_settings(settings)
    tls = await asyncio.to_thread(load_tls, settings, False)
    http_sockets = _listen_http(settings)
    up = Upstreams(settings, tls, auth)
    sockets: Server | None = None
    loop = asyncio.get_running_loop()
    try:
        up.open()
        if isinstance(limit, rate_limit.SharedProjectRateLimit):
            await limit.check()
        # One count of the bytes being received, for both ports.
        receiving = Receiving(settings.http_max_receiving_bytes)
        metrics.RECEIVING_BYTES.set_function(lambda: receiving.held)  # read when scraped
        metrics.LONG_POLLS_WAITING.set_function(lambda: up.waits.held)
        sockets = await _listen_ws(settings, up, auth, limit, keys, receiving)
        server = build_server(settings, up=up, auth=auth, limit=limit, keys=keys,
                              receiving=receiving)
        if secret_files is not None:
            secret_files.watch()

        def stop() -> None:
            server.should_exit = True
            # uvicorn's first step of its shutdown, taken now rather than at its next tick: an
            # idle connection is closed, and an answer under way ends its connection (it says
            # "connection: close"). Then the long polls are answered at once, as at their
            # deadline, rather than cut off when the grace runs out.
            for connection in list(server.server_state.connections):
                connection.shutdown()
            up.waits.stopping.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        serving = asyncio.ensure_future(server.serve(sockets=http_sockets))
        while not server.started:
            if serving.done():
                break
            await asyncio.sleep(0.01)
        if server.started:
            http = f"http://{settings.host}:{_bound_port(server)}"
            ws = f"ws://{settings.host}:{ws_server.bound_port(sockets)}"
            print(f"READY api_gateway {http} {ws}", flush=True)
        await serving
    finally:
        if secret_files is not None:
            await secret_files.close()
        if limit is not None:
            await limit.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        for sock in http_sockets:
            sock.close()
        if sockets is not None:
            sockets.close()
            await sockets.wait_closed()
        await up.close()
        if auth is not None:
            await auth.aclose()
    log.info("api_gateway stopped")


def main() -> None:
    service_main("api_gateway", run)


if __name__ == "__main__":
    main()
