"""MongoDB for any service's store: the URI, the client it configures, and the one place driver
errors are translated (each store names itself and its application name).

A URI names one server, the seeds of a replica set (``replicaSet=``), or a DNS name
(``mongodb+srv://``). Every connection-string option pymongo knows reaches the client
unchanged; only the few the stores cannot honour are refused (:func:`_cannot_honour`).
Reads that must see the latest write (claims, deletes by claim, queue versions, anything
read-modify-write) go to the primary whatever ``readPreference`` says
(:meth:`MongoOptions.database_on`); docs/operations.md ("MongoDB") lists the reads that follow it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote_plus

from pymongo import AsyncMongoClient, ReadPreference, uri_parser
from pymongo.asynchronous.database import AsyncDatabase
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

FORM = (
    "mongodb://[username:password@]host[:port][,host[:port]...][/database][?option=value&...]"
    " or mongodb+srv://[username:password@]name[/database][?option=value&...]"
)
SCHEMES = ("mongodb", "mongodb+srv")
DEFAULT_DATABASE = "zaqar"
# Characters MongoDB does not allow in a database name.
_BAD_DATABASE_CHARACTERS = set('/\\. "$*<>:|?\0')
# Fail fast when the server is down or silent, unless the URI says otherwise. A write is
# acknowledged once a majority of the replica set has it in its journal, so that an
# acknowledged message survives a crash of the server and a failover (on a single server the
# majority is that server: the cost is the journal's).
DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 2000,
    "connectTimeoutMS": 2000,
    "socketTimeoutMS": 5000,
    "w": "majority",
    "journal": True,
}

Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class MongoOptions:
    """What a ``mongodb://`` or ``mongodb+srv://`` URI says.

    The path names the database (default ``zaqar``). Every standard connection-string option
    (``replicaSet``, ``w``, ``wTimeoutMS``, ``readConcernLevel``, ``readPreference``,
    ``authSource``, ``tls``, ...) is accepted and overrides the defaults in :data:`DEFAULTS`.
    """

    uri: str = field(repr=False)
    database: str
    hosts: tuple[str, ...]
    client_options: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        scheme = self.uri.partition(":")[0].lower()
        return f"{scheme}://{','.join(self.hosts)}/{self.database}"

    @classmethod
    def parse(cls, uri: str, store: str, appname: str) -> MongoOptions:
        """The options of ``uri`` for ``store`` (e.g. "message store"), whose client calls
        itself ``appname`` unless the URI names it.

        Raises: ConfigurationError, naming what is wrong.
        """
        srv = uri[:12].lower() == "mongodb+srv:"
        parts = store_uri.split(store, uri, SCHEMES[srv], FORM)
        try:
            options, hosts, database = _srv_parts(parts) if srv else _parts(uri)
        except (MongoConfigurationError, ValueError) as exc:
            raise store_uri.invalid(store, uri, f"{exc}; expected {FORM}") from exc
        if "." in database:
            name, _, collection = database.partition(".")
            raise store_uri.invalid(
                store, uri, f"the path names the database only, not {name}.{collection} "
                "(a collection)"
            )
        database = database or DEFAULT_DATABASE
        if len(database) > 63 or _BAD_DATABASE_CHARACTERS & set(database):
            raise store_uri.invalid(
                store, uri, f"bad database name {database!r}: at most 63 characters, none of "
                "/ \\ . space \" $ * < > : | ?"
            )
        given = {name.lower(): value for name, value in options.items()}
        problem = _cannot_honour(given)
        if problem:
            raise store_uri.invalid(store, uri, problem)
        defaults = {
            name: value for name, value in {**DEFAULTS, "appname": appname}.items()
            if name.lower() not in given
        }
        try:
            # The driver checks the options together (tlsInsecure with
            # tlsAllowInvalidCertificates, ...); a client that is not used does no I/O.
            AsyncMongoClient(uri, connect=False, **defaults)
        except (MongoConfigurationError, ValueError, TypeError) as exc:
            raise store_uri.invalid(store, uri, str(exc)) from exc
        return cls(uri=uri, database=database, hosts=hosts, client_options=defaults)

    def client(self) -> AsyncMongoClient[Document]:
        """A client; it connects in the background and reconnects by itself."""
        return AsyncMongoClient(self.uri, **self.client_options)

    def database_on(
        self, client: AsyncMongoClient[Document], *, primary: bool = True
    ) -> AsyncDatabase[Document]:
        """The store's database on ``client``. With ``primary`` every read goes to the primary,
        whatever the URI's ``readPreference``; otherwise reads follow it. The write and read
        concerns are the URI's (or :data:`DEFAULTS`) either way."""
        if primary:
            return client.get_database(self.database, read_preference=ReadPreference.PRIMARY)
        return client.get_database(self.database)


def _parts(uri: str) -> tuple[Mapping[str, Any], tuple[str, ...], str]:
    """(options, ``host:port`` list, database path) of a ``mongodb://`` URI."""
    parsed = uri_parser.parse_uri(uri)
    database = parsed["database"] or ""
    if parsed["collection"] is not None:
        database = f"{database}.{parsed['collection']}"
    hosts = tuple(f"{host}:{port}" for host, port in parsed["nodelist"])
    return parsed["options"], hosts, database


def _srv_parts(parts: SplitResult) -> tuple[Mapping[str, Any], tuple[str, ...], str]:
    """(options, the DNS name, database path) of a ``mongodb+srv://`` URI. The name is not
    resolved here: the client looks it up when it connects."""
    options = uri_parser.split_options(parts.query) if parts.query else {}
    nodes = uri_parser.split_hosts(parts.netloc.rpartition("@")[2], default_port=None)
    if len(nodes) != 1 or nodes[0][1] is not None:
        raise ValueError("a mongodb+srv:// URI names one DNS name, without a port")
    return options, (nodes[0][0],), unquote_plus(parts.path[1:])


def _cannot_honour(given: Mapping[str, Any]) -> str:
    """Why the stores cannot work with the URI's options ``given`` (lower-case names, values
    as the driver parsed them), or "" when they can."""
    w = given.get("w")
    level = given.get("readconcernlevel")
    mode = given.get("readpreference", "primary")
    if w == 0:
        return ("w=0 (unacknowledged writes) is not supported: a store must know what each "
                "write did (a message claimed, deleted or not); use w=majority (the default) "
                "or w=1")
    if level == "snapshot":
        return ("readConcernLevel=snapshot is for transactions, which the stores do not use; "
                "use local, available, majority or linearizable")
    if level in ("majority", "linearizable") and w == 1:
        return (f"readConcernLevel={level} with w=1: a read would not see a write just "
                "acknowledged (a queue version just raised, a claim just taken) until a "
                "majority has it; use w=majority (the default) with it")
    if level == "linearizable" and mode != "primary":
        return (f"readConcernLevel=linearizable reads from the primary only, and "
                f"readPreference={mode} sends some reads elsewhere")
    return ""


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
    """The decorator factory that turns MongoDB driver errors of ``store`` into Unavailable.

    A call that waited out the server selection (``serverSelectionTimeoutMS``) takes the
    server as down: the calls made while another one waits for it fail at once
    (:func:`services.common.store_edge.driver_edge`)."""
    return driver_edge(store, (PyMongoError,), describe, unreachable=_unreachable)


def _unreachable(exc: Exception) -> bool:
    return isinstance(exc, ServerSelectionTimeoutError)
