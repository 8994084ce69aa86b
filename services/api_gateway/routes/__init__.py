"""The route table of the Zaqar v2 HTTP API."""

from __future__ import annotations

from services.api_gateway.errors import App
from services.api_gateway.routes.catalog import (
    FlavorCollection,
    FlavorItem,
    PoolCollection,
    PoolItem,
)
from services.api_gateway.routes.claims import ClaimCollection, ClaimItem
from services.api_gateway.routes.home import Health, Home, Ping, Versions
from services.api_gateway.routes.messages import MessageCollection, MessageItem
from services.api_gateway.routes.queues import (
    QueueCollection,
    QueueItem,
    QueuePurge,
    QueueShare,
    QueueStats,
)
from services.api_gateway.routes.subscriptions import (
    SubscriptionCollection,
    SubscriptionConfirm,
    SubscriptionItem,
)
from services.api_gateway.upstream import Upstreams

QUEUE = "/v2/queues/{queue_name}"


def add_routes(app: App, up: Upstreams, signed_url_secret: str = "") -> None:
    app.add_route("/", Versions())
    app.add_route("/v2/", Home())
    app.add_route("/v2/ping", Ping(up))
    app.add_route("/v2/health", Health(up))
    app.add_route("/v2/pools", PoolCollection(up))
    app.add_route("/v2/pools/{pool_name}", PoolItem(up))
    app.add_route("/v2/flavors", FlavorCollection(up))
    app.add_route("/v2/flavors/{flavor_name}", FlavorItem(up))
    app.add_route("/v2/queues", QueueCollection(up))
    app.add_route(QUEUE, QueueItem(up))
    app.add_route(QUEUE + "/stats", QueueStats(up))
    app.add_route(QUEUE + "/purge", QueuePurge(up))
    app.add_route(QUEUE + "/share", QueueShare(up, signed_url_secret))
    app.add_route(QUEUE + "/messages", MessageCollection(up))
    app.add_route(QUEUE + "/messages/{message_id}", MessageItem(up))
    app.add_route(QUEUE + "/claims", ClaimCollection(up))
    app.add_route(QUEUE + "/claims/{claim_id}", ClaimItem(up))
    app.add_route(QUEUE + "/subscriptions", SubscriptionCollection(up))
    app.add_route(QUEUE + "/subscriptions/{subscription_id}", SubscriptionItem(up))
    app.add_route(QUEUE + "/subscriptions/{subscription_id}/confirm", SubscriptionConfirm(up))
