"""The storage contract of the pool catalog: pools and flavors, in queue_svc's store.

A *pool* is a message store (named by its URI) that queues can be placed on; it has a weight
(its share of the new queues of its flavor), free-form options, and may belong to one
*flavor*. Pools are global. A *flavor* is a name a project uses to ask for a kind of store
(``_flavor`` in queue metadata); flavors are defined per project, as in Zaqar, and a flavor's
pools are the pools that carry its name, so one flavor name stands for the same pools in every
project that defines it.

Every backend implements :class:`CatalogStore` and is checked by one contract suite
(``tests/contract/test_catalog_store.py``). The catalog is admin configuration, small and
rarely written, so each backend keeps all of it in **one versioned document** and offers two
primitives: read the document, and replace it only if its version is still the one read.
Every rule (unique URIs, a flavor's pools must exist, the last pool of a flavor in use cannot
be deleted) is written once in :class:`CatalogStoreBase` as a compare-and-set loop over them,
so each change is atomic on every backend, MongoDB without transactions included.

Errors: the methods raise the :mod:`services.common.errors` classes named in their
docstrings; backend driver failures become :class:`services.common.errors.Unavailable` at the
backend's edge.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol, TypeVar

import orjson

from services.common.errors import (
    FlavorNotFound,
    InvalidArgument,
    PoolInUseByFlavor,
    PoolNotFound,
    PoolUriInUse,
)
from services.common.store_edge import contended

T = TypeVar("T")

POOLS_MAX: Final = 1000
FLAVORS_MAX: Final = 10_000
# Compare-and-set attempts of one change; each lost race means another change was stored.
MAX_ATTEMPTS: Final = 100
STORE: Final = "queue store"


@dataclass(frozen=True, slots=True)
class PoolRecord:
    name: str
    uri: str
    weight: int
    flavor: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FlavorRecord:
    """A flavor of a project with its pools (sorted by name)."""

    project: str
    name: str
    pools: tuple[PoolRecord, ...]


@dataclass(frozen=True, slots=True)
class Retiring:
    """A pool on its way out: the deletion ``token`` that marked it, and until when (Unix
    seconds) the mark keeps new queues off the pool, so that a deletion that died midway
    does not keep them off for ever."""

    token: str
    until: float


@dataclass(frozen=True, slots=True)
class Catalog:
    """One consistent view of the whole catalog."""

    pools: Mapping[str, PoolRecord] = field(default_factory=dict)
    flavors: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """project -> names of its flavors"""
    retiring: Mapping[str, Retiring] = field(default_factory=dict)
    """pool -> the mark of a deletion in progress (``CatalogService.delete_pool``)"""

    def takes_new_queues(self, pool: str, now: float) -> bool:
        """No deletion of ``pool`` is under way (or its mark has lapsed)."""
        mark = self.retiring.get(pool)
        return mark is None or mark.until <= now

    def pools_of(self, flavor: str) -> tuple[PoolRecord, ...]:
        return tuple(sorted(
            (pool for pool in self.pools.values() if pool.flavor == flavor),
            key=lambda pool: pool.name,
        ))

    def flavor(self, project: str, name: str) -> FlavorRecord | None:
        if name not in self.flavors.get(project, ()):
            return None
        return FlavorRecord(project, name, self.pools_of(name))

    def defined_anywhere(self, flavor: str) -> bool:
        return any(flavor in names for names in self.flavors.values())

    def with_pools(self, pools: Mapping[str, PoolRecord]) -> Catalog:
        if len(pools) > POOLS_MAX:
            raise InvalidArgument(f"The catalog holds at most {POOLS_MAX} pools.")
        retiring = {name: mark for name, mark in self.retiring.items() if name in pools}
        return replace(self, pools=pools, retiring=retiring)

    def with_retiring(self, retiring: Mapping[str, Retiring]) -> Catalog:
        return replace(self, retiring=retiring)

    def with_flavors(self, flavors: Mapping[str, frozenset[str]]) -> Catalog:
        if sum(len(names) for names in flavors.values()) > FLAVORS_MAX:
            raise InvalidArgument(f"The catalog holds at most {FLAVORS_MAX} flavors.")
        return replace(self, flavors={p: names for p, names in flavors.items() if names})


def encode(catalog: Catalog) -> bytes:
    """The document a backend stores (UTF-8 JSON; options byte-exact, key order kept)."""
    return orjson.dumps({
        "pools": {
            pool.name: {"uri": pool.uri, "weight": pool.weight, "flavor": pool.flavor,
                        "options": pool.options}
            for pool in sorted(catalog.pools.values(), key=lambda pool: pool.name)
        },
        "flavors": {project: sorted(names) for project, names in sorted(catalog.flavors.items())},
        **({"retiring": {
            name: {"token": mark.token, "until": mark.until}
            for name, mark in sorted(catalog.retiring.items())
        }} if catalog.retiring else {}),
    })


def decode(document: bytes | str | None) -> Catalog:
    if not document:
        return Catalog()
    raw = orjson.loads(document)
    return Catalog(
        pools={
            name: PoolRecord(name, p["uri"], p["weight"], p["flavor"], p["options"])
            for name, p in raw["pools"].items()
        },
        flavors={project: frozenset(names) for project, names in raw["flavors"].items()},
        retiring={
            name: Retiring(mark["token"], mark["until"])
            for name, mark in raw.get("retiring", {}).items()
        },
    )


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()


class CatalogStore(Protocol):
    """Pools (global) and flavors (per project). Every method is atomic on its own and
    durable once it returns."""

    async def snapshot(self) -> Catalog:
        """The whole catalog as one consistent view."""
        ...

    async def put_pool(self, pool: PoolRecord) -> bool:
        """Register ``pool``, or replace the pool of that name.

        Returns:
            True when there was no pool of that name.

        Raises:
            PoolUriInUse: another pool has the same ``uri``.
        """
        ...

    async def get_pool(self, name: str) -> PoolRecord | None:
        ...

    async def list_pools(self, *, limit: int, marker: str = "") -> list[PoolRecord]:
        """Up to ``limit`` pools named after ``marker`` (exclusive), by name."""
        ...

    async def update_pool(
        self,
        name: str,
        *,
        uri: str | None = None,
        weight: int | None = None,
        flavor: str | _Unchanged | None = UNCHANGED,
        options: Mapping[str, Any] | None = None,
    ) -> PoolRecord:
        """Change the given fields (``flavor=None`` takes the pool out of its flavor).

        Raises:
            PoolNotFound: there is no such pool.
            PoolUriInUse: another pool has the new ``uri``.
        """
        ...

    async def delete_pool(self, name: str) -> bool:
        """Deregister the pool. Idempotent.

        Returns:
            True when it existed.

        Raises:
            PoolInUseByFlavor: it is the last pool of a flavor that some project defines.
        """
        ...

    async def retire_pool(self, name: str, mark: Retiring) -> bool:
        """Mark the pool as being deleted (replacing any earlier mark): while the mark holds,
        no new queue is placed on it.

        Returns:
            False when there is no such pool (nothing is marked).
        """
        ...

    async def keep_pool(self, name: str, token: str | None = None) -> None:
        """Remove the pool's deletion mark: any mark, or only one made with ``token``."""
        ...

    async def delete_retired_pool(self, name: str, token: str) -> bool:
        """Deregister the pool only if it still carries the mark made with ``token``.

        Returns:
            False when the mark is gone or another's (the pool stays); True when the pool was
            deleted or was already gone.

        Raises:
            PoolInUseByFlavor: as :meth:`delete_pool`.
        """
        ...

    async def keep_placed_pool(self, pool: PoolRecord) -> bool:
        """A queue was just placed on ``pool`` (as read before the placement): remove any
        deletion mark of it, and register it again if it is gone (when its URI is still
        free), so that a deletion racing with the placement cannot leave the queue on a pool
        that is not in the catalog.

        Returns:
            True when it was registered again.
        """
        ...

    async def put_flavor(self, project: str, name: str, pools: Sequence[str]) -> bool:
        """Define the flavor in ``project`` (or redefine it): afterwards its pools are
        exactly ``pools``; pools that carried the name before and are not listed leave it
        (in every project defining that name).

        Returns:
            True when the project had no flavor of that name.

        Raises:
            PoolNotFound: a listed pool does not exist (then nothing changes).
        """
        ...

    async def update_flavor(self, project: str, name: str, pools: Sequence[str]) -> FlavorRecord:
        """As :meth:`put_flavor`, for a flavor that must exist.

        Raises:
            FlavorNotFound: the project has no flavor of that name.
            PoolNotFound: a listed pool does not exist.
        """
        ...

    async def get_flavor(self, project: str, name: str) -> FlavorRecord | None:
        ...

    async def list_flavors(
        self, project: str, *, limit: int, marker: str = ""
    ) -> list[FlavorRecord]:
        """Up to ``limit`` flavors of ``project`` named after ``marker``, by name."""
        ...

    async def delete_flavor(self, project: str, name: str) -> bool:
        """Delete the project's flavor. Idempotent. When no other project defines the name,
        its pools leave it.

        Returns:
            True when it existed.
        """
        ...


