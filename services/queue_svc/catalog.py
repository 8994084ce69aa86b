"""Pools and flavors (contract §2): the rules of the admin API over the catalog store.

Descriptions follow Zaqar's where Zaqar has one. A pool's uri must be a store URI of ours and
its store must answer before the pool is registered (Zaqar's ``can_connect``); the check runs
off the event loop for SQLite and with a time limit for every backend.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

import orjson

from services.common import limits, store_probe
from services.common.config import ConfigurationError
from services.common.errors import (
    FlavorNotFound,
    InvalidArgument,
    InvalidBody,
    InvalidFlavor,
    PoolHoldsQueues,
    PoolNotFound,
    ServiceError,
)
from services.common.store_uri import redact
from services.queue_svc import validation
from services.queue_svc.storage.catalog import (
    UNCHANGED,
    Catalog,
    CatalogStore,
    FlavorRecord,
    PoolRecord,
    Retiring,
)

log = logging.getLogger(__name__)

WEIGHT_MAX: Final = 2**32 - 1
URI_MAX: Final = 255
OPTIONS_MAX: Final = 4096
# Pool names are keys of the pooled health document, next to these.
RESERVED_POOL_NAMES: Final = frozenset({"catalog_reachable", "storage_reachable",
                                        "operation_status"})
NO_FIELDS: Final = "One of `uri`, `weight`, `flavor`, or `options` needs to be specified"
STORE: Final = "pool"
# How long a deletion's mark keeps new queues off a pool (seconds): far longer than a
# deletion takes, so that one that died midway frees the pool again on its own.
RETIRE_SECONDS: Final = 60.0

# What each backend guarantees, in the order of Zaqar's Capabilities enum. Redis keeps
# acknowledged writes only as well as the server is configured to, so it does not claim
# durability (as in Zaqar).
CAPABILITY_ORDER: Final = ("FIFO", "CLAIMS", "DURABILITY", "AOD", "HIGH_THROUGHPUT")
CAPABILITIES: Final[dict[str, frozenset[str]]] = {
    "sqlite": frozenset({"FIFO", "CLAIMS", "DURABILITY", "AOD"}),
    **dict.fromkeys(
        store_probe.REDIS_SCHEMES, frozenset({"FIFO", "CLAIMS", "AOD", "HIGH_THROUGHPUT"})
    ),
    "mongodb": frozenset(CAPABILITY_ORDER),
    "mongodb+srv": frozenset(CAPABILITY_ORDER),
}


def capabilities(pools: Iterable[PoolRecord]) -> list[str]:
    """What every store of ``pools`` guarantees (none for no pools)."""
    common: frozenset[str] | None = None
    for pool in pools:
        scheme = pool.uri.partition("://")[0].lower()
        own = CAPABILITIES.get(scheme, frozenset())
        common = own if common is None else common & own
    return [name for name in CAPABILITY_ORDER if common and name in common]


def check_name(name: str, kind: str) -> None:
    if not limits.valid_queue_name(name) or (kind == "pool" and name in RESERVED_POOL_NAMES):
        raise InvalidArgument(
            f"The format of the submitted {kind} name is not valid: at most 64 ASCII letters, "
            "digits, underscores, dashes or dots"
            + (f", and none of {', '.join(sorted(RESERVED_POOL_NAMES))}." if kind == "pool"
               else ".")
        )


def _weight(weight: int) -> int:
    if not 0 <= weight <= WEIGHT_MAX:
        raise InvalidBody(f"weight must be an integer from 0 to {WEIGHT_MAX}.")
    return weight


def _flavor_tag(flavor: str) -> str | None:
    """A pool's flavor as given: empty means none."""
    if not flavor:
        return None
    if len(flavor) > URI_MAX:
        raise InvalidBody(f"flavor may be at most {URI_MAX} characters long.")
    return flavor


def _options(raw: bytes) -> dict[str, Any]:
    if len(raw) > OPTIONS_MAX:
        raise InvalidBody(f"options may be at most {OPTIONS_MAX} bytes of JSON.")
    if not raw.strip():
        return {}
    try:
        options = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidBody("options must be a JSON object.") from None
    if not isinstance(options, dict):
        raise InvalidBody("options must be a JSON object.")
    return options


