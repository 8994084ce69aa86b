"""The queue store contract (``services/testing/queue_store.py``) over every built-in backend, and
what only some backends have.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from services.common import sqlite_store
from services.common.config import ConfigurationError
from services.common.errors import Unavailable
from services.queue_svc.storage.base import MetadataPatch, QueueStore, apply_patches
from services.queue_svc.storage.mongodb._connection import parse as parse_mongodb
from services.queue_svc.storage.redis import queues as redis_queues
from services.queue_svc.storage.redis._connection import RedisOptions, parse
from services.queue_svc.storage.registry import open_queue_store, redact
from services.testing.queue_store import QueueStoreContract, names
from tests.conftest import FAIL_FAST
from tests.contract.conftest import IN_CLEAR
from tests.servers import (
    SilentServer,
    free_port,
    mongodb_process,
    redis_process,
)

# The store_uri fixture's backends: these stores run on a Redis Cluster too.
STORE_BACKENDS = IN_CLEAR  # over TLS: see IN_CLEAR

NETWORK_SCHEMES = ["mongodb", "redis"]


class TestQueueStore(QueueStoreContract):
    """The contract suite over every backend of ``STORE_BACKENDS``."""


def test_apply_patches_does_not_change_its_input() -> None:
    original = {"a": 1}
    result = apply_patches(original, [MetadataPatch("add", "b", 2), MetadataPatch("remove", "a")])
    assert original == {"a": 1}
    assert result == {"b": 2}


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("postgres://db/queues", "unsupported scheme 'postgres'"),
        ("memcached://:secret@localhost:11211", "unsupported scheme 'memcached'"),
        ("queues.db", "unsupported scheme ''"),
        ("sqlite://", "expected sqlite:///"),
        ("sqlite://host/queues.db", "expected sqlite:///"),
        ("sqlite:///", "the path is empty"),
        ("sqlite:///data/", "names a folder"),
        ("sqlite:///q.db?mode=ro", "unknown option(s) mode"),
    ],
)
async def test_bad_store_uri_is_a_configuration_error(uri: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await open_queue_store(uri)
    assert message in str(caught.value)
    assert "secret" not in str(caught.value)


async def test_sqlite_store_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "queues.db"
    store = await open_queue_store(f"sqlite:///{path}")
    await store.close()
    assert path.exists()


async def test_sqlite_store_that_cannot_be_opened_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigurationError) as caught:
        await open_queue_store(f"sqlite:///{tmp_path / 'file' / 'queues.db'}")
    assert "queues.db" in str(caught.value)


async def test_sqlite_store_waits_for_another_process_that_holds_the_file(
    tmp_path: Path,
) -> None:
    """Replicas that start together (``up --replicas``, a loaded machine) open one file: a
    lock held past SQLite's busy timeout is waited for, not a failed start."""
    path = tmp_path / "queues.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a fresh file: every other connection is refused
    waiting = asyncio.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "is locked by another connection" in record.getMessage():
                waiting.set()

    seen = Seen()
    level = sqlite_store.log.level
    sqlite_store.log.setLevel(logging.INFO)
    sqlite_store.log.addHandler(seen)
    try:
        opening = asyncio.ensure_future(open_queue_store(f"sqlite:///{path}"))
        # When the store has found the file locked past its busy timeout...
        waiter = asyncio.ensure_future(waiting.wait())
        await asyncio.wait({opening, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        assert waiting.is_set() and not opening.done(), opening.done() and opening.exception()
        # ...and the other process lets go, it opens
        holder.rollback()
        store = await asyncio.wait_for(opening, 60)
        await store.close()
    finally:
        sqlite_store.log.removeHandler(seen)
        sqlite_store.log.setLevel(level)
        holder.close()


def test_redact_hides_passwords_only() -> None:
    assert redact("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact("mongodb://u:pw@h/db") == "mongodb://u:***@h/db"
    assert redact("sqlite:////tmp/q.db") == "sqlite:////tmp/q.db"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("redis://:secret@127.0.0.1:notaport/0", "bad port"),
        ("redis://127.0.0.1:70000/0", "bad port"),
        ("redis://127.0.0.1:0/0", "bad port"),
        ("redis://:6379/0", "the host is missing"),
        ("redis://127.0.0.1:6379/zero", "bad database number 'zero'"),
        ("redis://127.0.0.1:6379/0/1", "bad database number '0/1'"),
        ("redis://127.0.0.1:6379/-1", "bad database number '-1'"),
        ("redis:127.0.0.1:6379", "expected redis://"),
        ("redis://127.0.0.1/0#frag", "no fragment"),
        ("redis://127.0.0.1/0?dbid=1", "unknown option 'dbid'"),
        ("redis://127.0.0.1/0?prefix=", "option prefix=''"),
        ("redis://127.0.0.1/0?prefix=a b", "option prefix='a b'"),
        ("redis://127.0.0.1/0?socket_timeout=0", "positive number of seconds"),
        ("redis://127.0.0.1/0?socket_timeout=soon", "expected a number of seconds"),
        ("redis://127.0.0.1/0?prefix=a&prefix=b", "given more than once"),
        ("redis://127.0.0.1/0?max_connections=0", "at least 1"),
        ("mongodb://u:secret@127.0.0.1:99999/zaqar", "Port must be an integer"),
        ("mongodb://127.0.0.1:port/zaqar", "Port contains non-digit characters"),
        ("mongodb:///zaqar", "Empty host"),
        ("mongodb://127.0.0.1/zaqar?bogus=1", "Unknown option"),
        ("mongodb://127.0.0.1/zaqar?serverSelectionTimeoutMS=soon", "must be an integer"),
        ("mongodb://127.0.0.1/zaqar.queues", "names the database only"),
        ("mongodb://127.0.0.1/za$qar", "Bad database name"),
        ("mongodb://127.0.0.1/za*qar", "bad database name 'za*qar'"),
        (f"mongodb://127.0.0.1/{'d' * 64}", "at most 63 characters"),
        ("mongodb://127.0.0.1/zaqar#frag", "no fragment"),
        ("mongodb:127.0.0.1", "expected mongodb://"),
    ],
)
async def test_bad_network_store_uri_is_a_precise_configuration_error(
    uri: str, message: str
) -> None:
    # When the URI is malformed, the store fails before connecting to anything
    with pytest.raises(ConfigurationError) as caught:
        await open_queue_store(uri)
    # Then the error names the problem, and never the password
    assert message in str(caught.value)
    assert "secret" not in str(caught.value)


def test_redis_uri_options() -> None:
    options = parse(
        "redis://user:p%40ss@cache.local:6380/3?prefix=zq-test&socket_timeout=0.5"
    )
    assert options == RedisOptions(
        store="queue store", max_connections=50, host="cache.local", port=6380, db=3,
        username="user", password="p@ss",
        prefix="zq-test", socket_connect_timeout=2.0, socket_timeout=0.5,
    )
    # By default: port 6379, database 0, prefix zq, and timeouts of a few seconds at most
    defaults = parse("redis://localhost")
    assert (defaults.port, defaults.db, defaults.prefix, defaults.password) == (
        6379, 0, "zq", None
    )
    assert max(defaults.socket_connect_timeout, defaults.socket_timeout) <= 5
    assert parse("redis://:pw@h/").password == "pw"


async def test_mongodb_uri_options() -> None:
    options = parse_mongodb("mongodb://u:pw@a:1,b/")
    assert (options.database, options.hosts) == ("zaqar", ("a:1", "b:27017"))
    assert "pw" not in repr(options) and "pw" not in options.address
    # By default: timeouts of a few seconds at most, and writes journaled by a majority
    assert max(options.client_options[name] for name in (
        "serverSelectionTimeoutMS", "connectTimeoutMS", "socketTimeoutMS"
    )) <= 5000
    client = options.client()
    try:
        assert client.write_concern.document == {"w": "majority", "j": True}
    finally:
        await client.close()
    # And the URI's own options win
    tuned = parse_mongodb("mongodb://a/queues?w=majority&serverselectiontimeoutms=100")
    assert tuned.database == "queues"
    assert "w" not in tuned.client_options
    assert "serverSelectionTimeoutMS" not in tuned.client_options


@pytest.mark.parametrize("scheme", NETWORK_SCHEMES)
async def test_unreachable_server_is_unavailable_within_seconds(scheme: str) -> None:
    # Given a port nothing listens on, and the default timeouts
    port = free_port()
    started = time.monotonic()
    # When the store is opened
    with pytest.raises(Unavailable) as caught:
        await open_queue_store(f"{scheme}://127.0.0.1:{port}/0")
    # Then it fails fast, saying where it looked
    assert time.monotonic() - started < FAIL_FAST
    assert f"127.0.0.1:{port}" in caught.value.description
    assert "cannot be reached" in caught.value.description


@pytest.mark.parametrize("scheme", NETWORK_SCHEMES)
async def test_silent_server_is_unavailable_after_the_uri_timeouts(scheme: str) -> None:
    # Given a server that accepts connections and never answers
    peers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)
        await reader.read()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    uri = {
        "redis": f"redis://127.0.0.1:{port}/0?socket_connect_timeout=0.3&socket_timeout=0.3",
        "mongodb": f"mongodb://127.0.0.1:{port}/zaqar"
        "?serverSelectionTimeoutMS=300&connectTimeoutMS=300&socketTimeoutMS=300",
    }[scheme]
    started = time.monotonic()
    try:
        # Then opening the store gives up after the timeouts, instead of hanging
        with pytest.raises(Unavailable):
            await open_queue_store(uri)
        assert time.monotonic() - started < FAIL_FAST
    finally:
        server.close()
        for writer in peers:
            writer.close()
        await server.wait_closed()


