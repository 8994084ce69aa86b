"""Prometheus metrics of every process (prometheus-client, text exposition).

Where they are served: the gateway at ``GET /metrics`` on its HTTP port (a public route, like
the probes); queue_svc, message_svc and notifier_svc each on a port of their own
(``queue_metrics_port``, ``message_metrics_port``, ``notifier_metrics_port``: 9181, 9182 and
9183 by default; ``metrics = false`` serves none), by :func:`serve`, started by the process
entry (``grpc_server.run_service``), so a service built inside a test binds nothing.

What is measured, and where it is recorded (one place each):

- HTTP requests of the gateway by route (the router's URI template, never the path), method
  and status, and their latency (``api_gateway/middleware.py``);
- WebSocket connections open and actions answered (``api_gateway/websocket/server.py``);
- gRPC calls on the server side by service, method and code, and their latency (the error
  wrapper every unary method goes through, ``errors.py``); on the client side the same, by
  the stubs :func:`instrumented` wraps;
- store operations by store, backend, operation and outcome, and their latency
  (:func:`instrument_store`, applied by ``store_registry.open_store`` to every store);
- sizes of the gateway's coalesced ``Batch`` calls (``api_gateway/coalesce.py``);
- notifier deliveries by kind and outcome, messages a filter policy kept from a subscriber,
  and the outbox depth (``notifier_svc``);
- bytes of requests a gRPC service holds, and calls refused for them
  (``request_bytes.py``);
- whether each process's store answers (``grpc_server.StoreWatch``);
- the process itself (CPU, memory, file descriptors: prometheus-client's collectors).

Label values come from bounded sets only (routes, methods, codes, operation names, exception
class names): there is no per-queue, per-project or per-client label, so the number of series
does not grow with the tenants. Recording costs a dictionary look-up and a few additions per
request; the labelled children of the hot paths are looked up once and kept.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import grpc
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from services.common import tracing
from services.common.logs import REQUEST_ID, REQUEST_ID_KEY

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds; from half a millisecond (a store round trip here) to the longest deadline.
LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

HTTP_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
)
NO_ROUTE: Final = "none"  # the label of a request no route matched
OTHER: Final = "other"  # the label of a method outside HTTP_METHODS

HTTP_REQUESTS: Final = Counter(
    "zaqar_http_requests", "HTTP requests answered by the gateway.",
    ["route", "method", "status"],
)
HTTP_SECONDS: Final = Histogram(
    "zaqar_http_request_duration_seconds",
    "Time from a request's arrival at the gateway's app to its answer.",
    ["route", "method"], buckets=LATENCY_BUCKETS,
)
WS_CONNECTIONS: Final = Gauge(
    "zaqar_websocket_connections", "WebSocket connections open on the gateway."
)
HTTP_CONNECTIONS: Final = Gauge(
    "zaqar_http_connections", "HTTP connections open on the gateway (those refused not counted)."
)
HTTP_REFUSED: Final = Counter(
    "zaqar_http_connections_refused",
    "HTTP connections answered 503 and closed: the gateway held http_max_connections.",
)
RECEIVING_BYTES: Final = Gauge(
    "zaqar_receiving_bytes",
    "Bytes of requests the gateway holds before they are whole, over its HTTP and WebSocket "
    "connections (bounded by http_max_receiving_bytes).",
)
GRPC_RECEIVING_BYTES: Final = Gauge(
    "zaqar_grpc_receiving_bytes",
    "Bytes of requests a gRPC service process holds for the unary calls it is serving "
    "(bounded by grpc_max_receiving_bytes; request_bytes.py).",
)
GRPC_RECEIVING_REFUSED: Final = Counter(
    "zaqar_grpc_requests_refused",
    "gRPC calls refused UNAVAILABLE (reason RECEIVING_FULL) before their method ran: the "
    "process held grpc_max_receiving_bytes of requests.",
)
LONG_POLLS_WAITING: Final = Gauge(
    "zaqar_long_polls_waiting",
    "Long-poll claims and listings (wait > 0) held in this process: a gateway's over HTTP and "
    "WebSocket (bounded by max_waiting), or a message_svc's, streaming pulls included "
    "(bounded by message_max_waiting).",
)
HTTP_OVERFULL: Final = Counter(
    "zaqar_http_requests_cut_off",
    "HTTP requests answered 503 while they were received, their connections closed: the "
    "gateway was receiving http_max_receiving_bytes of requests at once.",
)
HTTP_REQUEST_TIMEOUTS: Final = Counter(
    "zaqar_http_request_timeouts",
    "HTTP connections closed for not sending a whole request within http_request_timeout; "
    "begun: a part of a request had come (answered 408), idle: nothing had.",
    ["request"],
)
WS_CUT_OFF: Final = Counter(
    "zaqar_websocket_connections_cut_off",
    "WebSocket connections closed with 1013 while a frame was received: the gateway was "
    "receiving http_max_receiving_bytes of requests at once.",
)
WS_REQUESTS: Final = Counter(
    "zaqar_websocket_requests", "WebSocket requests answered by the gateway.",
    ["action", "status"],
)
GRPC_SERVER_HANDLED: Final = Counter(
    "grpc_server_handled", "gRPC calls completed by this server.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_SERVER_SECONDS: Final = Histogram(
    "grpc_server_handling_seconds", "Time this server took to answer a gRPC call.",
    ["grpc_service", "grpc_method"], buckets=LATENCY_BUCKETS,
)
GRPC_CLIENT_HANDLED: Final = Counter(
    "grpc_client_handled", "gRPC calls this process made to other services, completed.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_CLIENT_SECONDS: Final = Histogram(
    "grpc_client_handling_seconds", "Time a gRPC call to another service took, as seen here.",
    ["grpc_service", "grpc_method"], buckets=LATENCY_BUCKETS,
)
STORE_OPERATIONS: Final = Counter(
    "zaqar_store_operations",
    "Operations on a store; outcome is ok or the class name of the error raised.",
    ["store", "backend", "operation", "outcome"],
)
STORE_SECONDS: Final = Histogram(
    "zaqar_store_operation_seconds", "Time an operation on a store took.",
    ["store", "backend", "operation"], buckets=LATENCY_BUCKETS,
)
STORE_PERSISTENT: Final = Gauge(
    "zaqar_store_persistent",
    "Redis stores: 1 when their server appends every write to its file (appendonly yes, on "
    "every master of a cluster), so a restart of it keeps what was acknowledged; 0 when not. "
    "Absent when the settings cannot be read, and for the other stores.",
    ["store"],
)
STORE_EVICTS: Final = Gauge(
    "zaqar_store_evicts",
    "Redis stores: 1 when their server (or a master of a cluster) may evict any key when its "
    "memory is full (maxmemory-policy allkeys-*), so drop what was acknowledged; 0 when not "
    "(noeviction refuses writes instead). Absent when the settings cannot be read, and for the "
    "other stores.",
    ["store"],
)
RATE_STORE_ERRORS: Final = Counter(
    "zaqar_rate_limit_store_errors",
    "Gateway: requests that went through unlimited because the shared rate limit's Redis "
    "(project_rate_store) did not answer in time or failed; error is the exception's class.",
    ["error"],
)
EXCHANGE_STREAMS_LEFT: Final = Counter(
    "zaqar_exchange_streams_left",
    "Gateway: MessagesInternal.Exchange streams to message_svc left for a new one because the "
    "replica seemed to hang: silent (nothing answered while a request's deadline passed) or "
    "unwritten (a request could not be written within its deadline).",
    ["why"],
)
FILES_GENERATION: Final = Gauge(
    "zaqar_files_generation",
    "Files this process reads again while it runs (files: tls, secrets): the generation in "
    "use, 0 as read at start and one more at each change taken.",
    ["files"],
)
FILES_REFUSED: Final = Gauge(
    "zaqar_files_refused",
    "1 while those files changed but cannot be used (unreadable, or they fail the checks made "
    "at start): the process goes on with the ones in use, and its log says why; 0 otherwise.",
    ["files"],
)
PENDING_RANGES_SETTLED: Final = Counter(
    "zaqar_store_pending_ranges_settled",
    "MongoDB message stores: seq ranges of posts (and dead-letter moves) a sweep settled for "
    "their writer, which listings had stopped below: why is writer_gone (its message_svc not "
    "heard from for 15 s, or stopped) or expired (60 s old); and posts that found their range "
    "settled so once they went on, and moved their messages to the end of the queue "
    "(why=moved).",
    ["why"],
)
STORE_REACHABLE: Final = Gauge(
    "zaqar_store_reachable",
    "1 while the store of this process answers its health probe, 0 while it does not.",
    ["store"],
)
BATCH_SIZE: Final = Histogram(
    "zaqar_coalesced_batch_size",
    "Calls the gateway sent to message_svc in one Batch call.",
    buckets=BATCH_BUCKETS,
)
DELIVERIES: Final = Counter(
    "zaqar_notifier_deliveries",
    "Notification delivery attempts by kind and outcome (delivered, retry, gave_up, "
    "no_sender, pending: the store could not be updated, the delivery comes back).",
    ["kind", "outcome"],
)
FILTERED_MESSAGES: Final = Counter(
    "zaqar_notifier_filtered_messages",
    "Messages not delivered to a subscriber because its filter policy did not match them, "
    "by subscriber scheme (http, https, mailto, trust+http, trust+https).",
    ["scheme"],
)
OUTBOX_DEPTH: Final = Gauge(
    "zaqar_notifier_outbox_depth",
    "Deliveries waiting in the notifier's outbox (all replicas), sampled periodically.",
)


# Exposition ----------------------------------------------------------------------------------


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric of this process, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class Exposition:
    """The metrics port of a gRPC service: prometheus-client's HTTP server, on a thread of
    its own (it never runs on the event loop)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server: Any = None

    def start(self) -> int:
        """Bind and serve; the bound port (useful with port 0).

        Raises:
            OSError: the port cannot be bound.
        """
        server, _thread = start_http_server(self.port, addr=self.host)
        self._server = server
        bound: int = server.server_address[1]
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# gRPC ----------------------------------------------------------------------------------------


