"""``/healthz`` and ``/readyz``: the gateway's liveness and readiness probes (Kubernetes), and
``/metrics``: its Prometheus metrics (``services/common/metrics.py``).

All three are public (``middleware.PUBLIC_ROUTES``): no Zaqar headers, no token, so an orchestrator
can call them in every auth mode. Zaqar's own ``/v2/ping`` and ``/v2/health`` keep their
contract (headers required, ``/v2/health`` admin only).

- ``GET /healthz``: 200 as long as the process answers HTTP; it asks nothing of the services
  behind, so a store or service outage never gets the gateway restarted.
- ``GET /readyz``: 200 when every upstream service (queue_svc, message_svc, notifier_svc)
  reports SERVING on its gRPC health service within ``READY_TIMEOUT`` seconds; else 503 with
  Zaqar's error body naming the upstreams that do not serve.
- ``GET /metrics``: the text exposition of the gateway's metrics, in the format the scraper's
  ``Accept`` asks for (Prometheus text or OpenMetrics). Only with ``metrics`` on (the default).
"""

from __future__ import annotations

import asyncio
from typing import Final

import falcon.asgi
import orjson
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from services.api_gateway.errors import App, unavailable
from services.api_gateway.middleware import METRICS_PATH
from services.api_gateway.routes._common import Resource
from services.api_gateway.upstream import Upstreams

# Seconds /readyz waits for the upstreams' health answers: below a probe's usual timeout.
READY_TIMEOUT: Final = 2.0


class Healthz:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.status = 200
        resp.data = b'{"alive": true}'

    on_head = on_get


class Readyz(Resource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        try:
            serving = await asyncio.wait_for(self.up.serving(), READY_TIMEOUT)
        except TimeoutError:
            raise unavailable(
                f"Not serving: the upstream health checks took over {READY_TIMEOUT:g} s."
            ) from None
        down = sorted(name for name, ok in serving.items() if not ok)
        if down:
            raise unavailable(f"Not serving: {', '.join(down)}.")
        resp.status = 200
        resp.data = orjson.dumps({"ready": True, "upstreams": serving})

    on_head = on_get


class Metrics:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        encode, content_type = choose_encoder(req.get_header("Accept") or "")
        # Collecting walks every series: off the event loop (the registry is thread-safe).
        resp.data = await asyncio.to_thread(encode, REGISTRY)
        resp.content_type = content_type
        resp.status = 200


def add_probe_routes(app: App, up: Upstreams, metrics: bool = True) -> None:
    app.add_route("/healthz", Healthz())
    app.add_route("/readyz", Readyz(up))
    if metrics:
        app.add_route(METRICS_PATH, Metrics())