async def test_redis_crash_fails_fast_and_the_same_store_recovers(tmp_path: Path) -> None:
    # Given a store on a Redis that writes every change to its append-only file
    server = redis_process(tmp_path / "redis", durable=True)
    server.start()
    try:
        store = await open_queue_store(f"redis://127.0.0.1:{server.port}/0")
        try:
            await store.create("p", "kept", {"a": 1})
            # When Redis crashes
            server.kill()
            # Then every call fails fast as Unavailable
            started = time.monotonic()
            with pytest.raises(Unavailable) as caught:
                await store.get("p", "kept")
            assert "Redis cannot be reached" in caught.value.description
            with pytest.raises(Unavailable):
                await store.create("p", "new", {})
            with pytest.raises(Unavailable):
                await store.list("p", limit=5)
            assert time.monotonic() - started < FAIL_FAST
            # And once it is back, the same store works again, with the acknowledged data
            server.start()
            record = await store.get("p", "kept")
            assert record is not None and dict(record.metadata) == {"a": 1}
            assert await store.create("p", "new", {}) is True
            await store.update_metadata("p", "new", [MetadataPatch("add", "b", 2)])
            assert await names(store, "p") == ["kept", "new"]
        finally:
            await store.close()
    finally:
        server.stop()


async def test_mongodb_restart_fails_fast_and_the_same_store_recovers(tmp_path: Path) -> None:
    # Given a store on a MongoDB server
    server = mongodb_process(tmp_path / "mongodb")
    server.start()
    try:
        # (a server selection timeout that leaves a busy machine time to see the server back)
        store = await open_queue_store(
            f"mongodb://127.0.0.1:{server.port}/zaqar?serverSelectionTimeoutMS=2000"
        )
        try:
            await store.create("p", "kept", {"a": 1})
            # When the server goes away, calls fail as Unavailable within the timeout
            server.kill()
            for _ in range(2):
                started = time.monotonic()
                with pytest.raises(Unavailable):
                    await store.get("p", "kept")
                assert time.monotonic() - started < FAIL_FAST
            # And once it is back, the same store works again
            server.start()
            assert await store.create("p", "new", {}) is True
            await store.update_metadata("p", "new", [MetadataPatch("add", "b", 2)])
            assert "new" in await names(store, "p")
        finally:
            await store.close()
    finally:
        server.kill()  # its graceful stop takes seconds, and its data is thrown away anyway


