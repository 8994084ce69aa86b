"""The pool catalog contract (``services/testing/catalog_store.py``) over every built-in backend,
and what only some backends have.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.common.errors import Unavailable
from services.queue_svc.storage.registry import open_queue_store
from services.testing.catalog_store import CatalogStoreContract, pool, pool_names
from tests.conftest import FAIL_FAST
from tests.contract.conftest import IN_CLEAR
from tests.servers import mongodb_process, redis_process
from tests.waiting import until

# The store_uri fixture's backends: these stores run on a Redis Cluster too.
STORE_BACKENDS = IN_CLEAR  # over TLS: see IN_CLEAR


class TestCatalogStore(CatalogStoreContract):
    """The contract suite over every backend of ``STORE_BACKENDS``."""


@pytest.mark.parametrize("scheme", ["redis", "mongodb"])
async def test_unreachable_server_is_unavailable(scheme: str, tmp_path: Path) -> None:
    # Given a catalog on a server of its own
    if scheme == "redis":
        server = redis_process(tmp_path / "redis", durable=True)
        uri = "redis://127.0.0.1:{port}/0"
    else:
        server = mongodb_process(tmp_path / "mongodb")
        uri = "mongodb://127.0.0.1:{port}/zaqar?serverSelectionTimeoutMS=500"
    server.start()
    try:
        store = await open_queue_store(uri.format(port=server.port))
        try:
            await store.catalog.put_pool(pool("p1"))
            # When the server goes away
            server.kill()
            # Then reads and changes fail fast as the service's 503, saying what failed
            started = time.monotonic()
            with pytest.raises(Unavailable) as caught:
                await store.catalog.get_pool("p1")
            assert "could not read the pool catalog" in caught.value.description
            with pytest.raises(Unavailable):
                await store.catalog.put_pool(pool("p2"))
            assert time.monotonic() - started < FAIL_FAST
            # And once it is back, the same store works again (as soon as the driver sees it:
            # until then each try fails fast, as above)
            server.start()
            failures: list[Unavailable] = []

            async def stored() -> bool:
                try:
                    await store.catalog.put_pool(pool("p2"))
                except Unavailable as exc:
                    failures.append(exc)
                    return False
                return True

            await until(stored, what=lambda: f"the store still fails: {failures[-1:]}",
                        every=0.1)
            assert "p2" in await pool_names(store.catalog)
            if scheme == "redis":
                # with the acknowledged catalog (Redis writes every change to its log first)
                assert await pool_names(store.catalog) == ["p1", "p2"]
        finally:
            await store.close()
    finally:
        server.kill()
