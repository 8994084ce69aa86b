"""The gateway's ASGI application: ``create_app(settings)``.

Composition only: the header middleware, the upstream channels (opened and closed with the
ASGI lifespan), the routes and the error handlers.
"""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

from services.api_gateway.errors import JSON, App, register_error_handlers
from services.api_gateway.middleware import ZaqarHeaders
from services.api_gateway.routes import add_routes
from services.api_gateway.upstream import Upstreams
from services.common.config import Settings
from services.common.tls import load_tls


class UpstreamLifespan:
    """Opens the gRPC channels at startup and closes them at shutdown (when the app owns them)."""

    def __init__(self, up: Upstreams, owned: bool) -> None:
        self.up = up
        self.owned = owned

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        self.up.open()

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        if self.owned:
            await self.up.close()


def create_app(settings: Settings, up: Upstreams | None = None) -> App:
    """The HTTP app; ``up``: channels shared with the WebSocket server, closed by their owner
    (by default the app opens its own, with TLS when the ``tls_*`` settings say so)."""
    owned = up is None
    up = Upstreams(settings, load_tls(settings, serving=False)) if up is None else up
    middleware: list[Any] = [UpstreamLifespan(up, owned), ZaqarHeaders(settings.signed_url_secret)]
    app: App = falcon.asgi.App(media_type=JSON, middleware=middleware)
    # Zaqar's query-string parsing: a blank value is as good as absent, "a,b" is left whole.
    app.req_options.keep_blank_qs_values = False
    app.req_options.strip_url_path_trailing_slash = False
    add_routes(app, up, settings.signed_url_secret)
    register_error_handlers(app)
    return app
