"""OpenTelemetry tracing, off unless the standard ``OTEL_*`` environment asks for it.

``OTEL_TRACES_EXPORTER`` picks the exporter: ``otlp`` (over gRPC, or HTTP with
``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``; the endpoint from ``OTEL_EXPORTER_OTLP_ENDPOINT``
or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), ``console`` (spans as JSON on stderr; stdout
carries the READY line) or ``none`` (the default). ``OTEL_SERVICE_NAME`` names the process
(default: ``api_gateway``, ``queue_svc``, ``message_svc``, ``notifier_svc``); every other
``OTEL_*`` variable the SDK reads (batch delays, sampling, resource attributes, headers) works
as documented by OpenTelemetry. The SDK is an optional dependency (``pip install
'zaqar-grpc[otel]'``), imported only when tracing is on.

When off, :data:`ENABLED` is false and every hook is one test of it: nothing is imported,
allocated or propagated. When on:

- the gateway starts a SERVER span per HTTP request (named ``METHOD <route template>``),
  continuing the caller's W3C ``traceparent``/``tracestate`` (``api_gateway/middleware.py``);
- every unary gRPC call a process makes is a CLIENT span whose context travels in the call's
  metadata (``metrics._InstrumentedCall``), and every unary method served is a SERVER span
  continuing it (``errors._wrap_unary``);
- a notification keeps the context of the call that handed its message over (in the
  delivery's stored options, ``_traceparent``), and each webhook attempt is a CLIENT span
  whose ``traceparent`` goes to the subscriber as an HTTP header.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Final

from services.common.config import ConfigurationError

log = logging.getLogger(__name__)

ENABLED = False
EXPORTERS: Final = ("otlp", "console", "none")
# The key of a delivery's options that carries the trace context of its hand-over.
DELIVERY_KEY: Final = "_traceparent"

_provider: Any = None
_tracer: Any = None


def setup(service: str, environ: Mapping[str, str] | None = None) -> None:
    """Turn tracing on for this process when ``OTEL_TRACES_EXPORTER`` asks for it.

    Raises:
        ConfigurationError: an exporter we do not ship, or OpenTelemetry not installed.
    """
    global ENABLED, _provider, _tracer
    env = os.environ if environ is None else environ
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower() or "none"
    if exporter_name == "none":
        return
    if exporter_name not in EXPORTERS:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={exporter_name!r} is not supported "
            f"(supported: {', '.join(EXPORTERS)})"
        )
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={exporter_name} needs the OpenTelemetry SDK, which cannot be "
            f"imported ({exc}); install it: pip install 'zaqar-grpc[otel]'"
        ) from None
    exporter: Any
    if exporter_name == "console":
        exporter = ConsoleSpanExporter(out=sys.stderr)
    else:
        exporter = _otlp_exporter(env)
    name = env.get("OTEL_SERVICE_NAME") or service
    _provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    _provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(_provider)
    _tracer = trace.get_tracer("zaqar_grpc")
    ENABLED = True


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip().lower()
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        elif protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
        else:
            raise ConfigurationError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported "
                "(supported: grpc, http/protobuf)"
            )
    except ImportError as exc:
        raise ConfigurationError(
            f"the OTLP exporter ({protocol}) cannot be imported ({exc}); install it: "
            "pip install 'zaqar-grpc[otel]'"
        ) from None
    return OTLPSpanExporter()


def shutdown() -> None:
    """Export what is still buffered (at the end of the process)."""
    global ENABLED
    if _provider is not None:
        _provider.shutdown()
    ENABLED = False


class Span:
    """A started span, current in this task's context until :meth:`end`."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Any, token: Any) -> None:
        self._span, self._token = span, token

    def rename(self, name: str) -> None:
        self._span.update_name(name)

    def end(self, error: str | None = None, **attributes: Any) -> None:
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        for key, value in attributes.items():
            self._span.set_attribute(key, value)
        if error is not None:
            self._span.set_status(Status(StatusCode.ERROR, error))
        self._span.end()
        if self._token is not None:
            context.detach(self._token)


def server_span(name: str, carrier: Iterable[tuple[str, Any]]) -> Span:
    """A SERVER span continuing the trace context of ``carrier`` (HTTP headers or gRPC
    metadata as pairs), made current."""
    from opentelemetry import context, propagate, trace

    headers = {key.lower(): value for key, value in carrier
               if key.lower() in ("traceparent", "tracestate")}
    parent = propagate.extract(headers)
    span = _tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER)
    return Span(span, context.attach(trace.set_span_in_context(span, parent)))


def client_span(name: str, traceparent: str | None = None) -> tuple[Span, list[tuple[str, str]]]:
    """A CLIENT span, and the headers that carry it to the callee: under the current span,
    or in the trace of ``traceparent`` when given (a delivery attempt, made long after its
    hand-over, continues the trace stored with it)."""
    from opentelemetry import propagate, trace

    parent = propagate.extract({"traceparent": traceparent}) if traceparent else None
    span = _tracer.start_span(name, context=parent, kind=trace.SpanKind.CLIENT)
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return Span(span, None), list(carrier.items())


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, to store with work done later."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")
