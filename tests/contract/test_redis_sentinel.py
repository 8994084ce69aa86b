"""Redis Sentinel (``redis+sentinel://``) beyond the contract suites, which run every store on
the master of the session's Sentinel group already (tests/contract/conftest.py): the URI, and
the stores following the master through failovers, real ones (a SIGKILLed master replaced by
its replica) and a Sentinel's ``SENTINEL FAILOVER`` (the old master demoted while the stores
are connected to it), without being opened again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from services.common import store_probe
from services.common.config import ConfigurationError
from services.common.errors import Unavailable
from services.common.redis_store import RedisOptions
from services.message_svc.storage.registry import open_store
from services.notifier_svc.storage.registry import open_notifier_store
from services.queue_svc.storage.registry import open_queue_store
from services.testing.message_store import CLIENT, P, list_all, msg
from tests.certs import Pki
from tests.conftest import FAIL_FAST
from tests.contract.conftest import Clock
from tests.servers import (
    RedisSentinelProcesses,
    redis_tls_query,
    start_redis_sentinel,
)

T = TypeVar("T")

OPENERS: dict[str, Callable[[str], Awaitable[Any]]] = {
    "queue": open_queue_store,
    "message": lambda uri: open_store(uri, now=Clock()),
    "notifier": lambda uri: open_notifier_store(uri, now=Clock()),
}


def test_a_sentinel_uri_names_the_sentinels_the_master_group_and_the_database() -> None:
    options = RedisOptions.parse(
        "redis+sentinel://:s3cret@s1,s2:26380/mymaster/2?sentinel_password=other&prefix=zz",
        "message store", "zm", 4,
    )
    assert options.sentinel and not options.cluster and not options.tls
    assert options.sentinels == (("s1", 26379), ("s2", 26380))
    assert (options.master_name, options.db, options.prefix) == ("mymaster", 2, "zz")
    assert (options.password, options.sentinel_password) == ("s3cret", "other")
    assert options.address == "redis+sentinel://s1:26379,s2:26380/mymaster/2"
    assert "s3cret" not in options.address
    assert RedisOptions.parse("redis+sentinel://s1/m", "queue store", "zq", 4).db == 0


@pytest.mark.parametrize("store", sorted(OPENERS))
@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("redis+sentinel://s1:26379", "the master group's name is missing"),
        ("redis+sentinel://s1:26379/", "the master group's name is missing"),
        ("redis+sentinel://s1/my*master", "the master group's name is missing or not"),
        ("redis+sentinel://s1/mymaster/x", "bad database number 'x'"),
        ("redis+sentinel://s1/mymaster?ssl_ca_certs=/ca.pem",
         "option 'ssl_ca_certs' is for TLS connections: use rediss+sentinel://"),
        ("rediss+sentinel://s1/mymaster?ssl_cert_reqs=sometimes", "expected required"),
        ("redis+sentinel://s1/mymaster?retry_for=2", "unknown option 'retry_for'"),
        ("redis+sentinel://s1:0/mymaster", "bad port"),
    ],
)
async def test_bad_sentinel_uris_are_configuration_errors(
    store: str, uri: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await OPENERS[store](uri)
    assert message in str(caught.value)


async def test_the_probe_pings_the_master_not_a_sentinel(
    redis_sentinel: RedisSentinelProcesses,
) -> None:
    await store_probe.probe(redis_sentinel.uri(), "pool", FAIL_FAST)
    # A group the Sentinels do not watch has no master: not reachable, whatever the Sentinels
    # themselves answer
    unknown = redis_sentinel.uri().replace(redis_sentinel.name, "no-such-group")
    with pytest.raises(store_probe.StoreUnreachable,
                       match="the Redis Sentinels name no master that is up"):
        await store_probe.probe(unknown, "pool", FAIL_FAST)


async def test_sentinels_over_tls_that_are_not_trusted_say_so(
    redis_tls_sentinel: RedisSentinelProcesses, pki: Pki
) -> None:
    await store_probe.probe(uri_of(redis_tls_sentinel, "prefix=p"), "pool", FAIL_FAST)
    untrusted = f"{redis_tls_sentinel.uri()}?ssl_ca_certs={pki.other_ca}"
    # Then a store does not open: no Sentinel could be asked
    with pytest.raises(Unavailable, match="name no master that is up, or cannot be reached"):
        await OPENERS["message"](untrusted)
    # And the probe (start-up, a new pool) says why
    with pytest.raises(store_probe.StoreUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
        await store_probe.probe(untrusted, "pool", FAIL_FAST)


# Failovers -------------------------------------------------------------------------------------


@pytest.fixture(params=["in clear", "over TLS"])
def group(
    request: pytest.FixtureRequest, tmp_path: Path, pki: Pki
) -> Iterator[RedisSentinelProcesses]:
    """A group of the test's own, which it fails over: every server and Sentinel speaking
    TLS only, or none."""
    with start_redis_sentinel(
        tmp_path, tls=pki if request.param == "over TLS" else None
    ) as group:
        yield group


def uri_of(group: RedisSentinelProcesses, options: str) -> str:
    """The group's URI with ``options`` (and, over TLS, the CA and client certificate)."""
    tls = f"&{redis_tls_query(group.tls)}" if group.tls is not None else ""
    return f"{group.uri()}?{options}{tls}"


