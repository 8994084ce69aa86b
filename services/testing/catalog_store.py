"""Contract of the pool catalog (``services/queue_svc/storage/catalog.py``), kept by the queue
store, for any backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.common.errors import (
    FlavorNotFound,
    InvalidArgument,
    PoolInUseByFlavor,
    PoolNotFound,
    PoolUriInUse,
)
from services.queue_svc.storage import catalog as catalog_module
from services.queue_svc.storage.catalog import CatalogStore, PoolRecord
from services.queue_svc.storage.registry import open_queue_store
from services.testing.fixtures import Clock


def pool(name: str, uri: str | None = None, weight: int = 100, **kwargs: object) -> PoolRecord:
    return PoolRecord(name, uri or f"redis://127.0.0.1:6379/{name}", weight, **kwargs)  # type: ignore[arg-type]


async def pool_names(catalog: CatalogStore, **kwargs: object) -> list[str]:
    return [p.name for p in await catalog.list_pools(limit=20, **kwargs)]  # type: ignore[arg-type]


class CatalogStoreContract:
    """The contract suite: subclass it in a test module and provide the ``store_uri``
    fixture (``services/testing/__init__.py``)."""

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    async def catalog(self, store_uri: str) -> AsyncIterator[CatalogStore]:
        store = await open_queue_store(store_uri)
        yield store.catalog
        await store.close()

    async def test_empty_catalog(self, catalog: CatalogStore) -> None:
        assert await catalog.get_pool("p1") is None
        assert await catalog.list_pools(limit=10) == []
        assert await catalog.get_flavor("proj", "gold") is None
        assert await catalog.list_flavors("proj", limit=10) == []
        snapshot = await catalog.snapshot()
        assert dict(snapshot.pools) == {} and dict(snapshot.flavors) == {}

    async def test_put_pool_then_get_it_back(self, catalog: CatalogStore) -> None:
        # Given a pool with options of every JSON type, in a deliberate key order
        options = {"z": 1, "nested": {"b": [1, 2.5, None], "a": True}, "big": 2**63 - 1, "s": "é"}
        created = await catalog.put_pool(pool("p1", weight=2**32 - 1, options=options))
        # Then it is new and reads back exactly
        assert created is True
        stored = await catalog.get_pool("p1")
        assert stored == PoolRecord("p1", "redis://127.0.0.1:6379/p1", 2**32 - 1, None, options)
        assert stored is not None and list(stored.options) == ["z", "nested", "big", "s"]

    async def test_put_existing_pool_replaces_it(self, catalog: CatalogStore) -> None:
        await catalog.put_pool(pool("p1", weight=10, flavor="gold", options={"a": 1}))
        created = await catalog.put_pool(pool("p1", uri="mongodb://h/db", weight=20))
        assert created is False
        assert await catalog.get_pool("p1") == PoolRecord("p1", "mongodb://h/db", 20, None, {})

    async def test_two_pools_cannot_share_a_uri(self, catalog: CatalogStore) -> None:
        # Given a pool on a store
        await catalog.put_pool(pool("p1", uri="redis://h:1/0"))
        # When another pool names the same store
        with pytest.raises(PoolUriInUse) as caught:
            await catalog.put_pool(pool("p2", uri="redis://h:1/0"))
        # Then it is refused, naming the pool that has it, and nothing changed
        assert "p1" in caught.value.description
        assert await pool_names(catalog) == ["p1"]
        # And a pool may keep its own uri when it is replaced
        assert await catalog.put_pool(pool("p1", uri="redis://h:1/0", weight=5)) is False

    async def test_list_pools_pages_by_name(self, catalog: CatalogStore) -> None:
        for name in ["c", "a", "e", "b", "d"]:
            await catalog.put_pool(pool(name))
        assert await pool_names(catalog) == ["a", "b", "c", "d", "e"]
        page = await catalog.list_pools(limit=2)
        assert [p.name for p in page] == ["a", "b"]
        page = await catalog.list_pools(limit=2, marker="b")
        assert [p.name for p in page] == ["c", "d"]
        assert await pool_names(catalog, marker="bb") == ["c", "d", "e"]
        assert await pool_names(catalog, marker="e") == []

    async def test_update_pool_changes_only_given_fields(self, catalog: CatalogStore) -> None:
        await catalog.put_pool(pool("p1", weight=10, flavor="gold", options={"a": 1}))
        updated = await catalog.update_pool("p1", weight=30)
        assert updated == PoolRecord("p1", "redis://127.0.0.1:6379/p1", 30, "gold", {"a": 1})
        updated = await catalog.update_pool("p1", uri="sqlite:////tmp/x.db", options={"b": 2})
        assert updated == PoolRecord("p1", "sqlite:////tmp/x.db", 30, "gold", {"b": 2})
        updated = await catalog.update_pool("p1", flavor=None)
        assert updated.flavor is None
        assert await catalog.get_pool("p1") == updated

    async def test_update_absent_pool_is_not_found(self, catalog: CatalogStore) -> None:
        with pytest.raises(PoolNotFound):
            await catalog.update_pool("nope", weight=1)

    async def test_update_pool_to_another_pools_uri_conflicts(self, catalog: CatalogStore) -> None:
        await catalog.put_pool(pool("p1", uri="redis://h:1/0"))
        await catalog.put_pool(pool("p2", uri="redis://h:2/0"))
        with pytest.raises(PoolUriInUse):
            await catalog.update_pool("p2", uri="redis://h:1/0")
        assert (await catalog.get_pool("p2")) == pool("p2", uri="redis://h:2/0")

    async def test_delete_pool_is_idempotent(self, catalog: CatalogStore) -> None:
        await catalog.put_pool(pool("p1"))
        assert await catalog.delete_pool("p1") is True
        assert await catalog.delete_pool("p1") is False
        assert await catalog.get_pool("p1") is None

    async def test_put_flavor_tags_its_pools(self, catalog: CatalogStore) -> None:
        # Given three pools
        for name in ("p1", "p2", "p3"):
            await catalog.put_pool(pool(name))
        # When a project defines a flavor of two of them
        assert await catalog.put_flavor("proj", "gold", ["p2", "p1"]) is True
        # Then the flavor lists them by name, and they carry its name
        flavor = await catalog.get_flavor("proj", "gold")
        assert flavor is not None
        assert (flavor.project, flavor.name) == ("proj", "gold")
        assert [p.name for p in flavor.pools] == ["p1", "p2"]
        assert (await catalog.get_pool("p1")).flavor == "gold"  # type: ignore[union-attr]
        assert (await catalog.get_pool("p3")).flavor is None  # type: ignore[union-attr]

    async def test_flavors_are_per_project(self, catalog: CatalogStore) -> None:
        await catalog.put_pool(pool("p1"))
        await catalog.put_flavor("proj", "gold", ["p1"])
        assert await catalog.get_flavor("other", "gold") is None
        assert await catalog.list_flavors("other", limit=10) == []
        assert await catalog.delete_flavor("other", "gold") is False
        assert await catalog.get_flavor("proj", "gold") is not None

    async def test_redefining_a_flavor_moves_pools_in_and_out(self, catalog: CatalogStore) -> None:
        for name in ("p1", "p2", "p3"):
            await catalog.put_pool(pool(name))
        await catalog.put_flavor("proj", "gold", ["p1", "p2"])
        assert await catalog.put_flavor("proj", "gold", ["p3"]) is False
        flavor = await catalog.get_flavor("proj", "gold")
        assert flavor is not None and [p.name for p in flavor.pools] == ["p3"]
        assert (await catalog.get_pool("p1")).flavor is None  # type: ignore[union-attr]

    async def test_flavor_with_an_absent_pool_changes_nothing(self, catalog: CatalogStore) -> None:
        await catalog.put_pool(pool("p1"))
        with pytest.raises(PoolNotFound):
            await catalog.put_flavor("proj", "gold", ["p1", "ghost"])
        assert await catalog.get_flavor("proj", "gold") is None
        assert (await catalog.get_pool("p1")).flavor is None  # type: ignore[union-attr]

    async def test_update_flavor_needs_the_flavor(self, catalog: CatalogStore) -> None:
        await catalog.put_pool(pool("p1"))
        await catalog.put_pool(pool("p2"))
        with pytest.raises(FlavorNotFound):
            await catalog.update_flavor("proj", "gold", ["p1"])
        await catalog.put_flavor("proj", "gold", ["p1"])
        updated = await catalog.update_flavor("proj", "gold", ["p2"])
        assert [p.name for p in updated.pools] == ["p2"]
        with pytest.raises(PoolNotFound):
            await catalog.update_flavor("proj", "gold", ["ghost"])

    async def test_list_flavors_pages_by_name(self, catalog: CatalogStore) -> None:
        await catalog.put_pool(pool("p1"))
        for name in ("silver", "bronze", "gold"):
            await catalog.put_flavor("proj", name, ["p1"])
        page = await catalog.list_flavors("proj", limit=2)
        assert [f.name for f in page] == ["bronze", "gold"]
        # One pool carries one flavor name: the last definition took it
        assert [[p.name for p in f.pools] for f in page] == [[], ["p1"]]
        page = await catalog.list_flavors("proj", limit=2, marker="gold")
        assert [f.name for f in page] == ["silver"]

    async def test_delete_flavor_frees_its_pools(self, catalog: CatalogStore) -> None:
        await catalog.put_pool(pool("p1"))
        await catalog.put_flavor("proj", "gold", ["p1"])
        assert await catalog.delete_flavor("proj", "gold") is True
        assert await catalog.get_flavor("proj", "gold") is None
        assert (await catalog.get_pool("p1")).flavor is None  # type: ignore[union-attr]
        assert await catalog.delete_flavor("proj", "gold") is False

    async def test_flavor_name_shared_by_projects_keeps_its_pools(
        self, catalog: CatalogStore
    ) -> None:
        # Given two projects defining the same flavor name
        await catalog.put_pool(pool("p1"))
        await catalog.put_flavor("a", "gold", ["p1"])
        await catalog.put_flavor("b", "gold", ["p1"])
        # When one deletes it, the pool stays in the other's flavor
        await catalog.delete_flavor("a", "gold")
        flavor = await catalog.get_flavor("b", "gold")
        assert flavor is not None and [p.name for p in flavor.pools] == ["p1"]

    async def test_last_pool_of_a_flavor_cannot_be_deleted(self, catalog: CatalogStore) -> None:
        # Given a flavor of two pools
        await catalog.put_pool(pool("p1"))
        await catalog.put_pool(pool("p2"))
        await catalog.put_flavor("proj", "gold", ["p1", "p2"])
        # Then one may go, but not the last one
        assert await catalog.delete_pool("p1") is True
        with pytest.raises(PoolInUseByFlavor) as caught:
            await catalog.delete_pool("p2")
        assert "gold" in caught.value.description
        assert await catalog.get_pool("p2") is not None
        # Until the flavor is gone
        await catalog.delete_flavor("proj", "gold")
        assert await catalog.delete_pool("p2") is True

    async def test_pool_tagged_with_an_undefined_flavor_can_be_deleted(
        self, catalog: CatalogStore
    ) -> None:
        await catalog.put_pool(pool("p1", flavor="nobody-defines-it"))
        assert await catalog.delete_pool("p1") is True

    async def test_concurrent_changes_are_all_kept(self, catalog: CatalogStore) -> None:
        # When many pools are registered at once (each a compare-and-set of the same document)
        await asyncio.gather(*(catalog.put_pool(pool(f"p{i:02d}")) for i in range(20)))
        # Then none was lost
        assert await pool_names(catalog) == [f"p{i:02d}" for i in range(20)]

    async def test_concurrent_deletes_keep_the_last_pool_of_a_flavor(
        self, catalog: CatalogStore
    ) -> None:
        # Given a flavor of two pools
        await catalog.put_pool(pool("p1"))
        await catalog.put_pool(pool("p2"))
        await catalog.put_flavor("proj", "gold", ["p1", "p2"])
        # When both are deleted at once
        results = await asyncio.gather(
            catalog.delete_pool("p1"), catalog.delete_pool("p2"), return_exceptions=True
        )
        # Then exactly one went
        assert sorted(type(r).__name__ for r in results) == ["PoolInUseByFlavor", "bool"]
        flavor = await catalog.get_flavor("proj", "gold")
        assert flavor is not None and len(flavor.pools) == 1

    async def test_pool_count_is_bounded(
        self,
        catalog: CatalogStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(catalog_module, "POOLS_MAX", 2)
        await catalog.put_pool(pool("p1"))
        await catalog.put_pool(pool("p2"))
        with pytest.raises(InvalidArgument, match="at most 2 pools"):
            await catalog.put_pool(pool("p3"))
        assert await catalog.put_pool(pool("p2", weight=1)) is False

    async def test_data_survives_reopening(self, store_uri: str) -> None:
        store = await open_queue_store(store_uri)
        await store.catalog.put_pool(pool("p1"))
        await store.catalog.put_flavor("proj", "gold", ["p1"])
        await store.close()
        store = await open_queue_store(store_uri)
        try:
            flavor = await store.catalog.get_flavor("proj", "gold")
            assert flavor is not None and [p.name for p in flavor.pools] == ["p1"]
        finally:
            await store.close()
