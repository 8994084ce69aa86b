"""TLS to Redis (``rediss://``, ``rediss+cluster://``) beyond the contract suites, which run
every store over a TLS server and a TLS cluster already (``tests/contract/conftest.py``): the
URI's TLS options, what a failed handshake says, and TLS files read again for each new
connection. Every server here is a real redis-server speaking TLS only.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from services.common import store_probe
from services.common.config import ConfigurationError
from services.common.errors import Unavailable
from services.common.redis_store import RedisOptions
from services.message_svc.storage.registry import open_store
from services.notifier_svc.storage.registry import open_notifier_store
from services.queue_svc.storage.registry import open_queue_store
from services.testing.message_store import CLIENT, P, Q, msg
from tests.certs import Pki
from tests.conftest import FAIL_FAST
from tests.contract.conftest import Clock
from tests.servers import ServerProcess, redis_process, redis_tls_query

Opener = Callable[[str], Awaitable[Any]]


async def _open_message_store(uri: str) -> Any:
    return await open_store(uri, now=Clock())


async def _open_notifier_store(uri: str) -> Any:
    return await open_notifier_store(uri, now=Clock())


OPENERS: dict[str, Opener] = {
    "queue": open_queue_store,
    "message": _open_message_store,
    "notifier": _open_notifier_store,
}


async def _works(store: Any) -> None:
    """One write and one read of the store, whichever it is."""
    if hasattr(store, "post"):
        (posted,) = await store.post(P, Q, CLIENT, [msg(1)])
        claimed = await store.claim(P, Q, limit=1, ttl=60, grace=60)
        assert claimed.claim is not None and [m.id for m in claimed.claim.messages] == [posted]
    elif hasattr(store, "ensure"):
        assert await store.create("p", "q", {"a": 1})
        record = await store.get("p", "q")
        assert record is not None
    else:
        sub, created = await store.create("p", "q", "http://127.0.0.1:9/hook", 60, {})
        assert created and (await store.get("p", "q", sub.id)) is not None


# The URI's options -----------------------------------------------------------------------------


def test_a_rediss_uri_turns_tls_on_and_checks_everything_by_default() -> None:
    options = RedisOptions.parse("rediss://cache.local:6390/2?ssl_ca_certs=/etc/ca.pem",
                                 "message store", "zm", 4)
    assert options.tls and options.verifies and options.ssl_check_hostname
    assert options.address == "rediss://cache.local:6390/2"
    assert options.tls_arguments() == {
        "ssl_ca_certs": "/etc/ca.pem", "ssl_certfile": None, "ssl_keyfile": None,
        "ssl_cert_reqs": "required", "ssl_check_hostname": True,
    }
    # A client certificate with its key in the same file is that file twice to redis-py
    both = RedisOptions.parse("rediss://h?ssl_certfile=/c.pem", "queue store", "zq", 4)
    assert both.tls_arguments()["ssl_keyfile"] == "/c.pem"
    # A cluster over TLS, and the same URIs without TLS
    cluster = RedisOptions.parse("rediss+cluster://a:1,b:2", "queue store", "zq", 4,
                                 expect_cluster=True)
    assert cluster.tls and cluster.nodes == (("a", 1), ("b", 2))
    assert cluster.address == "rediss+cluster://a:1,b:2"
    plain = RedisOptions.parse("redis://cache.local", "queue store", "zq", 4)
    assert not plain.tls and plain.tls_arguments() == {}
    # ssl_cert_reqs=none checks no name either
    loose = RedisOptions.parse("rediss://h?ssl_cert_reqs=NONE", "queue store", "zq", 4)
    assert (loose.verifies, loose.ssl_check_hostname) == (False, False)


@pytest.mark.parametrize("store", sorted(OPENERS))
@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("redis://h/0?ssl_ca_certs=/ca.pem",
         "option 'ssl_ca_certs' is for TLS connections: use rediss://"),
        ("redis+cluster://h:1?prefix=x&ssl_certfile=/c.pem",
         "option 'ssl_certfile' is for TLS connections: use rediss+cluster://"),
        ("rediss://h/0?ssl_cert_reqs=optional", "expected required"),
        ("rediss://h/0?ssl_check_hostname=maybe", "expected true or false"),
        ("rediss://h/0?ssl_keyfile=/k.pem", "ssl_keyfile needs ssl_certfile"),
        ("rediss://h/0?ssl_cert_reqs=none&ssl_check_hostname=true",
         "ssl_check_hostname=true needs ssl_cert_reqs=required"),
        ("rediss://h/0?ssl_ca_certs=", "expected the path of a PEM file"),
        ("rediss://h/0?ssl_verify=1", "unknown option 'ssl_verify'"),
        ("rediss+cluster://h:1/3", "a Redis Cluster has only database 0"),
    ],
)
async def test_bad_tls_options_are_configuration_errors(
    store: str, uri: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await OPENERS[store](uri)
    assert message in str(caught.value)


@pytest.mark.parametrize("store", sorted(OPENERS))
async def test_a_tls_file_that_cannot_be_used_is_named_at_open(
    store: str, pki: Pki, tmp_path: Path, redis_tls_server: ServerProcess
) -> None:
    base = f"rediss://127.0.0.1:{redis_tls_server.port}/0?ssl_ca_certs="
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    cases = [
        (f"{base}{tmp_path / 'missing.pem'}", "ssl_ca_certs=", "No such file or directory"),
        (f"{base}{not_pem}", "ssl_ca_certs=", "no CA certificate in PEM form"),
        # A key that is not the certificate's
        (f"{base}{pki.ca}&ssl_certfile={pki.client.cert}&ssl_keyfile={pki.service.key}",
         "ssl_certfile=", "the key does not match the certificate"),
    ]
    for uri, option, problem in cases:
        with pytest.raises(Unavailable) as caught:
            await OPENERS[store](uri)
        assert option in str(caught.value) and problem in str(caught.value), uri
        assert "Cannot use the TLS files of the" in str(caught.value)

    # The probe that checks a store before a service starts, or a pool before it is added,
    # says the same as a configuration error
    with pytest.raises(ConfigurationError, match="No such file or directory"):
        await store_probe.probe(cases[0][0], "pool", FAIL_FAST)


# Handshakes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("store", sorted(OPENERS))
async def test_the_system_store_of_cas_alone_does_not_trust_a_private_ca(
    store: str, pki: Pki, redis_tls_server: ServerProcess
) -> None:
    # Given a server whose certificate our CA signed, and a URI that names no CA file
    uri = f"rediss://127.0.0.1:{redis_tls_server.port}/0"
    # Then the store does not open, and says why
    with pytest.raises(Unavailable) as caught:
        await OPENERS[store](uri)
    assert "certificate is not trusted" in str(caught.value)
    # And with the CA file (no client certificate: this server checks one only when given)
    opened = await OPENERS[store](f"{uri}?ssl_ca_certs={pki.ca}")
    try:
        await _works(opened)
    finally:
        await opened.close()


async def test_a_certificate_that_does_not_name_the_host_is_refused_unless_told(
    pki: Pki, tmp_path: Path
) -> None:
    # Given a server whose certificate names zaqar.internal, reached at 127.0.0.1
    with redis_process(tmp_path, tls=pki, cert=pki.internal) as server:
        uri = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={pki.ca}"
        for store, opener in OPENERS.items():
            # Then no store opens, through redis-py's pool and the message store's Link alike
            with pytest.raises(Unavailable) as caught:
                await opener(uri)
            assert "does not name the host" in str(caught.value), store
            # And the pool probe tells the operator what the check found
            with pytest.raises(store_probe.StoreUnreachable, match="mismatch"):
                await store_probe.probe(uri, "pool", FAIL_FAST)
            # Unless the URI says not to check the name (the CA is still checked)
            opened = await opener(f"{uri}&ssl_check_hostname=false")
            try:
                await _works(opened)
            finally:
                await opened.close()


async def test_ssl_cert_reqs_none_encrypts_without_checking(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a server whose certificate no CA we know signed
    with redis_process(tmp_path, tls=pki, cert=pki.stranger, auth_clients="no") as server:
        uri = f"rediss://127.0.0.1:{server.port}/0"
        with pytest.raises(Unavailable, match="not trusted"):
            await _open_message_store(f"{uri}?ssl_ca_certs={pki.ca}")
        assert "is not checked" not in caplog.text
        # Then with ssl_cert_reqs=none it is used all the same, with a warning in the log
        store = await _open_message_store(f"{uri}?ssl_cert_reqs=none")
        try:
            await _works(store)
        finally:
            await store.close()
        assert "ssl_cert_reqs=none, Redis's certificate is not checked" in caplog.text


async def test_a_server_that_requires_client_certificates(pki: Pki, tmp_path: Path) -> None:
    with redis_process(tmp_path, tls=pki, auth_clients="yes") as server:
        uri = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={pki.ca}"
        for store, opener in OPENERS.items():
            # Without a client certificate, or with one no trusted CA signed: refused
            stranger = f"&ssl_certfile={pki.stranger.cert}&ssl_keyfile={pki.stranger.key}"
            for refused in (uri, uri + stranger):
                with pytest.raises(Unavailable):
                    await opener(refused)
            # With ours (its key in its own file, or beside it in one file)
            opened = await opener(f"{uri}&ssl_certfile={pki.client.cert}"
                                  f"&ssl_keyfile={pki.client.key}")
            try:
                await _works(opened)
            finally:
                await opened.close()
            both = tmp_path / f"client-{store}.pem"
            both.write_bytes(pki.client.cert.read_bytes() + pki.client.key.read_bytes())
            opened = await opener(f"{uri}&ssl_certfile={both}&prefix=both")
            try:
                await _works(opened)
            finally:
                await opened.close()


async def test_tls_to_a_server_without_tls_fails_fast(
    pki: Pki, redis_server: ServerProcess
) -> None:
    # Given a plaintext server, and a URI that asks for TLS with short timeouts
    uri = (f"rediss://127.0.0.1:{redis_server.port}/0?ssl_ca_certs={pki.ca}"
           "&socket_connect_timeout=0.5&socket_timeout=0.5")
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Then the store does not open (the server waits for a command the handshake never is)
    with pytest.raises(Unavailable):
        await _open_message_store(uri)
    assert loop.time() - started < FAIL_FAST


# Connections made again ------------------------------------------------------------------------


async def test_files_replaced_in_place_apply_to_the_next_connection(
    pki: Pki, tmp_path: Path
) -> None:
    """A Kubernetes Secret mounted as files is replaced in place: a store that is open reads
    the files again when it connects again, without a restart."""
    ca_file = tmp_path / "ca.pem"
    shutil.copy(pki.ca, ca_file)
    with redis_process(tmp_path / "old", tls=pki) as server:
        uri = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={ca_file}"
        message_store = await _open_message_store(uri)
        queue_store = await open_queue_store(uri)
        try:
            await _works(message_store)
            await _works(queue_store)
            # When the server restarts with a certificate of another CA, and the CA file
            # is not replaced yet
            server.stop()
            server.argv[server.argv.index(str(pki.service.cert))] = str(pki.stranger.cert)
            server.argv[server.argv.index(str(pki.service.key))] = str(pki.stranger.key)
            server.argv[server.argv.index("optional")] = "no"
            server.start()
            # Then the open stores refuse it
            with pytest.raises(Unavailable, match="not trusted"):
                await message_store.stats(P, Q)
            with pytest.raises(Unavailable, match="not trusted"):
                await queue_store.get("p", "q")
            # And once the file holds the new CA, the next connection trusts the server
            ca_file.write_bytes(pki.other_ca.read_bytes())
            assert (await message_store.stats(P, Q)).total == 0  # a new server: no data
            assert await queue_store.get("p", "q") is None
        finally:
            await message_store.close()
            await queue_store.close()


@pytest.mark.parametrize("scheme_pki", ["tls"])
async def test_the_probe_pings_a_tls_server_and_a_tls_cluster(
    scheme_pki: str, pki: Pki, redis_tls_server: ServerProcess, redis_tls_cluster: Any
) -> None:
    single = f"rediss://127.0.0.1:{redis_tls_server.port}/0?{redis_tls_query(pki)}"
    cluster = f"rediss+cluster://{redis_tls_cluster.uri_hosts}?{redis_tls_query(pki)}"
    for uri in (single, cluster):
        await store_probe.probe(uri, "pool", FAIL_FAST)
    # A cluster whose certificates are not trusted is not reachable, and says why
    untrusted = f"rediss+cluster://{redis_tls_cluster.uri_hosts}?ssl_ca_certs={pki.other_ca}"
    with pytest.raises(store_probe.StoreUnreachable, match="not trusted"):
        await store_probe.probe(untrusted, "pool", FAIL_FAST)


async def test_a_cluster_reads_a_renewed_client_certificate_when_it_connects_again(
    pki: Pki, tmp_path: Path, redis_tls_cluster: Any
) -> None:
    """On a cluster too (redis-py makes its connections there): a client certificate renewed
    in place is the one the next connection presents."""
    mine = tmp_path / "client.pem"
    mine.write_bytes(pki.client.cert.read_bytes() + pki.client.key.read_bytes())
    uri = (f"rediss+cluster://{redis_tls_cluster.uri_hosts}?ssl_ca_certs={pki.ca}"
           f"&ssl_certfile={mine}&retry_for=0.5&prefix=t-renewed")
    store = await _open_message_store(uri)

    def drop_our_connections() -> None:
        for node in redis_tls_cluster.nodes:
            for line in redis_tls_cluster.cli(node.port, "client", "list").splitlines():
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                if fields.get("name") == "zaqar-message-svc":
                    redis_tls_cluster.cli(node.port, "client", "kill", "id", fields["id"])

    try:
        await _works(store)
        # When the file holds a certificate the nodes do not trust, and the connections drop
        mine.write_bytes(pki.stranger.cert.read_bytes() + pki.stranger.key.read_bytes())
        drop_our_connections()
        # Then the next connections present it, and are refused
        with pytest.raises(Unavailable):
            await store.stats(P, Q)
        # And once the file holds a trusted one again, the same store works
        mine.write_bytes(pki.client.cert.read_bytes() + pki.client.key.read_bytes())
        assert (await store.stats(P, Q)).total == 1
    finally:
        await store.delete_queue(P, Q)
        await store.close()
