"""The MongoDB URI of the message store, the client it configures, and its error edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient, uri_parser
from pymongo.errors import (
    AutoReconnect,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)
from pymongo.errors import ConfigurationError as MongoConfigurationError

from services.common import store_uri
from services.common.store_edge import driver_edge

STORE = "message store"
FORM = "mongodb://[username:password@]host[:port][,host[:port]...][/database][?option=value&...]"
DEFAULT_DATABASE = "zaqar"
# Characters MongoDB does not allow in a database name.
_BAD_DATABASE_CHARACTERS = set('/\\. "$*<>:|?\0')
# Fail fast when the server is down or silent, unless the URI says otherwise; journaled
# writes, so that an acknowledged message survives a crash of the server.
DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 2000,
    "connectTimeoutMS": 2000,
    "socketTimeoutMS": 5000,
    "w": 1,
    "journal": True,
    "appname": "zaqar-message-svc",
}

Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class MongoOptions:
    """What a ``mongodb://`` URI says.

    The path names the database (default ``zaqar``); the store uses its ``messages``,
    ``claims`` and ``message_counters`` collections. Every standard connection-string option
    is accepted and overrides the defaults in :data:`DEFAULTS` (e.g. ``?w=majority``).
    """

    uri: str = field(repr=False)
    database: str
    hosts: tuple[str, ...]
    client_options: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"mongodb://{','.join(self.hosts)}/{self.database}"

    @classmethod
    def parse(cls, uri: str) -> MongoOptions:
        """Raises: ConfigurationError, naming what is wrong."""
        store_uri.split(STORE, uri, "mongodb", FORM)
        try:
            parsed = uri_parser.parse_uri(uri)
        except (MongoConfigurationError, ValueError) as exc:
            raise store_uri.invalid(STORE, uri, f"{exc}; expected {FORM}") from exc
        if parsed["collection"] is not None:
            raise store_uri.invalid(
                STORE, uri, f"the path names the database only, not {parsed['database']}."
                f"{parsed['collection']} (a collection)"
            )
        database = parsed["database"] or DEFAULT_DATABASE
        if len(database) > 63 or _BAD_DATABASE_CHARACTERS & set(database):
            raise store_uri.invalid(
                STORE, uri, f"bad database name {database!r}: at most 63 characters, none of "
                "/ \\ . space \" $ * < > : | ?"
            )
        given = {name.lower() for name in parsed["options"]}
        defaults = {name: value for name, value in DEFAULTS.items() if name.lower() not in given}
        hosts = tuple(f"{host}:{port}" for host, port in parsed["nodelist"])
        return cls(uri=uri, database=database, hosts=hosts, client_options=defaults)

    def client(self) -> AsyncMongoClient[Document]:
        """A client; it connects in the background and reconnects by itself."""
        return AsyncMongoClient(self.uri, **self.client_options)


def describe(exc: Exception) -> str:
    """A short reason for a MongoDB failure, safe to show a caller."""
    reasons: list[tuple[type[Exception], str]] = [
        (ServerSelectionTimeoutError, "MongoDB cannot be reached"),
        (NetworkTimeout, "MongoDB did not answer in time"),
        (ExecutionTimeout, "MongoDB did not answer in time"),
        (WTimeoutError, "MongoDB did not confirm the write in time"),
        (AutoReconnect, "the connection to MongoDB was lost"),
    ]
    for kind, text in reasons:
        if isinstance(exc, kind):
            return text
    if isinstance(exc, OperationFailure):
        return f"MongoDB refused the operation (error {exc.code})"
    return "MongoDB failed"


edge = driver_edge(STORE, (PyMongoError,), describe)
