"""The gateway's ASGI application: ``create_app(settings)``.

Composition only: the request gate (limits, canonical paths, authentication, Zaqar headers),
the upstream channels and the Keystone client (opened and closed with the ASGI lifespan when
the app owns them), the routes and the error handlers.
"""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

from services.api_gateway import rate_limit
from services.api_gateway.auth import Authenticator
from services.api_gateway.errors import JSON, App, register_error_handlers
from services.api_gateway.middleware import Gate
from services.api_gateway.rate_limit import RateLimit
from services.api_gateway.routes import add_routes
from services.api_gateway.routes.probes import add_probe_routes
from services.api_gateway.upstream import Upstreams
from services.common import signing
from services.common.config import Settings
from services.common.keystone import KeystoneAuth, keystone_for
from services.common.tls import load_tls


class Lifespan:
    """Opens the gRPC channels at startup; at shutdown closes what the app owns (its channels,
    its Keystone client)."""

    def __init__(
        self, up: Upstreams, owns_up: bool, owned_auth: KeystoneAuth | None,
        owned_limit: RateLimit | None = None,
    ) -> None:
        self.up = up
        self.owns_up = owns_up
        self.owned_auth = owned_auth
        self.owned_limit = owned_limit

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        self.up.open()

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        if self.owns_up:
            await self.up.close()
        if self.owned_auth is not None:
            await self.owned_auth.aclose()
        if self.owned_limit is not None:
            await self.owned_limit.close()


def create_app(
    settings: Settings,
    up: Upstreams | None = None,
    auth: KeystoneAuth | None = None,
    limit: RateLimit | None = None,
    keys: signing.Keys | None = None,
) -> App:
    """The HTTP app. ``up``: channels shared with the WebSocket server, closed by their owner
    (by default the app opens its own, with TLS when the ``tls_*`` settings say so).
    ``auth``: in keystone mode, a token validator shared with the WebSocket server and closed
    by its owner (by default the app makes its own). ``limit``: the requests-per-project limit
    shared with the WebSocket server (by default the settings' own, if any). ``keys``: the
    pre-signed URL secrets shared with the WebSocket server, replaced when their files change
    (by default the settings' own, fixed).

    Raises:
        ConfigurationError: bad signing or rate-limit settings.
    """
    if keys is None:
        keys = signing.Keys.from_settings(settings)
    owned_limit = None
    if limit is None:  # not `or`: a limit without buckets yet has a length of 0
        limit = owned_limit = rate_limit.from_settings(settings)
    owns_up = up is None
    up = Upstreams(settings, load_tls(settings, serving=False)) if up is None else up
    owned_auth = keystone_for(settings) if auth is None else None
    keystone = auth if auth is not None else owned_auth
    if settings.auth_strategy != "keystone":
        keystone = None
    middleware: list[Any] = [
        Lifespan(up, owns_up, owned_auth, owned_limit),
        Gate(
            Authenticator(keystone, keys, settings.admin_mode),
            settings.access_log,
            limit,
        ),
    ]
    app: App = falcon.asgi.App(media_type=JSON, middleware=middleware)
    # Zaqar's query-string parsing: a blank value is as good as absent, "a,b" is left whole.
    app.req_options.keep_blank_qs_values = False
    app.req_options.strip_url_path_trailing_slash = False
    add_routes(app, up, keys)
    add_probe_routes(app, up, settings.metrics)
    register_error_handlers(app)
    return app