def split_method(full: str) -> tuple[str, str]:
    """``/zaqar.v2.Messages/Post`` -> (``zaqar.v2.Messages``, ``Post``)."""
    _, _, rest = full.partition("/")
    service, _, method = rest.partition("/")
    return service, method


class MethodCalls:
    """Records the calls of one gRPC method on one side, server or client (the labelled
    children are looked up once each)."""

    __slots__ = ("_codes", "_handled", "_method", "_seconds", "_service")

    def __init__(self, full_method: str, handled: Counter, seconds: Histogram) -> None:
        self._service, self._method = split_method(full_method)
        self._handled = handled
        self._seconds = seconds.labels(self._service, self._method)
        self._codes: dict[str, Any] = {}

    @property
    def name(self) -> str:
        """``zaqar.v2.Messages/Post``."""
        return f"{self._service}/{self._method}"

    @property
    def method(self) -> str:
        """``Post``."""
        return self._method

    def done(self, code: str, seconds: float) -> None:
        counter = self._codes.get(code)
        if counter is None:
            counter = self._codes[code] = self._handled.labels(
                self._service, self._method, code
            )
        counter.inc()
        self._seconds.observe(seconds)


def server_calls(full_method: str) -> MethodCalls:
    """The calls one server method answers."""
    return MethodCalls(full_method, GRPC_SERVER_HANDLED, GRPC_SERVER_SECONDS)


