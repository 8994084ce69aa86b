"""Zaqar v2 admin documents <-> protobuf: pools, flavors and the detailed health document.

Transport-neutral, like ``translate.py``: shape errors (a field of the wrong JSON type, an
unknown field) raise :class:`~services.api_gateway.errors.ApiError` 400 here; the rules
(names, reachable URIs, pools that exist) are queue_svc's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import orjson
from zaqar_grpc.v2 import admin_pb2

from services.api_gateway.errors import bad_body

POOL_FIELDS: Final = ("uri", "weight", "flavor", "options")
# Zaqar also accepts the obsolete pool "group"; it has no effect.
POOL_CREATE_FIELDS: Final = frozenset({*POOL_FIELDS, "group"})
# Zaqar accepts "capabilities" on a flavor write and replaces them with the pools' own.
FLAVOR_FIELDS: Final = frozenset({"pool_list", "capabilities"})
WEIGHT_MAX: Final = 2**32 - 1
NO_POOL_FIELDS: Final = "One of `uri`, `weight`, `flavor`, or `options` needs to be specified"
RETRY_LATER: Final = "Please try again in a few seconds."
NO_POOL_LIST: Final = "`pool_list` needs to be specified: the names of the flavor's pools."

# The timed operations of a health report, in the order Zaqar runs them.
OPERATIONS: Final = (
    "create_queue", "post_messages", "claim_messages", "list_messages", "delete_messages",
    "delete_claim", "bulk_delete_messages", "delete_queue",
)


def _object(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise bad_body("Request body must be a JSON object.")
    return doc


def _unknown(doc: Mapping[str, Any], known: Iterable[str]) -> None:
    extra = sorted(set(doc) - set(known))
    if extra:
        raise bad_body(f"Unknown fields: {', '.join(extra)}.")


def _text(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, str):
        raise bad_body(f'The value of the "{name}" field must be a str.')
    return value


def _weight(doc: Mapping[str, Any]) -> int | None:
    value = doc.get("weight")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= WEIGHT_MAX:
        raise bad_body(f"weight must be an integer from 0 to {WEIGHT_MAX}.")
    return value


def _options(doc: Mapping[str, Any]) -> bytes | None:
    if "options" not in doc:
        return None
    if not isinstance(doc["options"], dict):
        raise bad_body('The value of the "options" field must be an object.')
    return orjson.dumps(doc["options"])


# Pools ----------------------------------------------------------------------------------------


def put_pool_request(name: str, doc: Any) -> admin_pb2.PutPoolRequest:
    """``{"uri": str, "weight": int, "flavor"?: str, "options"?: object}``."""
    body = _object(doc)
    _unknown(body, POOL_CREATE_FIELDS)
    uri, weight = _text(body, "uri"), _weight(body)
    if uri is None or weight is None:
        raise bad_body("`uri` and `weight` are required.")
    _text(body, "group")
    return admin_pb2.PutPoolRequest(
        name=name, uri=uri, weight=weight, flavor=_text(body, "flavor") or "",
        options=_options(body) or b"",
    )


def update_pool_request(name: str, doc: Any) -> admin_pb2.UpdatePoolRequest:
    """Some of ``uri``, ``weight``, ``flavor`` ("" or null: out of its flavor), ``options``."""
    body = _object(doc)
    if not any(field in body for field in POOL_FIELDS):
        raise bad_body(NO_POOL_FIELDS)
    _unknown(body, POOL_FIELDS)
    request = admin_pb2.UpdatePoolRequest(name=name)
    uri, weight, options = _text(body, "uri"), _weight(body), _options(body)
    if uri is not None:
        request.uri = uri
    if weight is not None:
        request.weight = weight
    if "flavor" in body:
        request.flavor = _text(body, "flavor") or ""
    if options is not None:
        request.options = options
    return request


def pool_doc(pool: admin_pb2.Pool, href: str, detailed: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": pool.name,
        "uri": pool.uri,
        "weight": pool.weight,
        "flavor": pool.flavor or None,
    }
    if detailed:
        doc["options"] = orjson.Fragment(pool.options or b"{}")
    doc["href"] = href
    return doc


# Flavors --------------------------------------------------------------------------------------


def flavor_pools(doc: Any) -> list[str]:
    """The ``pool_list`` of a flavor write."""
    body = _object(doc)
    if "pool_list" not in body:
        raise bad_body(NO_POOL_LIST)
    _unknown(body, FLAVOR_FIELDS)
    pools = body["pool_list"]
    if not isinstance(pools, list) or not all(isinstance(p, str) for p in pools):
        raise bad_body('The value of the "pool_list" field must be a list of pool names.')
    if "capabilities" in body and not isinstance(body["capabilities"], dict):
        raise bad_body('The value of the "capabilities" field must be an object.')
    return pools


def flavor_doc(flavor: admin_pb2.Flavor, href: str, capabilities: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": flavor.name, "pool_list": list(flavor.pool_list)}
    if capabilities:
        doc["capabilities"] = list(flavor.capabilities)
    doc["href"] = href
    return doc


# Health ---------------------------------------------------------------------------------------


def operation_status(reports: Sequence[admin_pb2.StoreReport]) -> dict[str, Any]:
    """Zaqar's ``operation_status``: each timed operation as ``{succeeded, seconds, ref}``.

    An operation that touched several stores (``delete_queue`` removes the queue's record
    from queue_svc's store and its messages from message_svc's) took the sum of their times
    and succeeded only if it succeeded on each; its ref is the first failure's.
    """
    status: dict[str, Any] = {}
    for name in OPERATIONS:
        runs = [op for report in reports for op in report.operations if op.name == name]
        if runs:
            refs = [op.ref for op in runs if op.ref]
            status[name] = {
                "succeeded": all(op.succeeded for op in runs),
                "seconds": sum(op.seconds for op in runs),
                "ref": refs[0] if refs else None,
            }
    return status


def store_doc(reports: Sequence[admin_pb2.StoreReport]) -> dict[str, Any]:
    """``{storage_reachable, operation_status}`` of a store and the stores serving with it."""
    return {
        "storage_reachable": all(report.reachable for report in reports),
        "operation_status": operation_status(reports),
    }


# notifier_svc's report on a pool's notifier store; shown with the pool's message store.
SUBSCRIPTION_POOL: Final = "pool-subscription:"


def health_doc(reports: Sequence[admin_pb2.StoreReport], pooling: bool) -> dict[str, Any]:
    """The detailed health document.

    Without pooling, Zaqar's single-store shape. With pooling, ``catalog_reachable`` and,
    under each pool's name, that pool's stores (messages, and subscriptions when
    notifier_svc reported them) as Zaqar's pooled driver reports its store; the
    top-level fields stay those of the default stores (queues not placed on a pool).
    """
    by_store = {report.store: report for report in reports}
    default = [r for name, r in by_store.items() if name in ("queue", "message", "subscription")]
    doc: dict[str, Any] = {}
    if pooling:
        catalog = by_store.get("catalog")
        doc["catalog_reachable"] = catalog is not None and catalog.reachable
    doc.update(store_doc(default))
    for name, report in by_store.items():
        if name.startswith("pool:"):
            pool = name.removeprefix("pool:")
            subscriptions = by_store.get(SUBSCRIPTION_POOL + pool)
            doc[pool] = store_doc([report] + ([subscriptions] if subscriptions else []))
    return doc


def unreachable(reports: Sequence[admin_pb2.StoreReport]) -> list[str]:
    """A sentence per store that does not answer, naming it and why."""
    names = {"queue": "queue store", "catalog": "pool catalog", "message": "message store",
             "subscription": "subscription store"}
    return [
        f"the {names.get(r.store, _pool_store(r.store))} is not "
        f"reachable ({_problem(r.problem)})"
        for r in reports
        if not r.reachable
    ]


def _pool_store(name: str) -> str:
    if name.startswith(SUBSCRIPTION_POOL):
        return "subscription store of pool " + name.removeprefix(SUBSCRIPTION_POOL)
    return name.replace("pool:", "store of pool ")


def _problem(text: str) -> str:
    return text.replace(RETRY_LATER, "").strip().rstrip(".") or "no answer"
