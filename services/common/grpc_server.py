"""Building, running and stopping a service's ``grpc.aio`` server; opening channels to peers."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import signal
import sys
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import affinity, logs, tracing
from services.common.config import ConfigurationError, Settings
from services.common.errors import ErrorInterceptor
from services.common.grpc_auth import client_interceptors
from services.common.keystone import KeystoneAuth
from services.common.metrics import STORE_REACHABLE, Exposition
from services.common.request_bytes import Receiving, ReceivingInterceptor
from services.common.request_names import NamesInterceptor
from services.common.startup import METRICS_PORT, CannotListen, check_port, os_reason, report
from services.common.sweeper import Periodic
from services.common.tls import Tls
from services.common.tls_channel import ReloadingChannel

log = logging.getLogger(__name__)

Registrar = Callable[[grpc.aio.Server], None]


class CallerGoneFilter(logging.Filter):
    """Turns grpc.aio's ERROR "ExecuteBatchError raised in core by servicer method [m]" into
    a DEBUG line, dropped unless that level is on.

    grpc.aio logs it, with a traceback, when the answer of a call whose servicer returned
    could not be sent: the caller had reset the call first (it gave up at its deadline as the
    answer went out, or refused an answer larger than its receive bound). Nothing failed in
    the service, and there is nobody left to tell; a failure of the servicer itself is still
    logged by the error interceptor (``errors.py``).
    """

    LOGGER: Final = "grpc._cython.cygrpc"
    MESSAGE: Final = "ExecuteBatchError raised in core by servicer method"

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if not text.startswith(self.MESSAGE):
            return True
        method = text[len(self.MESSAGE):].strip(" []") or "a call"
        record.msg, record.args = "the caller of %s left before its answer could be sent", (
            method,)
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_caller_gone() -> None:
    """Installs :class:`CallerGoneFilter` on grpc.aio's server logger (once per process)."""
    logger = logging.getLogger(CallerGoneFilter.LOGGER)
    if not any(isinstance(f, CallerGoneFilter) for f in logger.filters):
        logger.addFilter(CallerGoneFilter())


# The health service name that stays SERVING while the process runs, whatever its store does:
# what a liveness probe asks (``""`` and the service names follow the store: readiness).
LIVENESS: Final = "liveness"
# How often a running service checks that its store answers, and how long it waits for it:
# a store that stops answering turns the service NOT_SERVING within their sum.
STORE_CHECK_INTERVAL: Final = 1.5
STORE_CHECK_TIMEOUT: Final = 2.0