async def eventually(call: Callable[[], Awaitable[T]], within: float = 30.0) -> T:
    """``call``'s result once it stops failing with Unavailable (a failover under way)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def replicated(group: RedisSentinelProcesses, master: int) -> None:
    """Until every replica has everything the master has written."""
    deadline = time.monotonic() + FAIL_FAST

    def offset(port: int, field: str) -> int:
        for line in group.cli(port, "info", "replication").splitlines():
            if line.startswith(field + ":"):
                return int(line.split(":", 1)[1])
        raise AssertionError(f"{port} has no {field}")

    while time.monotonic() < deadline:
        done = offset(master, "master_repl_offset")
        if all(offset(r.port, "slave_repl_offset") >= done
               for r in group.servers if r.port != master and r.proc is not None
               and r.proc.poll() is None):
            return
        time.sleep(0.05)
    raise AssertionError("the replicas did not catch up")


async def test_the_stores_follow_a_master_killed_and_replaced_by_its_replica(
    group: RedisSentinelProcesses,
) -> None:
    uri = uri_of(group, "prefix=failover")
    messages = await OPENERS["message"](uri)
    # One message store with wait=1: every write is confirmed by the replica
    confirmed = await OPENERS["message"](uri_of(group, "prefix=confirmed&wait=1&wait_timeout=1"))
    queues = await OPENERS["queue"](uri)
    notifier = await OPENERS["notifier"](uri)
    try:
        # Given messages, a queue and a subscription on the master
        acked = list(await messages.post(P, "q", CLIENT, [msg(i) for i in range(10)]))
        safe = list(await confirmed.post(P, "q", CLIENT, [msg(i) for i in range(10)]))
        assert await queues.create("p", "q", {"a": 1})
        sub, _ = await notifier.create("p", "q", "http://127.0.0.1:9/hook", 600, {})
        old = group.master_port()
        assert old is not None
        replicated(group, old)

        # When the master dies (SIGKILL), and Sentinel promotes the replica
        group.server(old).kill()
        new = group.wait_healthy(not_on=old)
        assert new != old

        # Then the same store objects work on the new master, with everything they had
        assert [m.id for m in await eventually(lambda: list_all(messages, queue="q"))] == acked
        acked += await eventually(lambda: messages.post(P, "q", CLIENT, [msg(10)]))
        claimed = await eventually(lambda: messages.claim(P, "q", limit=20, ttl=60, grace=60))
        assert claimed.claim is not None
        assert [m.id for m in claimed.claim.messages] == acked
        record = await eventually(lambda: queues.get("p", "q"))
        assert record is not None and record.metadata == {"a": 1}
        assert (await eventually(lambda: notifier.get("p", "q", sub.id))) is not None
        # And with wait=1, writes wait for a replica again once the old master is back (as a
        # replica of the new one): every message it acknowledged survived the failover
        assert [m.id for m in await eventually(lambda: list_all(confirmed, queue="q"))] == safe
        group.server(old).start()
        group.wait_healthy()
        safe += await eventually(lambda: confirmed.post(P, "q", CLIENT, [msg(11)]))
        assert [m.id for m in await list_all(confirmed, queue="q")] == safe
    finally:
        for store in (messages, confirmed, queues, notifier):
            await store.close()


async def test_a_demoted_master_is_left_without_a_failed_call(
    group: RedisSentinelProcesses,
) -> None:
    """``SENTINEL FAILOVER``: the old master is made a replica while the stores' connections
    to it are open, and Sentinel closes them (``CLIENT KILL``). The message store's own
    connection and redis-py's pools alike connect to the new master and send the call again,
    so no call fails. (A master demoted without that, answering READONLY to writes:
    test_redis_link.py.)"""
    uri = uri_of(group, "prefix=demoted")
    messages = await OPENERS["message"](uri)
    queues = await OPENERS["queue"](uri)
    try:
        acked = list(await messages.post(P, "q", CLIENT, [msg(0)]))
        assert await queues.create("p", "q", {})
        old = group.master_port()
        assert old is not None
        replicated(group, old)

        # When a Sentinel hands the master's role to the replica
        group.cli(group.sentinels[0].port, "sentinel", "failover", group.name)
        new = group.wait_healthy(not_on=old)
        assert "role:slave" in group.cli(old, "info", "replication")

        # Then the next calls succeed at once, on the new master (no Unavailable)
        acked += await messages.post(P, "q", CLIENT, [msg(1)])
        more = await asyncio.gather(*(messages.post(P, "q", CLIENT, [msg(n)])
                                      for n in range(2, 6)))
        acked += [i for ids in more for i in ids]
        assert [m.id for m in await list_all(messages, queue="q")] == acked
        assert await queues.create("p", "q2", {})
        # (written to the new master, which has every message)
        for message_id in acked:
            assert group.cli(new, "exists", f"demoted:{{{P}/q}}:m:{message_id}").strip() == "1"
    finally:
        await messages.close()
        await queues.close()


@pytest.mark.parametrize("wanted_by", ["master", "sentinels"])
async def test_over_tls_a_renewed_client_certificate_is_presented_to_sentinels_and_master(
    tmp_path: Path, pki: Pki, wanted_by: str,
) -> None:
    """A client certificate renewed in place is what the next connections present: to the
    master, and to the Sentinels asked where it is (each case with a group where only that
    side wants a client certificate, so that the other's connections cannot hide it)."""
    sides = ("yes", "no") if wanted_by == "master" else ("no", "yes")
    group = start_redis_sentinel(tmp_path / "group", tls=pki, auth_clients=sides)
    mine = tmp_path / "client.pem"
    mine.write_bytes(pki.client.cert.read_bytes() + pki.client.key.read_bytes())
    uri = f"{group.uri()}?prefix=renewed&ssl_ca_certs={pki.ca}&ssl_certfile={mine}"
    # The message store's own connection, and redis-py's pool (all the queue store uses)
    store = await OPENERS["message"](uri)
    queues = await OPENERS["queue"](uri)

    def drop_our_connections() -> None:
        """Close every connection of ours: the store's to the master, and the Sentinels'
        clients (unnamed; not the Sentinels' links to each other, nor redis-cli's own)."""
        master = group.master_port()
        assert master is not None
        names = {"zaqar-message-svc", "zaqar-queue-svc"}
        for port, ours in [(master, lambda f: f.get("name") in names),
                           *((s.port, lambda f: f.get("name") == ""
                              and not f.get("cmd", "").startswith("client"))
                             for s in group.sentinels)]:
            for line in group.cli(port, "client", "list").splitlines():
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                if ours(fields):
                    group.cli(port, "client", "kill", "id", fields["id"])

    try:
        (posted,) = await store.post(P, "q", CLIENT, [msg(0)])
        assert await queues.create("p", "q", {})
        # When the file holds a certificate no trusted CA signed, and our connections drop
        mine.write_bytes(pki.stranger.cert.read_bytes() + pki.stranger.key.read_bytes())
        drop_our_connections()
        # Then the next connections present it, and are refused
        with pytest.raises(Unavailable):
            await store.stats(P, "q")
        with pytest.raises(Unavailable):
            await queues.get("p", "q")
        # And once the file holds a trusted one again, the same stores work
        mine.write_bytes(pki.client.cert.read_bytes() + pki.client.key.read_bytes())
        assert [m.id for m in await list_all(store, queue="q")] == [posted]
        assert await queues.get("p", "q") is not None
    finally:
        await store.close()
        await queues.close()
        group.stop()
