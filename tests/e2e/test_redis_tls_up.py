"""``zaqar-grpc up`` with every store on a redis-server that speaks TLS only (``rediss://``,
with a client certificate), and a pool on it registered over HTTP: what a user does with
queues, messages, claims and subscriptions, through real processes and real HTTP. Where the
data went is read from the server itself, over TLS.

The store contract suites run every store over TLS already (tests/contract/conftest.py); this
is the same through what an operator runs: the settings, the start-up probe, the pool probe,
and the pool's message and notifier stores opened by message_svc and notifier_svc.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from services.common.config import Settings
from tests.certs import Pki
from tests.e2e.harness import start_stack
from tests.receivers import Receiver
from tests.servers import ServerProcess, redis_tls_client, redis_tls_query

pytestmark = pytest.mark.e2e

ADMIN = {"X-Roles": "admin"}


@pytest.fixture
def short_pki(pki: Pki) -> Iterator[Path]:
    """The CA and client certificate under a short path: a pool's URI is at most 255
    characters long, as in Zaqar, so its TLS files must have short names (as they do where
    a Secret is mounted, /etc/zaqar/redis-tls/...)."""
    folder = Path(tempfile.mkdtemp(prefix="zq"))
    for source, name in ((pki.ca, "ca.crt"), (pki.client.cert, "tls.crt"),
                         (pki.client.key, "tls.key")):
        shutil.copy(source, folder / name)
    yield folder
    shutil.rmtree(folder)


def keys(server: ServerProcess, pki: Pki, db: int, pattern: str) -> list[str]:
    client = redis.Redis(port=server.port, db=db, **redis_tls_client(pki))
    try:
        return sorted(key.decode() for key in client.scan_iter(match=pattern))
    finally:
        client.close()


async def test_a_user_flow_with_every_store_over_tls(
    make_settings: Callable[..., Settings], pki: Pki, redis_tls_server: ServerProcess,
    receiver: Receiver, short_pki: Path,
) -> None:
    tls = redis_tls_query(pki)
    project = f"tls-{uuid.uuid4().hex[:8]}"
    base = f"rediss://127.0.0.1:{redis_tls_server.port}"
    settings = make_settings(
        pooling=True,
        queue_store=f"{base}/1?prefix={project}&{tls}",
        message_store=f"{base}/2?prefix={project}&{tls}",
        notifier_store=f"{base}/3?prefix={project}&{tls}",
    )
    stack = start_stack(settings)
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}
    try:
        async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=30) as http:
            # Given a pool on the same server (database 4), in a flavor of its own
            pool_uri = (f"{base}/4?prefix={project}-pool&ssl_ca_certs={short_pki}/ca.crt"
                        f"&ssl_certfile={short_pki}/tls.crt&ssl_keyfile={short_pki}/tls.key")
            assert len(pool_uri) <= 255
            r = await http.put("/v2/pools/tls-pool", headers=ADMIN,
                               json={"uri": pool_uri, "weight": 100, "flavor": "secure"})
            assert r.status_code == 201, r.text
            r = await http.put("/v2/flavors/secure", headers=ADMIN,
                               json={"pool_list": ["tls-pool"]})
            assert r.status_code == 201, r.text
            # (a pool whose server the services do not trust is refused, saying why)
            untrusted = f"{base}/5?ssl_ca_certs={pki.other_ca}"
            r = await http.put("/v2/pools/other", headers=ADMIN,
                               json={"uri": untrusted, "weight": 1})
            assert r.status_code == 400, r.text
            assert "certificate is not trusted" in r.json()["description"]

            # And a queue on the own stores and one on the pool, each with a webhook
            for queue, body in (("plain", {"tier": 1}), ("pooled", {"_flavor": "secure"})):
                r = await http.put(f"/v2/queues/{queue}", json=body)
                assert r.status_code == 201, r.text
                r = await http.post(f"/v2/queues/{queue}/subscriptions",
                              json={"subscriber": receiver.url(), "ttl": 600})
                assert r.status_code == 201, r.text

            for turn, queue in enumerate(("plain", "pooled"), start=1):
                # When three messages are posted
                r = await http.post(f"/v2/queues/{queue}/messages", json={"messages": [
                    {"body": {"queue": queue, "n": n}, "ttl": 300} for n in range(3)
                ]})
                assert r.status_code == 201, r.text
                ids = [href.rsplit("/", 1)[1] for href in r.json()["resources"]]
                # Then the webhook gets each, and two can be claimed and one deleted
                hits = await receiver.wait_for(3 * turn, within=20)
                assert sorted(h.json()["body"]["n"] for h in hits if
                              h.json()["body"]["queue"] == queue) == [0, 1, 2]
                r = await http.post(f"/v2/queues/{queue}/claims?limit=2",
                                    json={"ttl": 60, "grace": 60})
                assert r.status_code == 201, r.text
                claimed = r.json()["messages"]
                assert [m["id"] for m in claimed] == ids[:2]
                assert (await http.delete(claimed[0]["href"])).status_code == 204
                stats = (await http.get(f"/v2/queues/{queue}/stats")).json()["messages"]
                assert (stats["claimed"], stats["free"], stats["total"]) == (1, 1, 2)
            assert (await http.get("/v2/queues/plain")).json()["tier"] == 1

        # And the data is where the URIs say, on the TLS server: queues in database 1, the
        # own queue's messages in 2 and its subscription in 3, the pooled queue's messages and
        # subscription in the pool's database 4
        assert keys(redis_tls_server, pki, 1, f"{project}:*")
        assert keys(redis_tls_server, pki, 2, f"{project}:{{{project}/plain}}:m:*")
        assert not keys(redis_tls_server, pki, 2, f"*{project}/pooled*")
        assert keys(redis_tls_server, pki, 4, f"{project}-pool:{{{project}/pooled}}:m:*")
        assert keys(redis_tls_server, pki, 3, f"{project}*")
        assert keys(redis_tls_server, pki, 4, f"{project}-pool-notifier*")
    finally:
        stack.terminate()
        assert stack.stop() == 0, "".join(stack.output)