class CatalogStoreBase(ABC):
    """:class:`CatalogStore` written once over a backend's two primitives."""

    @abstractmethod
    async def _load(self) -> tuple[int, bytes | str | None]:
        """The stored document and its version; ``(0, None)`` when nothing is stored yet."""

    @abstractmethod
    async def _store(self, version: int, document: bytes) -> bool:
        """Replace the document, as version ``version + 1``, only if the stored version is
        still ``version`` (0: nothing stored yet); whether it was replaced. Atomic."""

    async def snapshot(self) -> Catalog:
        return decode((await self._load())[1])

    async def _change(self, edit: Callable[[Catalog], tuple[Catalog, T]]) -> T:
        """Apply ``edit`` (the new catalog and what to return) as one compare-and-set; an
        exception of ``edit`` aborts the change."""
        for _ in range(MAX_ATTEMPTS):
            version, document = await self._load()
            catalog = decode(document)
            changed, result = edit(catalog)
            if changed is catalog or await self._store(version, encode(changed)):
                return result
        raise contended(STORE, "change the pool catalog")

    # Pools ----------------------------------------------------------------------------------

    async def put_pool(self, pool: PoolRecord) -> bool:
        def edit(catalog: Catalog) -> tuple[Catalog, bool]:
            _check_uri_free(catalog, pool.name, pool.uri)
            pools = {**catalog.pools, pool.name: pool}
            return catalog.with_pools(pools), pool.name not in catalog.pools

        return await self._change(edit)

    async def get_pool(self, name: str) -> PoolRecord | None:
        return (await self.snapshot()).pools.get(name)

    async def list_pools(self, *, limit: int, marker: str = "") -> list[PoolRecord]:
        pools = (await self.snapshot()).pools
        return [pools[name] for name in sorted(n for n in pools if n > marker)[:limit]]

    async def update_pool(
        self,
        name: str,
        *,
        uri: str | None = None,
        weight: int | None = None,
        flavor: str | _Unchanged | None = UNCHANGED,
        options: Mapping[str, Any] | None = None,
    ) -> PoolRecord:
        def edit(catalog: Catalog) -> tuple[Catalog, PoolRecord]:
            pool = catalog.pools.get(name)
            if pool is None:
                raise PoolNotFound(pool=name)
            if uri is not None:
                _check_uri_free(catalog, name, uri)
                pool = replace(pool, uri=uri)
            if weight is not None:
                pool = replace(pool, weight=weight)
            if not isinstance(flavor, _Unchanged):
                pool = replace(pool, flavor=flavor)
            if options is not None:
                pool = replace(pool, options=options)
            return catalog.with_pools({**catalog.pools, name: pool}), pool

        return await self._change(edit)

    async def delete_pool(self, name: str) -> bool:
        def edit(catalog: Catalog) -> tuple[Catalog, bool]:
            if name not in catalog.pools:
                return catalog, False
            return _without_pool(catalog, name), True

        return await self._change(edit)

    async def retire_pool(self, name: str, mark: Retiring) -> bool:
        def edit(catalog: Catalog) -> tuple[Catalog, bool]:
            if name not in catalog.pools:
                return catalog, False
            return catalog.with_retiring({**catalog.retiring, name: mark}), True

        return await self._change(edit)

    async def keep_pool(self, name: str, token: str | None = None) -> None:
        def edit(catalog: Catalog) -> tuple[Catalog, None]:
            mark = catalog.retiring.get(name)
            if mark is None or (token is not None and mark.token != token):
                return catalog, None
            return catalog.with_retiring(
                {n: m for n, m in catalog.retiring.items() if n != name}
            ), None

        await self._change(edit)

    async def delete_retired_pool(self, name: str, token: str) -> bool:
        def edit(catalog: Catalog) -> tuple[Catalog, bool]:
            if name not in catalog.pools:
                return catalog, True
            mark = catalog.retiring.get(name)
            if mark is None or mark.token != token:
                return catalog, False
            return _without_pool(catalog, name), True

        return await self._change(edit)

    async def keep_placed_pool(self, pool: PoolRecord) -> bool:
        def edit(catalog: Catalog) -> tuple[Catalog, bool]:
            if pool.name in catalog.pools:
                if pool.name not in catalog.retiring:
                    return catalog, False
                return catalog.with_retiring(
                    {n: m for n, m in catalog.retiring.items() if n != pool.name}
                ), False
            if any(other.uri == pool.uri for other in catalog.pools.values()):
                return catalog, False
            return catalog.with_pools({**catalog.pools, pool.name: pool}), True

        return await self._change(edit)

    # Flavors --------------------------------------------------------------------------------

    async def put_flavor(self, project: str, name: str, pools: Sequence[str]) -> bool:
        def edit(catalog: Catalog) -> tuple[Catalog, bool]:
            created = name not in catalog.flavors.get(project, ())
            return _define(catalog, project, name, pools), created

        return await self._change(edit)

    async def update_flavor(self, project: str, name: str, pools: Sequence[str]) -> FlavorRecord:
        def edit(catalog: Catalog) -> tuple[Catalog, FlavorRecord]:
            if name not in catalog.flavors.get(project, ()):
                raise FlavorNotFound(flavor=name)
            changed = _define(catalog, project, name, pools)
            record = changed.flavor(project, name)
            assert record is not None
            return changed, record

        return await self._change(edit)

    async def get_flavor(self, project: str, name: str) -> FlavorRecord | None:
        return (await self.snapshot()).flavor(project, name)

    async def list_flavors(
        self, project: str, *, limit: int, marker: str = ""
    ) -> list[FlavorRecord]:
        catalog = await self.snapshot()
        names = sorted(n for n in catalog.flavors.get(project, ()) if n > marker)[:limit]
        return [FlavorRecord(project, n, catalog.pools_of(n)) for n in names]

    async def delete_flavor(self, project: str, name: str) -> bool:
        def edit(catalog: Catalog) -> tuple[Catalog, bool]:
            names = catalog.flavors.get(project, frozenset())
            if name not in names:
                return catalog, False
            changed = catalog.with_flavors({**catalog.flavors, project: names - {name}})
            if not changed.defined_anywhere(name):
                changed = changed.with_pools({
                    n: replace(p, flavor=None) if p.flavor == name else p
                    for n, p in changed.pools.items()
                })
            return changed, True

        return await self._change(edit)


