"""The notifier store's MongoDB settings: its name, application name and error edge."""

from __future__ import annotations

from pymongo import AsyncMongoClient

from services.common.mongo_store import Document, MongoOptions, describe, mongo_edge

__all__ = ["STORE", "Document", "MongoOptions", "connect", "describe", "edge", "parse"]

STORE = "notifier store"


def parse(uri: str) -> MongoOptions:
    """Raises: ConfigurationError, naming what is wrong."""
    return MongoOptions.parse(uri, store=STORE, appname="zaqar-notifier-svc")


def connect(options: MongoOptions) -> AsyncMongoClient[Document]:
    return options.client()


edge = mongo_edge(STORE)