class StoreWatch(Periodic):
    """Keeps a service's health status in step with whether its store answers: NOT_SERVING
    (for ``""`` and its service names) while ``check`` fails or hangs, SERVING again once it
    succeeds. Each change is logged once."""

    def __init__(
        self,
        health_servicer: health.aio.HealthServicer,
        service_names: Sequence[str],
        check: Callable[[], Awaitable[None]],
        what: str,
        interval: float = STORE_CHECK_INTERVAL,
        timeout: float = STORE_CHECK_TIMEOUT,
    ) -> None:
        super().__init__(interval)
        self._health = health_servicer
        self._names = service_names
        self._check = check
        self._what = what
        self._timeout = timeout
        self.serving = True
        self._reachable = STORE_REACHABLE.labels(
            what.removeprefix("the ").removesuffix(" store")
        )
        self._reachable.set(1)

    async def tick(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._check()
            why = ""
        except TimeoutError:
            why = f"it did not answer within {self._timeout:g}s"
        except Exception as exc:  # whatever the driver raises: the store is not usable
            why = getattr(exc, "description", None) or str(exc) or type(exc).__name__
        self._reachable.set(0 if why else 1)
        if bool(why) == self.serving:
            self.serving = not why
            if why:
                log.warning("%s cannot be reached (%s): NOT_SERVING until it answers",
                            self._what, why)
            else:
                log.warning("%s answers again: SERVING", self._what)
            await set_serving(self._health, self._names, self.serving)


@dataclass
class Running:
    """A started service: what ``services/<svc>/server.py:start`` returns.

    ``close`` releases what the service opened (channels, stores) after the server stopped.
    ``store_check``, when given, is watched while the service runs (:class:`StoreWatch`).
    ``stopping``, when given, is called as the service begins to stop, before the server's
    grace: it ends the calls that would otherwise wait it out (long polls, streams).
    """

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: Sequence[str]
    close: Callable[[], Awaitable[None]]
    store_check: Callable[[], Awaitable[None]] | None = None
    store_name: str = "the store"
    watch: StoreWatch | None = None
    stopping: Callable[[], None] | None = None

    async def stop(self, grace: float = 0) -> None:
        """Stop serving and close what the service opened, within ``grace`` seconds and
        :data:`CLOSE_TIMEOUT` more for each of the store watch and the clean-up, however
        they hang."""
        what = ", ".join(self.service_names)
        if self.watch is not None:
            await bounded_close(self.watch.stop, CLOSE_TIMEOUT, f"the store watch of {what}")
        await set_serving(self.health, self.service_names, False)
        if self.stopping is not None:
            self.stopping()
        await self.server.stop(grace)
        await bounded_close(self.close, grace + CLOSE_TIMEOUT, what)

    async def serve_until_signal(self, grace: float, announce: str | None = None) -> None:
        await serve(self.server, self.health, self.service_names, grace, self.close, announce,
                    watch=self.watch, stopping=self.stopping)

# Retries for calls between services: only transient UNAVAILABLE, with backoff. Calls that are
# not idempotent get no retry policy: zaqar.v2.Messages (posts, claims), zaqar.v2.Topics
# (posts), MessagesInternal.Batch, which carries such calls, and NotifierInternal.PublishTopic
# (a topic's posts) (a method's own entry wins over its service's).
# Balancing: every address a target resolves to (a comma-separated list of replicas, or a DNS
# name such as a headless Kubernetes Service) gets calls in turn; a replica that cannot be
# reached is skipped until it can.
# A replica that is reachable but answers nothing (a process stopped or hung, its event loop
# blocked) is left out by gRPC's outlier detection (gRFC A50): every 5 s, a replica whose
# calls that ended in the last 5 s all failed (more than 95 %), while another replica also had
# calls, gets no new calls for 10 s, 10 s more each time it is left out again soon after, up
# to 60 s; at most a third of the replicas at once, and never the only one. Each client
# process decides alone, for its own channel. gRPC counts every status but OK as a failure, so
# a healthy replica whose few calls in an interval all ended in errors (NOT_FOUND, say) may be
# left out too: its calls then go to the others, and none fails for it. A stream its caller
# cancels counts as failed as well: channels that carry such streams open without it
# (``open_channel(eject_hung=False)``). A gRPC without the policy falls back to round_robin.
_OUTLIER_DETECTION: dict[str, Any] = {
    "interval": "5s",
    "baseEjectionTime": "10s",
    "maxEjectionTime": "60s",
    "maxEjectionPercent": 33,
    "failurePercentageEjection": {
        "threshold": 95, "enforcementPercentage": 100, "minimumHosts": 2, "requestVolume": 1,
    },
    "childPolicy": [{"round_robin": {}}],
}
_SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {"name": [{"service": "zaqar.v2.MessagesInternal", "method": "Batch"},
                  {"service": "zaqar.v2.NotifierInternal", "method": "PublishTopic"}]},
        {
            "name": [{"service": "zaqar.v2.Queues"}, {"service": "zaqar.v2.MessagesInternal"},
                     {"service": "zaqar.v2.NotifierInternal"},
                     {"service": "grpc.health.v1.Health"}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
_EJECTING_SERVICE_CONFIG: dict[str, Any] = {
    **_SERVICE_CONFIG,
    "loadBalancingConfig": [
        {"outlier_detection_experimental": _OUTLIER_DETECTION}, {"round_robin": {}},
    ],
}

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps(_EJECTING_SERVICE_CONFIG)),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # A channel whose upstream went away tries to connect again after 0.2 s, then backs off
    # to at most 2 s between attempts (gRPC's default grows to 120 s), so a service that was
    # down for long is reached again within about 2 s of coming back.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]

SERVER_OPTIONS: list[tuple[str, Any]] = [
    # Callers reconnect (and resolve the target's name again) every 5 minutes or so, so that
    # replicas added by a scale-out get calls without waiting for a connection to break. No
    # grace limit: calls and streams under way on the old connection run to their end.
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
]


def channel_target(target: str) -> str:
    """The gRPC target of a configured one: ``host:port`` and gRPC's own forms (``dns:///name:
    port``, ``ipv4:…``, ``unix:…``) as they are; a comma-separated list of replicas
    ``10.0.0.1:50062,10.0.0.2:50062`` as gRPC's static list (``ipv4:`` or ``ipv6:``), which
    needs IP addresses: name a DNS entry that resolves to every replica with ``dns:///``.

    Raises:
        ConfigurationError: a list holding a name, or mixing IPv4 and IPv6.
    """
    addresses = [part.strip() for part in target.split(",") if part.strip()]
    if len(addresses) < 2:
        return addresses[0] if addresses else target
    kinds = set()
    for address in addresses:
        if address.startswith("["):
            host = address[1:].split("]", 1)[0]
        else:
            host = address.rsplit(":", 1)[0]
        try:
            kinds.add(ipaddress.ip_address(host).version)
        except ValueError:
            raise ConfigurationError(
                f"target {target!r}: a list of replicas must name IP addresses ({host!r} is "
                "not one); use dns:///<name>:<port> for a name that resolves to every replica"
            ) from None
    if len(kinds) > 1:
        raise ConfigurationError(f"target {target!r}: do not mix IPv4 and IPv6 addresses")
    return ("ipv4:" if kinds == {4} else "ipv6:") + ",".join(addresses)


def open_channel(
    target: str,
    tls: Tls | None,
    auth: KeystoneAuth | None = None,
    options: Sequence[tuple[str, Any]] = (),
    *,
    eject_hung: bool = True,
) -> grpc.aio.Channel:
    """One channel per upstream per process; reuse it for every call. Calls are balanced
    over every replica ``target`` names (:func:`channel_target`).

    ``tls``: the process's TLS material (:func:`services.common.tls.load_tls`); None =
    plaintext. With it, the channel follows the material when its files are rotated
    (:class:`~services.common.tls_channel.ReloadingChannel`). ``auth`` (keystone mode): every
    call carries the process's service token (``services/common/grpc_auth.py``).
    ``options``: channel arguments that replace those of :data:`CHANNEL_OPTIONS` with the
    same name (or add to them). ``eject_hung``: leave out a replica whose calls all fail (see
    ``_OUTLIER_DETECTION``); False for a channel that carries streams its caller ends by
    cancelling them, which would leave healthy replicas out.
    """
    interceptors = client_interceptors(auth) or None
    config = {} if eject_hung else {"grpc.service_config": json.dumps(_SERVICE_CONFIG)}
    merged = list({**dict(CHANNEL_OPTIONS), **config, **dict(options)}.items())
    target = channel_target(target)
    if tls is None:
        return grpc.aio.insecure_channel(target, options=merged, interceptors=interceptors)

    def secure() -> grpc.aio.Channel:
        return grpc.aio.secure_channel(
            target, tls.channel_credentials(), options=[*merged, *tls.channel_options()],
            interceptors=interceptors,
        )

    return ReloadingChannel(secure, tls)


def create_server(
    registrars: Sequence[Registrar],
    service_names: Sequence[str],
    host: str = "127.0.0.1",
    port: int = 0,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    tls: Tls | None = None,
    *,
    receiving: Receiving,
    process: str,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A server with the business servicers, the error interceptor, health and reflection.

    ``receiving`` bounds the bytes of requests its calls hold (``request_bytes.py``; one per
    process, ``Receiving(settings.grpc_max_receiving_bytes)``), ``process`` names it in
    refusals ("message_svc"). Both are required: no server is built without the bound.

    With ``tls`` the port accepts TLS only (and, when ``tls.require_client_cert``, only
    clients with a certificate signed by its CA); without, plaintext only.

    Returns the server (not started), the bound port (useful with ``port=0``) and the health
    servicer, whose statuses are SERVING for ``""`` and every name in ``service_names`` once
    :func:`serve` starts it.

    Raises:
        CannotListen: the port cannot be bound (in use, not allowed, no such address).
    """
    quiet_caller_gone()
    server = grpc.aio.server(
        interceptors=[
            ErrorInterceptor(), *interceptors, ReceivingInterceptor(receiving, process),
            NamesInterceptor(),
        ],
        options=SERVER_OPTIONS,
    )
    for register in registrars:
        register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    # Tried first so that a port in use is our one line, not gRPC's log line and RuntimeError.
    check_port(host, port)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, tls.server_credentials())
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise CannotListen(host, port, "gRPC cannot bind it")
    return server, bound, health_servicer


async def set_serving(
    health_servicer: health.aio.HealthServicer, service_names: Sequence[str], serving: bool
) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *service_names):
        await health_servicer.set(name, status)


async def serve(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    service_names: Sequence[str],
    grace: float,
    on_stop: Callable[[], Any] | None = None,
    announce: str | None = None,
    watch: StoreWatch | None = None,
    stopping: Callable[[], None] | None = None,
) -> None:
    """Start, report SERVING, and run until SIGTERM/SIGINT; then drain and stop.

    ``announce`` is printed on stdout once the server is ready, for the process supervisor.
    ``stopping`` is called once stopping begins, before the server's grace.
    """
    if not _started(server):
        await server.start()
        await health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    if watch is None or watch.serving:
        await set_serving(health_servicer, service_names, True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Only now: a supervisor may send SIGTERM as soon as it reads the line (printing first
    # let such a SIGTERM kill the process before it could drain).
    if announce:
        print(announcement(announce), flush=True)
    waiter = asyncio.ensure_future(server.wait_for_termination())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("stopping (grace %.1fs)", grace)
    if watch is not None:
        await bounded_close(watch.stop, CLOSE_TIMEOUT,
                            f"the store watch of {', '.join(service_names)}")
    await set_serving(health_servicer, service_names, False)
    await health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.NOT_SERVING)
    if stopping is not None:
        stopping()
    await server.stop(grace)
    if on_stop is not None:
        await bounded_close(on_stop, CLOSE_TIMEOUT, ", ".join(service_names))
    stopper.cancel()
    waiter.cancel()


# Seconds a service's own clean-up (stores, channels, background tasks) may take after its
# server stopped; past that the process goes on stopping and says what hung.
CLOSE_TIMEOUT = 10.0


async def bounded_close(close: Callable[[], Any], limit: float, what: str) -> None:
    """Run a clean-up, but never let a stuck one hold a stopping process forever: after
    ``limit`` seconds it is cancelled and left to end in the background, and this returns.

    (Not ``asyncio.wait_for``: after its time limit it waits for the cancelled clean-up to
    end, so a clean-up that loses its cancellation, say a retry loop that takes a driver's
    error for a failure to retry, would hold it forever.)"""
    result = close()
    if not asyncio.iscoroutine(result):
        return
    task = asyncio.ensure_future(result)
    try:
        done, _ = await asyncio.wait({task}, timeout=limit)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if done:
        task.result()
        return
    stuck = "\n".join(_task_stack(t) for t in asyncio.all_tasks() if not t.done())
    log.error("clean-up of %s did not finish within %.0fs; stopping anyway. Tasks:\n%s",
              what, limit, stuck)
    task.cancel()
    _ABANDONED.add(task)
    task.add_done_callback(_abandoned)


# Clean-ups given up on, until they end (a task nothing references may be destroyed pending).
_ABANDONED: set[asyncio.Task[Any]] = set()


def _abandoned(task: asyncio.Task[Any]) -> None:
    _ABANDONED.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("clean-up given up on failed later: %r", task.exception())


def _task_stack(task: asyncio.Task[Any]) -> str:
    frames = task.get_stack()
    where = " <- ".join(f"{f.f_code.co_name}@{f.f_code.co_filename.rsplit('/', 1)[-1]}:"
                        f"{f.f_lineno}" for f in reversed(frames))
    return f"  {task.get_name()}: {where or task.get_coro()!r}"


def service_main(name: str, run: Callable[[Settings], Coroutine[Any, Any, None]]) -> None:
    """A service process's entry (``python -m services.<svc>.server``): :func:`run_service`
    with the settings of the environment."""
    sys.exit(run_service(name, run))


def run_service(
    name: str,
    run: Callable[[Settings], Coroutine[Any, Any, None]],
    settings: Settings | None = None,
) -> int:
    """Run the process ``name`` (``queue_svc``) with logging and uvloop set up; its exit status.

    ``settings``: None = read from the environment. A failed start (bad settings, a port that
    cannot be bound, a store that cannot be reached) is one line on stderr and a non-zero
    status (``services/common/startup.py``), never a traceback.
    """
    exposition: Exposition | None = None
    try:
        if settings is None:
            settings = Settings.load()
        setup_logging(settings.log_level, settings.log_format)
        # Before this process starts threads of its own (metrics, gRPC's poller).
        affinity.apply(name, settings)
        tracing.setup(name)
        exposition = serve_metrics(name, settings)
        install_event_loop_policy()
        asyncio.run(run(settings))
    except Exception as exc:
        status = report(exc, name)
        if status is None:
            raise
        return status
    finally:
        if exposition is not None:
            exposition.stop()
        tracing.shutdown()
    return 0


# Where this process serves its metrics ("host:port"), once serve_metrics bound the port;
# added to the READY line.
_metrics_address: str | None = None


def serve_metrics(process: str, settings: Settings) -> Exposition | None:
    """Serve the metrics of ``process`` (``message_svc``) on its metrics port, when it has
    one and ``settings.metrics`` is on; the server, to stop.

    Raises:
        CannotListen: the port cannot be bound.
    """
    global _metrics_address
    setting = METRICS_PORT.get(process)
    if not settings.metrics or setting is None:
        return None
    port = getattr(settings, setting)
    check_port(settings.host, port, setting)
    exposition = Exposition(settings.host, port)
    try:
        bound = exposition.start()
    except OSError as exc:
        raise CannotListen(settings.host, port, os_reason(exc), setting) from None
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    _metrics_address = f"{host}:{bound}"
    log.debug("metrics at http://%s/metrics", _metrics_address)
    return exposition


def announcement(line: str) -> str:
    """The READY line, with the metrics address when this process serves metrics."""
    if _metrics_address is None:
        return line
    return f"{line} metrics=http://{_metrics_address}/metrics"


def setup_logging(level: str, log_format: str = "text") -> None:
    """Logging of a process (``services/common/logs.py``).

    Raises:
        ConfigurationError: an unknown ``log_format``.
    """
    logs.setup_logging(level, log_format)


def install_event_loop_policy() -> None:
    """uvloop where available: noticeably cheaper per call than the default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# Servers start_server has started (serve must not start them again).
_STARTED: weakref.WeakSet[grpc.aio.Server] = weakref.WeakSet()


def _started(server: grpc.aio.Server) -> bool:
    return server in _STARTED


async def start_server(running: Running) -> Running:
    """Start a built server, report SERVING (what ``start`` functions call last) and watch
    its store (``running.store_check``)."""
    await running.server.start()
    _STARTED.add(running.server)
    await set_serving(running.health, running.service_names, True)
    await running.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    if running.store_check is not None:
        running.watch = StoreWatch(running.health, running.service_names, running.store_check,
                                   running.store_name)
        running.watch.start()
    return running
