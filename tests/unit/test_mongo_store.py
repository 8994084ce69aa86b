"""MongoDB URIs of every form (one server, replica-set seeds, ``mongodb+srv://``): what is
accepted, what reaches the client, what is refused, and which collections read from the
primary. Nothing here connects: building a store or a client does no I/O."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, ReadPreference
from pymongo.read_preferences import Secondary

from services.common import store_probe
from services.common.config import ConfigurationError
from services.common.mongo_store import Document, MongoOptions
from services.message_svc.storage import registry as message_registry
from services.message_svc.storage.mongodb import MongoMessageStore
from services.message_svc.storage.mongodb._collections import Collections
from services.notifier_svc.storage import registry as notifier_registry
from services.queue_svc.storage import registry as queue_registry

REPLICA_SET = (
    "mongodb://h1:27017,h2:27017,h3:27017/zaqar"
    "?replicaSet=rs0&w=majority&readConcernLevel=majority&readPreference=primary"
)


def parse(uri: str) -> MongoOptions:
    return MongoOptions.parse(uri, store="message store", appname="zaqar-test")


@pytest.fixture
async def client_of() -> AsyncIterator[Any]:
    """Builds the client of a URI the way a store does (closed afterwards)."""
    clients: list[AsyncMongoClient[Document]] = []

    def build(uri: str) -> AsyncMongoClient[Document]:
        client = parse(uri).client()
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.close()


async def test_a_replica_set_uri_reaches_the_client_whole(client_of: Any) -> None:
    # Given the URI of a three-member replica set with majority concerns
    options = parse(REPLICA_SET)
    # Then every seed is kept, and the store's database is the path
    assert options.hosts == ("h1:27017", "h2:27017", "h3:27017")
    assert (options.database, options.address) == (
        "zaqar", "mongodb://h1:27017,h2:27017,h3:27017/zaqar"
    )
    # And the client has the set's name and the URI's concerns (journaled by default)
    client = client_of(REPLICA_SET)
    assert client.options.replica_set_name == "rs0"
    assert client.options.write_concern.document == {"w": "majority", "j": True}
    assert client.options.read_concern.level == "majority"
    assert client.options.read_preference == ReadPreference.PRIMARY


async def test_writes_default_to_majority_and_journal_and_the_uri_wins(client_of: Any) -> None:
    # A URI without a write concern gets the durable one
    assert client_of("mongodb://h1,h2/zaqar?replicaSet=rs0").write_concern.document == {
        "w": "majority", "j": True
    }
    # And each part the URI gives replaces ours, leaving the other
    assert client_of("mongodb://h1/zaqar?w=1").write_concern.document == {"w": 1, "j": True}
    assert client_of("mongodb://h1/zaqar?journal=false").write_concern.document == {
        "w": "majority", "j": False
    }
    assert client_of("mongodb://h1/zaqar?w=2&wTimeoutMS=2500").write_concern.document == {
        "w": 2, "wtimeout": 2500, "j": True
    }
    # And no read concern unless the URI asks for one (the server's default, local)
    assert client_of("mongodb://h1/zaqar").read_concern.level is None


async def test_credentials_auth_source_and_tls_pass_through(client_of: Any) -> None:
    uri = ("mongodb://zaqar:p%40ss@h1,h2/zaqar?replicaSet=rs0&authSource=admin"
           "&authMechanism=SCRAM-SHA-256&tls=true")
    options = parse(uri)
    # The password is never shown
    assert "p@ss" not in repr(options) and "p%40ss" not in options.address
    client = client_of(uri)
    # pymongo has no public accessor for these two
    credentials = client.options.pool_options._credentials
    assert (credentials.username, credentials.password, credentials.source,
            credentials.mechanism) == ("zaqar", "p@ss", "admin", "SCRAM-SHA-256")
    assert client.options.pool_options._ssl_context is not None


async def test_read_preference_and_driver_options_pass_through(client_of: Any) -> None:
    client = client_of(
        "mongodb://h1,h2,h3/zaqar?replicaSet=rs0&readPreference=secondaryPreferred"
        "&maxStalenessSeconds=120&readPreferenceTags=dc:ny&readPreferenceTags="
        "&retryWrites=false&retryReads=false&localThresholdMS=30&heartbeatFrequencyMS=5000"
        "&maxPoolSize=7&serverSelectionTimeoutMS=900&appName=mine"
    )
    preference = client.options.read_preference
    assert (preference.mode, preference.max_staleness, preference.tag_sets) == (
        ReadPreference.SECONDARY_PREFERRED.mode, 120, [{"dc": "ny"}, {}]
    )
    opts = client.options
    assert (opts.retry_writes, opts.retry_reads, opts.local_threshold_ms) == (False, False, 30)
    assert (opts.heartbeat_frequency, opts.server_selection_timeout) == (5.0, 0.9)
    assert (opts.pool_options.max_pool_size, opts.pool_options.appname) == (7, "mine")


async def test_a_dns_seedlist_uri_is_accepted_without_a_lookup(client_of: Any) -> None:
    # Given a mongodb+srv:// URI for a name that does not resolve
    uri = "mongodb+srv://zaqar:pw@cluster0.example.invalid/queues?srvMaxHosts=3&w=majority"
    options = parse(uri)
    # Then it is parsed (the client looks the name up when it connects, not now)
    assert (options.hosts, options.database) == (("cluster0.example.invalid",), "queues")
    assert options.address == "mongodb+srv://cluster0.example.invalid/queues"
    assert client_of(uri).options.write_concern.document == {"w": "majority", "j": True}
    # And every service's registry and the pool probe know the scheme
    for registry, name in [(message_registry, "MongoMessageStore"),
                           (queue_registry, "MongoQueueStore"),
                           (notifier_registry, "MongoNotifierStore")]:
        assert registry.backend_class(uri).__name__ == name
    assert store_probe.check_uri(uri, "pool") == "mongodb+srv"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("mongodb://h1/zaqar?w=0", "w=0 (unacknowledged writes) is not supported"),
        ("mongodb://h1/zaqar?readConcernLevel=snapshot", "readConcernLevel=snapshot is for "
         "transactions"),
        ("mongodb://h1/zaqar?w=1&readConcernLevel=majority",
         "readConcernLevel=majority with w=1"),
        ("mongodb://h1/zaqar?W=1&readconcernlevel=linearizable",
         "readConcernLevel=linearizable with w=1"),
        ("mongodb://h1,h2/zaqar?replicaSet=rs0&readConcernLevel=linearizable"
         "&readPreference=nearest", "readPreference=nearest sends some reads elsewhere"),
        ("mongodb://h1/zaqar?tls=true&tlsInsecure=true&tlsAllowInvalidCertificates=true",
         "cannot be specified simultaneously"),
        ("mongodb://h1,h2/zaqar?directConnection=true", "multiple hosts with directConnection"),
        ("mongodb://h1/zaqar?readPreference=primary&maxStalenessSeconds=120",
         "maxStalenessSeconds"),
        ("mongodb://h1/zaqar?srvMaxHosts=2", "only allowed with 'mongodb+srv://'"),
        ("mongodb+srv://u:secret@a.example,b.example/zaqar", "one DNS name, without a port"),
        ("mongodb+srv://u:secret@a.example:27017/zaqar", "one DNS name, without a port"),
        ("mongodb+srv://a.example/zaqar?directConnection=true", "directConnection"),
        ("mongodb+srv://a.example/zaqar.messages", "names the database only"),
        ("mongodb+srv://a.example/zaqar?bogus=1", "Unknown option"),
        ("mongodb+srv:a.example", "expected mongodb://"),
    ],
)
def test_what_the_stores_cannot_honour_is_one_configuration_error(
    uri: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse(uri)
    assert message in str(caught.value)
    assert str(caught.value).startswith("invalid message store URI")
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    "query",
    ["readConcernLevel=majority", "readConcernLevel=linearizable", "readConcernLevel=local",
     "readConcernLevel=available", "w=2&readConcernLevel=majority",
     "readConcernLevel=linearizable&readPreference=primary", "w=1&journal=false",
     "readPreference=secondary&readConcernLevel=majority"],
)
def test_concerns_the_stores_can_honour_are_accepted(query: str) -> None:
    parse(f"mongodb://h1,h2,h3/zaqar?replicaSet=rs0&{query}")


async def test_a_secondary_read_preference_leaves_claims_and_versions_on_the_primary() -> None:
    # Given a message store whose URI asks for reads from secondaries
    store = MongoMessageStore.from_uri(
        "mongodb://h1,h2,h3/zaqar?replicaSet=rs0&readPreference=secondary"
        "&maxStalenessSeconds=90&readConcernLevel=majority"
    )
    client = store.options.client()
    try:
        # When its collections are built as open() builds them
        collections = Collections(store.options, client)
        # Then everything a claim, a delete, a version check or a listing reads is read from
        # the primary, with the URI's concerns
        for collection in (collections.messages, collections.claims, collections.counters,
                           collections.versions):
            assert collection.read_preference == ReadPreference.PRIMARY
            assert collection.write_concern.document == {"w": "majority", "j": True}
            assert collection.read_concern.level == "majority"
        # And only the reads that may lag follow the URI
        assert collections.messages_relaxed.read_preference == Secondary(max_staleness=90)
        assert client.options.read_preference == Secondary(max_staleness=90)
    finally:
        await client.close()


async def test_every_store_database_reads_from_the_primary_unless_told() -> None:
    options = parse("mongodb://h1,h2/zaqar?replicaSet=rs0&readPreference=nearest&w=3")
    client = options.client()
    try:
        primary = options.database_on(client)
        assert (primary.name, primary.read_preference) == ("zaqar", ReadPreference.PRIMARY)
        assert primary.write_concern.document == {"w": 3, "j": True}
        relaxed = options.database_on(client, primary=False)
        assert relaxed.read_preference == ReadPreference.NEAREST
    finally:
        await client.close()