async def one_waits_and_the_others_fail_at_once(store: QueueStore, reason: str) -> None:
    """With ``store``'s server taken as down: the next call waits for it in its turn, and the
    calls made meanwhile fail at once with ``reason``, before it ends, as it will."""
    waiting = asyncio.ensure_future(store.get("p", "kept"))
    await asyncio.sleep(0)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.get("p", "kept"), lambda: store.create("p", "new", {}),
        lambda: store.list("p", limit=5),
    ]
    for call in calls:
        with pytest.raises(Unavailable) as caught:
            await call()
        assert reason in caught.value.description
        assert not waiting.done()
    with pytest.raises(Unavailable):
        await waiting


async def found_again(store: QueueStore, within: float) -> None:
    """Once ``store``'s server answers again: a call finds it (within ``within`` s), and the
    acknowledged queue is there, and concurrent calls all succeed."""
    deadline = time.monotonic() + within
    while True:
        try:
            record = await store.get("p", "kept")
            break
        except Unavailable:
            assert time.monotonic() < deadline, "the store did not find the server"
    assert record is not None and dict(record.metadata) == {"a": 1}
    created = await asyncio.gather(*(store.create("p", f"q{i}", {}) for i in range(5)))
    assert created == [True] * 5


async def test_an_unreachable_mongodb_fails_other_calls_at_once_while_one_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a store on a MongoDB server that is then killed
    server = mongodb_process(tmp_path / "mongodb")
    server.start()
    try:
        store = await open_queue_store(
            f"mongodb://127.0.0.1:{server.port}/zaqar?serverSelectionTimeoutMS=2000"
        )
        try:
            await store.create("p", "kept", {"a": 1})
            server.kill()
            # When a call waits out the server selection and finds no server (the first
            # ones may fail sooner, on a pooled connection the kill closed)
            caplog.set_level(logging.WARNING, logger="services.common.store_edge")
            for _ in range(5):
                with pytest.raises(Unavailable):
                    await store.get("p", "kept")
                if "cannot be reached: until it can" in caplog.text:
                    break
            assert "cannot be reached: until it can, one call at a time waits" in caplog.text
            # Then the next call waits for the server in its turn, and the others fail at once
            await one_waits_and_the_others_fail_at_once(store, "MongoDB cannot be reached")
            # And once the server is back, a call finds it and the others follow
            server.start()
            await found_again(store, within=60)
            assert "is reachable again" in caplog.text
        finally:
            await store.close()
    finally:
        server.kill()


