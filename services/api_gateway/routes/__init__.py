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
from services.api_gateway.routes.redrive import QueueRedrive
from services.api_gateway.routes.subscriptions import (
    SubscriptionCollection,
    SubscriptionConfirm,
    SubscriptionItem,
)
from services.api_gateway.routes.topics import (
    TopicCollection,
    TopicItem,
    TopicMessages,
    TopicPurge,
    TopicStats,
)
from services.api_gateway.upstream import Upstreams
from services.common.signing import Keys

QUEUE = "/v2/queues/{queue_name}"
# A topic's name takes the queue's place: same rule, and the subscription resources serve both.
TOPIC = "/v2/topics/{queue_name}"


def add_routes(app: App, up: Upstreams, keys: Keys | None = None) -> None:
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
    app.add_route(QUEUE + "/share", QueueShare(up, keys or Keys()))
    app.add_route(QUEUE + "/redrive", QueueRedrive(up))
    app.add_route(QUEUE + "/messages", MessageCollection(up))
    app.add_route(QUEUE + "/messages/{message_id}", MessageItem(up))
    app.add_route(QUEUE + "/claims", ClaimCollection(up))
    app.add_route(QUEUE + "/claims/{claim_id}", ClaimItem(up))
    app.add_route(QUEUE + "/subscriptions", SubscriptionCollection(up))
    app.add_route(QUEUE + "/subscriptions/{subscription_id}", SubscriptionItem(up))
    app.add_route(QUEUE + "/subscriptions/{subscription_id}/confirm", SubscriptionConfirm(up))
    app.add_route("/v2/topics", TopicCollection(up))
    app.add_route(TOPIC, TopicItem(up))
    app.add_route(TOPIC + "/stats", TopicStats(up))
    app.add_route(TOPIC + "/purge", TopicPurge(up))
    app.add_route(TOPIC + "/messages", TopicMessages(up))
    app.add_route(TOPIC + "/subscriptions", SubscriptionCollection(up, topic=True))
    app.add_route(
        TOPIC + "/subscriptions/{subscription_id}", SubscriptionItem(up, topic=True)
    )
    app.add_route(
        TOPIC + "/subscriptions/{subscription_id}/confirm", SubscriptionConfirm(up, topic=True)
    )
