"""The reserved queue metadata key ``_message_schema``: a JSON Schema (draft 2020-12) that
every message body posted to the queue must match.

queue_svc refuses a queue whose ``_message_schema`` is not a usable schema
(:func:`schema_error`); message_svc's built-in ``message_schema`` filter compiles it
(:func:`compile_schema`) and names the first error of a body that does not match
(:func:`first_error`). Both sides share this module so that what queue_svc accepts is exactly
what message_svc can compile.

A schema is usable when it is a JSON object or boolean, at most :data:`SCHEMA_SIZE_MAX` bytes
as compact JSON, valid against the draft 2020-12 meta-schema, and every ``$ref`` /
``$dynamicRef`` in it points into the schema itself (``#...``): nothing is fetched, ever.
``format`` is an annotation only (draft 2020-12's default), not asserted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

KEY: Final = "_message_schema"
SCHEMA_SIZE_MAX: Final = 16 * 1024
"""Largest ``_message_schema``, in bytes of its compact JSON."""
_ERROR_TEXT_MAX: Final = 300
_REF_KEYS: Final = ("$ref", "$dynamicRef")


def _no_retrieval(uri: str) -> Resource[Any]:
    raise NoSuchResource(uri)


# Resolves references inside the schema only (a queue's schema never makes us fetch a URL).
_REGISTRY: Final[Registry[Any]] = Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _REF_KEYS and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def schema_error(schema: Any) -> str | None:
    """Why ``schema`` cannot be a queue's ``_message_schema``; None when it can."""
    if not isinstance(schema, dict | bool):
        return f"{KEY} must be a JSON Schema (an object or a boolean)."
    size = len(orjson.dumps(schema))
    if size > SCHEMA_SIZE_MAX:
        return f"{KEY} is too large: {size} bytes, at most {SCHEMA_SIZE_MAX}."
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = _pointer(exc.absolute_path)
        return f"{KEY} is not a valid JSON Schema (draft 2020-12) at {where}: {_short(exc)}"
    for ref in _refs(schema):
        if not ref.startswith("#"):
            return (f"{KEY} may only refer to its own parts ($ref \"#...\"), "
                    f"not to {ref[:100]!r}.")
    return None


def compile_schema(schema: Any) -> Validator:
    """A validator of ``schema``, which :func:`schema_error` accepts."""
    return Draft202012Validator(schema, registry=_REGISTRY)


def first_error(validator: Validator, document: Any) -> tuple[str, str] | None:
    """``(JSON pointer into document, what is wrong)`` of the most relevant error
    (jsonschema's ``best_match``), or None when ``document`` matches."""
    error = best_match(validator.iter_errors(document))
    if error is None:
        return None
    return _pointer(error.absolute_path), _short(error)


def _pointer(path: Any) -> str:
    """RFC 6901 pointer of a path (``""`` is the whole document)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _short(error: Exception) -> str:
    text = getattr(error, "message", None) or str(error)
    return text if len(text) <= _ERROR_TEXT_MAX else text[:_ERROR_TEXT_MAX - 3] + "..."