async def test_a_redis_that_does_not_answer_fails_other_calls_at_once_while_one_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a store on a Redis that keeps what it acknowledged, with short timeouts
    server = redis_process(tmp_path / "redis", durable=True)
    server.start()
    try:
        store = await open_queue_store(
            f"redis://127.0.0.1:{server.port}/0?socket_timeout=0.5&socket_connect_timeout=0.5"
        )
        try:
            await store.create("p", "kept", {"a": 1})
            # When the server is replaced by one that accepts connections and never answers
            # (a hung server, or one behind a network partition)
            server.kill()
            silent = SilentServer(server.port)
            try:
                # And a call has waited out the timeout
                caplog.set_level(logging.WARNING, logger="services.common.store_edge")
                with pytest.raises(Unavailable) as caught:
                    await store.get("p", "kept")
                assert "Redis did not answer in time" in caught.value.description
                assert "cannot be reached: until it can, one call at a time waits" in caplog.text
                # Then the next call waits for the server in its turn, and the others fail
                # at once
                await one_waits_and_the_others_fail_at_once(
                    store, "Redis did not answer in time")
            finally:
                silent.close()
            # And once the server answers again, a call finds it and the others follow
            server.start()
            await found_again(store, within=30)
            assert "is reachable again" in caplog.text
        finally:
            await store.close()
    finally:
        server.stop()


async def test_redis_listing_over_many_script_calls(
    redis_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given list scripts that may examine only 3 names per call, fetching 2 at a time
    monkeypatch.setattr(redis_queues, "SCAN_BUDGET", 3)
    monkeypatch.setattr(redis_queues, "FILTER_BATCH", 2)
    store = await open_queue_store(redis_uri)
    try:
        for i in reversed(range(30)):
            await store.create("p", f"q{i:02}", {"even": i % 2 == 0})
        # Then pages, filters and counts are as if read at once
        page = await store.list(
            "p", limit=4, marker="q05", metadata_filters={"even": True}, with_count=True
        )
        assert ([q.name for q in page.queues], page.count) == (
            ["q06", "q08", "q10", "q12"], 15
        )
        page = await store.list("p", limit=2, name_contains="9", with_count=True)
        assert ([q.name for q in page.queues], page.count) == (["q09", "q19"], 3)
        assert await names(store, "p", limit=100) == [f"q{i:02}" for i in range(30)]
    finally:
        await store.close()


async def test_redis_listing_of_a_large_project(redis_uri: str) -> None:
    # Given more queues than the list script reads from the sorted set at once
    store = await open_queue_store(redis_uri)
    try:
        all_names = [f"queue-{i:04}" for i in range(700)]
        await asyncio.gather(*(store.create("p", name, {}) for name in all_names))
        # Then one page can hold them all, and a sparse name filter finds the few matches
        assert await names(store, "p", limit=1000) == all_names
        page = await store.list("p", limit=10, name_contains="99", with_count=True)
        expected = [name for name in all_names if "99" in name]
        assert ([q.name for q in page.queues], page.count) == (expected[:10], len(expected))
    finally:
        await store.close()


async def test_an_older_sqlite_file_gains_the_pool_column(tmp_path: Path) -> None:
    # Given a queue store file written before queues were placed on pools
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE queues (project TEXT NOT NULL, name TEXT NOT NULL, "
                     "metadata TEXT NOT NULL, PRIMARY KEY (project, name)) WITHOUT ROWID")
        conn.execute("INSERT INTO queues VALUES ('p', 'old', '{\"a\": 1}')")
    conn.close()
    # When it is opened, its queues are in the default store and new ones take pools
    store = await open_queue_store(f"sqlite:///{path}")
    try:
        old = await store.get("p", "old")
        assert old is not None and old.pool is None and dict(old.metadata) == {"a": 1}
        await store.create("p", "new", {}, pool="a")
        assert await store.count_on_pool("a") == 1
    finally:
        await store.close()