def code_name(code: Any) -> str:
    """A status code's name from a :class:`grpc.StatusCode` or its integer value."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    return "UNKNOWN"


class _InstrumentedCall:
    """A unary-unary multicallable that records each call it makes (client side)."""

    __slots__ = ("__weakref__", "_call", "_calls")

    def __init__(self, call: Any, full_method: str) -> None:
        self._call = call
        self._calls = MethodCalls(full_method, GRPC_CLIENT_HANDLED, GRPC_CLIENT_SECONDS)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request_id = REQUEST_ID.get()
        if request_id is not None:
            # The request this call works for goes with it (``logs.py``), after any metadata
            # of the caller's own.
            metadata = kwargs.get("metadata")
            entry = (REQUEST_ID_KEY, request_id)
            kwargs["metadata"] = (entry,) if metadata is None else (*metadata, entry)
        span = None
        if tracing.ENABLED:
            span, carrier = tracing.client_span(self._calls.name)
            metadata = kwargs.get("metadata")
            kwargs["metadata"] = tuple(carrier) if metadata is None else (*metadata, *carrier)
        start = time.perf_counter()
        code = "OK"
        try:
            return await self._call(*args, **kwargs)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except BaseException:
            code = "UNKNOWN"
            raise
        finally:
            self._calls.done(code, time.perf_counter() - start)
            if span is not None:
                span.end(None if code == "OK" else code, **{"rpc.grpc.status_code": code})


def instrumented(stub: T) -> T:
    """``stub`` (a generated gRPC stub) with each unary-unary method recording its calls;
    streaming methods are left as they are. Returns the same object."""
    for name, value in list(vars(stub).items()):
        if isinstance(value, grpc.aio.UnaryUnaryMultiCallable):
            method = getattr(value, "_method", b"")
            full = method.decode() if isinstance(method, bytes) else str(method)
            if not full:
                full = f"/{type(stub).__name__.removesuffix('Stub')}/{name}"
            setattr(stub, name, _InstrumentedCall(value, full))
    return stub


# Stores --------------------------------------------------------------------------------------

# Set while an instrumented store operation runs in this task, so that a store method calling
# another of its own methods is one operation, not two.
_IN_STORE_OPERATION: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "in_store_operation", default=False
)
# Lifecycle methods, not operations.
_NOT_OPERATIONS: Final = frozenset({"open", "close", "aclose"})


def instrument_store(store: T, name: str, backend: str) -> T:
    """Record every public coroutine method of ``store`` as an operation of the store
    ``name`` (``message``) on ``backend`` (the URI scheme). Returns the same object."""
    for attribute, _ in inspect.getmembers(type(store), inspect.iscoroutinefunction):
        if attribute.startswith("_") or attribute in _NOT_OPERATIONS:
            continue
        bound = getattr(store, attribute)
        setattr(store, attribute, _timed_operation(bound, name, backend, attribute))
    return store


def _timed_operation(
    operation: Callable[..., Any], store: str, backend: str, name: str
) -> Callable[..., Any]:
    seconds = STORE_SECONDS.labels(store, backend, name)
    outcomes: dict[str, Any] = {}

    def count(outcome: str) -> None:
        counter = outcomes.get(outcome)
        if counter is None:
            counter = outcomes[outcome] = STORE_OPERATIONS.labels(store, backend, name, outcome)
        counter.inc()

    @functools.wraps(operation)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        if _IN_STORE_OPERATION.get():
            return await operation(*args, **kwargs)
        token = _IN_STORE_OPERATION.set(True)
        start = time.perf_counter()
        outcome = "ok"
        try:
            return await operation(*args, **kwargs)
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            _IN_STORE_OPERATION.reset(token)
            count(outcome)
            seconds.observe(time.perf_counter() - start)

    return timed
