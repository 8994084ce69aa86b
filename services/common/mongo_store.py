"""MongoDB for any service's store: the URI, the client it configures, and the one place driver
errors are translated (each store names itself and its application name)."""

from __future__ import annotations

from collections.abc import Callable
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
from services.common.store_edge import Method, P, R, S, Wrapped, driver_edge

FORM = "mongodb://[username:password@]host[:port][,host[:port]...][/database][?option=value&...]"
DEFAULT_DATABASE = "zaqar"
# Characters MongoDB does not allow in a database name.
_BAD_DATABASE_CHARACTERS = set('/\\. "$*<>:|?\0')
# Fail fast when the server is down or silent, unless the URI says otherwise; journaled
# writes, so that an acknowledged change survives a crash of the server.
DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 2000,
    "connectTimeoutMS": 2000,
    "socketTimeoutMS": 5000,
    "w": 1,
    "journal": True,
}

Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class MongoOptions:
    """What a ``mongodb://`` URI says.

    The path names the database (default ``zaqar``). Every standard connection-string option
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
    def parse(cls, uri: str, store: str, appname: str) -> MongoOptions:
        """The options of ``uri`` for ``store`` (e.g. "message store"), whose client calls
        itself ``appname`` unless the URI names it.

        Raises: ConfigurationError, naming what is wrong.
        """
        store_uri.split(store, uri, "mongodb", FORM)
        try:
            parsed = uri_parser.parse_uri(uri)
        except (MongoConfigurationError, ValueError) as exc:
            raise store_uri.invalid(store, uri, f"{exc}; expected {FORM}") from exc
        if parsed["collection"] is not None:
            raise store_uri.invalid(
                store, uri, f"the path names the database only, not {parsed['database']}."
                f"{parsed['collection']} (a collection)"
            )
        database = parsed["database"] or DEFAULT_DATABASE
        if len(database) > 63 or _BAD_DATABASE_CHARACTERS & set(database):
            raise store_uri.invalid(
                store, uri, f"bad database name {database!r}: at most 63 characters, none of "
                "/ \\ . space \" $ * < > : | ?"
            )
        given = {name.lower() for name in parsed["options"]}
        defaults = {
            name: value for name, value in {**DEFAULTS, "appname": appname}.items()
            if name.lower() not in given
        }
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


def mongo_edge(store: str) -> Callable[[str], Callable[[Method[S, P, R]], Wrapped[S, P, R]]]:
    """The decorator factory that turns MongoDB driver errors of ``store`` into Unavailable."""
    return driver_edge(store, (PyMongoError,), describe)