class CatalogService:
    """The admin API of the pool catalog."""

    def __init__(
        self,
        catalog: CatalogStore,
        probe_seconds: float,
        count_queues: Callable[[str], Awaitable[int]] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        """``count_queues(pool)``: how many queues are placed on the pool (pooling on); a
        pool holding queues is then neither deleted nor moved to another store. ``now``:
        the clock of deletion marks (Unix seconds)."""
        self._catalog = catalog
        self._probe_seconds = probe_seconds
        self._count_queues = count_queues
        self.now = now

    async def snapshot(self) -> Catalog:
        return await self._catalog.snapshot()

    async def _check_empty(self, name: str, verb: str) -> None:
        """Refuse (409) to delete or move a pool that queues are placed on.

        A move to another store is not atomic with placement: a queue placed on the pool
        while its URI changes keeps the pool's new URI. A deletion is (:meth:`delete_pool`).
        """
        if self._count_queues is None:
            return
        count = await self._count_queues(name)
        if count:
            raise PoolHoldsQueues(pool=name, count=count, verb=verb)

    async def _reachable(self, uri: str) -> str:
        """``uri`` when it is one of ours and its store answers; 400 otherwise."""
        if not uri:
            raise InvalidBody("uri is required.")
        if len(uri) > URI_MAX:
            raise InvalidBody(f"uri may be at most {URI_MAX} characters long.")
        try:
            await store_probe.probe(uri, STORE, self._probe_seconds)
        except ConfigurationError as exc:
            raise InvalidBody(str(exc)) from None
        except store_probe.StoreUnreachable as exc:
            raise InvalidBody(f"cannot connect to {redact(uri)}: {exc}") from None
        return uri

    # Pools ----------------------------------------------------------------------------------

    async def put_pool(
        self, name: str, uri: str, weight: int, flavor: str, options: bytes
    ) -> bool:
        """Register or replace a pool; True when it is new."""
        check_name(name, "pool")
        record = PoolRecord(
            name, uri, _weight(weight), _flavor_tag(flavor), _options(options)
        )
        current = await self._catalog.get_pool(name)
        if current is not None and current.uri != uri:
            await self._check_empty(name, "moved to another store")
        await self._reachable(uri)
        return await self._catalog.put_pool(record)

    async def get_pool(self, name: str) -> PoolRecord:
        pool = await self._catalog.get_pool(name)
        if pool is None:
            raise PoolNotFound(pool=name)
        return pool

    async def update_pool(
        self,
        name: str,
        *,
        uri: str | None,
        weight: int | None,
        flavor: str | None,
        options: bytes | None,
    ) -> PoolRecord:
        """Change the given fields; at least one must be given."""
        if uri is None and weight is None and flavor is None and options is None:
            raise InvalidBody(NO_FIELDS)
        parsed_options = None if options is None else _options(options)
        if weight is not None:
            _weight(weight)
        tag = UNCHANGED if flavor is None else _flavor_tag(flavor)
        if uri is not None:
            current = await self._catalog.get_pool(name)
            if current is None:
                raise PoolNotFound(pool=name)
            if current.uri != uri:
                await self._check_empty(name, "moved to another store")
            await self._reachable(uri)
        return await self._catalog.update_pool(
            name, uri=uri, weight=weight, flavor=tag, options=parsed_options
        )

    async def delete_pool(self, name: str) -> None:
        """Deregister the pool unless queues are placed on it (409). Idempotent.

        With pooling, against a placement racing with it (``placement.py``): mark the pool
        (new queues go elsewhere), count its queues, then delete it only if the mark is still
        ours; a placement that stored a queue on the pool meanwhile has removed the mark
        (:meth:`keep_placed`), and the deletion is refused as if the count had seen it.
        """
        if self._count_queues is None:
            await self._catalog.delete_pool(name)
            return
        token = uuid.uuid4().hex
        if not await self._catalog.retire_pool(name, Retiring(token, self.now() + RETIRE_SECONDS)):
            return
        deleted = False
        try:
            await self._check_empty(name, "deleted")
            deleted = await self._catalog.delete_retired_pool(name, token)
            if not deleted:
                raise PoolHoldsQueues(pool=name, count="at least 1", verb="deleted")
        finally:
            if not deleted:
                try:
                    await self._catalog.keep_pool(name, token)
                except ServiceError as exc:
                    log.warning("pool %s keeps its deletion mark until it lapses: %s", name, exc)

    async def keep_placed(self, pool: PoolRecord) -> None:
        """A queue was just stored on ``pool`` (as read before): cancel a deletion of the
        pool under way, or register it again if a deletion got there first."""
        if await self._catalog.keep_placed_pool(pool):
            log.warning("pool %s was deleted while a queue was placed on it: registered again",
                        pool.name)

    async def list_pools(self, *, limit: int | None, marker: str) -> list[PoolRecord]:
        return await self._catalog.list_pools(limit=limits.page_limit(limit), marker=marker)

    # Flavors --------------------------------------------------------------------------------

    def _pool_list(self, name: str, pools: Sequence[str], verb: str) -> list[str]:
        check_name(name, "flavor")
        if not pools:
            raise InvalidFlavor(f"Flavor {name} could not be {verb}: pool_list names no pool.")
        return list(dict.fromkeys(pools))

    async def put_flavor(self, project: str, name: str, pools: Sequence[str]) -> bool:
        """Define the project's flavor as exactly ``pools``; True when it is new."""
        validation.check_project(project)
        wanted = self._pool_list(name, pools, "created")
        try:
            return await self._catalog.put_flavor(project, name, wanted)
        except PoolNotFound as exc:
            raise InvalidFlavor(
                f"Flavor {name} could not be created, error:{exc.description}"
            ) from None

    async def update_flavor(
        self, project: str, name: str, pools: Sequence[str]
    ) -> FlavorRecord:
        validation.check_project(project)
        wanted = self._pool_list(name, pools, "updated")
        try:
            return await self._catalog.update_flavor(project, name, wanted)
        except PoolNotFound as exc:
            raise InvalidFlavor(
                f"Flavor {name} could not be updated, error:{exc.description}"
            ) from None

    async def get_flavor(self, project: str, name: str) -> FlavorRecord:
        validation.check_project(project)
        flavor = await self._catalog.get_flavor(project, name)
        if flavor is None:
            raise FlavorNotFound(flavor=name)
        return flavor

    async def delete_flavor(self, project: str, name: str) -> None:
        validation.check_project(project)
        await self._catalog.delete_flavor(project, name)

    async def list_flavors(
        self, project: str, *, limit: int | None, marker: str
    ) -> list[FlavorRecord]:
        validation.check_project(project)
        return await self._catalog.list_flavors(
            project, limit=limits.page_limit(limit), marker=marker
        )

    def check_flavor_in(self, catalog: Catalog, project: str, name: str) -> None:
        """A queue's ``_flavor``: it must name a flavor of the project in ``catalog``.

        Raises:
            InvalidArgument: it does not.
        """
        if catalog.flavor(project, name) is None:
            raise InvalidArgument(
                f"Flavor {name} does not exist for project {project}: a queue's _flavor must "
                "name one of the project's flavors (GET /v2/flavors)."
            )
