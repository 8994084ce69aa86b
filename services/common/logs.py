"""Logging of every process: the request id of the current task, and the two log formats.

The request id (``req-<uuid4>``, OpenStack's ``x-openstack-request-id``) lives in the
:data:`REQUEST_ID` context variable of the task that handles a request:

- the gateway sets it per HTTP request (``api_gateway/middleware.py``) and per WebSocket
  request (``api_gateway/websocket/server.py``), keeping a well-formed one the caller sent
  (:func:`request_id_from`);
- every unary client call sends it as the ``x-openstack-request-id`` metadata
  (``metrics._InstrumentedCall``, the one wrapper of every stub method);
- every gRPC server sets it from that metadata before the method runs
  (``errors.ErrorInterceptor``), so the calls a service makes while answering carry it on.

:class:`RequestIdFilter` puts it on every log record a handler of :func:`setup_logging`
writes (``-`` when there is none); the text format shows it in brackets, the JSON format
(:class:`JsonFormatter`) as ``request_id``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import sys
import time
import uuid
from typing import Any, Final

import orjson

from services.common.config import ConfigurationError

# The gRPC metadata key (and HTTP header, any case) that carries a request id.
REQUEST_ID_KEY: Final = "x-openstack-request-id"
# The metadata of a ``MessagesInternal.Batch`` call with the request id of each of its items,
# in their order (comma-separated, empty for an item without one): the gateway's coalescer sends
# it, message_svc's BatchRunner reads it.
BATCH_REQUEST_IDS_KEY: Final = "x-openstack-request-ids"
# The request id of the request the current task works for; None outside of one.
REQUEST_ID: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar(
    "request_id", default=None
)
# What oslo.middleware's request_id middleware accepts from a caller: "req-" and a UUID in
# lower-case hex, dashed.
_WELL_FORMED: Final = re.compile(
    r"req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
LOG_FORMATS: Final = ("text", "json")
# The logger of the gateway's access log: one line per answered HTTP request.
ACCESS_LOGGER: Final = "zaqar.access"


def new_request_id() -> str:
    return "req-" + str(uuid.uuid4())


def well_formed(value: str) -> bool:
    """Whether ``value`` is a request id as oslo.middleware accepts one from a caller."""
    return len(value) == 40 and _WELL_FORMED.fullmatch(value) is not None


def request_id_from(given: str | None) -> str:
    """``given`` (a caller's ``X-OpenStack-Request-ID``) when it is well formed (``req-`` and
    a lower-case dashed UUID, as oslo.middleware takes it), else a new id."""
    if given is not None and well_formed(given):
        return given
    return new_request_id()


def detached() -> contextvars.Context:
    """A copy of the current context without a request id: for a background task that a
    request happens to start but that outlives it, or serves many."""
    context = contextvars.copy_context()
    context.run(REQUEST_ID.set, None)
    return context


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the current task's, or ``-``) to every record it sees; a record
    that already has one (``extra={"request_id": ...}``) keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get() or "-"
        return True


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT`, with the time of day formatted once per second rather than once
    per line (the access log writes a line per request)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO-8601, UTC, milliseconds), ``level``,
    ``logger``, ``message``, ``request_id`` (null when none), ``exception`` (the traceback
    text) when there is one, and the keys of a record's ``fields`` (``extra={"fields":
    {...}}``: the access log's)."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        entry: dict[str, Any] = {
            "time": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": None if request_id in (None, "-") else request_id,
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class LoopStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines of one turn of an event loop together.

    A line logged on a thread that runs an event loop waits in memory until the loop's
    current turn is over (``call_soon``); then every line waiting goes out in one write. A
    service that logs a line per request (the gateway's access log) so makes one write per
    turn of its loop rather than one per request, and the process that reads its stderr
    (``up``, a container runtime) wakes once per block.

    A line logged on any other thread is written at once, after the lines still waiting, so
    that the order is kept. :meth:`flush` (``logging.shutdown`` calls it at exit) writes what
    waits, so that nothing logged before a normal exit is lost. A write that fails is
    reported as :class:`logging.StreamHandler` reports it (``handleError``), and its lines
    are dropped, not tried again.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []
        self._last: logging.LogRecord | None = None  # of the lines waiting
        # Loops with a write of the waiting lines at the end of their turn.
        self._due: set[asyncio.AbstractEventLoop] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._waiting.append(self.format(record) + self.terminator)
            self._last = record
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._write()
                return
            if loop not in self._due:
                self._due.add(loop)
                loop.call_soon(self._end_of_turn, loop)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _write(self) -> None:
        waiting = self._waiting
        if waiting:
            text = "".join(waiting)
            waiting.clear()
            self.stream.write(text)
        super().flush()

    def _end_of_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._due.discard(loop)
        self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            try:
                self._write()
            except RecursionError:
                raise
            except Exception:
                if self._last is not None:
                    self.handleError(self._last)


def log_handler(log_format: str, stream: Any = None) -> logging.Handler:
    """A :class:`LoopStreamHandler` (stderr by default) writing ``log_format`` (``text`` or
    ``json``) with request ids.

    Raises:
        ConfigurationError: an unknown format.
    """
    if log_format not in LOG_FORMATS:
        raise ConfigurationError(
            f"log_format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}"
        )
    handler = LoopStreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(RequestIdFilter())
    formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    handler.setFormatter(formatter)
    return handler


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log at ``level`` to stderr in ``log_format``, once per process (as
    :func:`logging.basicConfig`, a process that already has a root handler keeps it).

    Raises:
        ConfigurationError: an unknown format.
    """
    handler = log_handler(log_format)
    logging.basicConfig(level=level.upper(), handlers=[handler])
