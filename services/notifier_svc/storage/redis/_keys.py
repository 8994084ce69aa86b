"""The names of the notifier store's keys (the layout is described in
``scripts/_common.lua``), and the keys each script is given in ``KEYS``.

Every name starts with a base: the URI's prefix ``P`` on one Redis server (the names are those
the store always had), ``P:{P}`` on a Redis Cluster, where the hash tag ``{P}`` puts every key
of the store in one slot, so that each script runs on one master (docs/redis-cluster.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from services.notifier_svc.storage.base import WatchKey


class Keys:
    """Key names under one base (see the module's docstring)."""

    def __init__(self, prefix: str, cluster: bool) -> None:
        self.base = f"{prefix}:{{{prefix}}}" if cluster else prefix
        b = self.base
        self.expiry, self.due, self.lanes = f"{b}:exp", f"{b}:due", f"{b}:lanes"
        self.watched, self.feed = f"{b}:wq", f"{b}:wf"
        self.common = (self.expiry, self.due, self.lanes, self.watched)
        """The first keys of every script."""

    def subscription(self, subscription_id: str) -> str:
        return f"{self.base}:s:{subscription_id}"

    def queue_subscriptions(self, project: str, queue: str) -> str:
        return f"{self.base}:qs:{queue}:{project}"

    def queue_subscribers(self, project: str, queue: str) -> str:
        return f"{self.base}:qu:{queue}:{project}"

    def delivery(self, delivery_id: str) -> str:
        return f"{self.base}:d:{delivery_id}"

    def lane(self, subscriber: str) -> str:
        return f"{self.base}:ld:{subscriber}"

    def subscription_deliveries(self, subscription_id: str) -> str:
        return f"{self.base}:ds:{subscription_id}"

    def watchers(self, project: str, queue: str) -> str:
        return f"{self.base}:w:{queue}:{project}"

    def watch_keys(self, keys: Sequence[WatchKey]) -> list[str]:
        return [self.watchers(project, queue) for project, queue in keys]