def _without_pool(catalog: Catalog, name: str) -> Catalog:
    """The catalog without pool ``name`` (and its deletion mark).

    Raises:
        PoolInUseByFlavor: it is the last pool of a flavor that some project defines.
    """
    pool = catalog.pools[name]
    if (
        pool.flavor is not None
        and catalog.defined_anywhere(pool.flavor)
        and len(catalog.pools_of(pool.flavor)) == 1
    ):
        raise PoolInUseByFlavor(flavor=pool.flavor)
    return catalog.with_pools({n: p for n, p in catalog.pools.items() if n != name})


def _check_uri_free(catalog: Catalog, name: str, uri: str) -> None:
    for other in catalog.pools.values():
        if other.uri == uri and other.name != name:
            raise PoolUriInUse(other=other.name, uri=uri)


def _define(catalog: Catalog, project: str, name: str, pools: Sequence[str]) -> Catalog:
    """The catalog with the project's flavor ``name`` made of exactly ``pools``."""
    wanted = set(pools)
    for pool in pools:
        if pool not in catalog.pools:
            raise PoolNotFound(pool=pool)
    tagged = {
        n: replace(p, flavor=name) if n in wanted
        else replace(p, flavor=None) if p.flavor == name
        else p
        for n, p in catalog.pools.items()
    }
    names = catalog.flavors.get(project, frozenset()) | {name}
    return catalog.with_pools(tagged).with_flavors({**catalog.flavors, project: names})
