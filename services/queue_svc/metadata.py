"""Queue metadata rules (contract §3): parsing, size, reserved keys, defaults, JSON patches.

Descriptions follow Zaqar's where Zaqar has one, so REST clients see the texts they know.
A reserved key set to null means "use the default".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from services.common import limits, message_schema, plugins
from services.common.errors import InvalidArgument, InvalidBody
from services.queue_svc.storage.base import MetadataPatch, PatchOp

TOO_LARGE = f"Queue metadata is too large. Max size: {limits.METADATA_SIZE_MAX}"
UNPARSABLE = "Request body could not be parsed."
NOT_AN_OBJECT = "Document type not supported."

PATCH_OPS: tuple[PatchOp, ...] = ("add", "remove", "replace")
RETRY_BACKOFF_FUNCTIONS = ("linear", "arithmetic", "geometric", "exponential")
_RETRY_INT_KEYS = (
    "retries_with_no_delay", "minimum_delay_retries", "minimum_delay", "maximum_delay",
    "maximum_delay_retries",
)

# key -> (minimum, maximum, unit in the description)
_RANGES: dict[str, tuple[int, int | None, str]] = {
    "_max_messages_post_size": (1, limits.MESSAGE_POST_SIZE_MAX, ""),
    "_default_message_ttl": (limits.MESSAGE_TTL_MIN, limits.MESSAGE_TTL_MAX, " seconds"),
    "_default_message_delay": (limits.MESSAGE_DELAY_MIN, limits.MESSAGE_DELAY_MAX, " seconds"),
    "_dead_letter_queue_messages_ttl": (limits.MESSAGE_TTL_MIN, limits.MESSAGE_TTL_MAX, " seconds"),
    "_max_claim_count": (1, None, ""),
    "_dedup_window": (limits.DEDUP_WINDOW_MIN, limits.DEDUP_WINDOW_MAX, " seconds"),
}


def parse_object(raw: bytes, error: type[InvalidArgument] = InvalidArgument) -> dict[str, Any]:
    """A metadata document: empty means ``{}``; at most 64 KiB; a JSON object.

    ``error`` is the class of the size error (Zaqar answers PUT with "Invalid API request"
    and PATCH with "Invalid request body").
    """
    if len(raw) > limits.METADATA_SIZE_MAX:
        raise error(TOO_LARGE)
    if not raw.strip():
        return {}
    document = parse_json(raw)
    if not isinstance(document, dict):
        raise InvalidBody(NOT_AN_OBJECT)
    return document


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidBody(UNPARSABLE) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _range_error(key: str, value: int) -> str | None:
    low, high, unit = _RANGES[key]
    if high is None:
        return None if value >= low else f"{key} must be at least {low}."
    if low <= value <= high:
        return None
    if key == "_max_messages_post_size":
        return f"{key} can not exceed {high}, and must be at least greater than 0."
    return f"{key} can not exceed {high}{unit}, and must be at least {low}{unit} long."


def _retry_policy_error(policy: Any) -> str | None:
    if not isinstance(policy, dict):
        return "retry_policy must be a dict."
    function = policy.get("retry_backoff_function")
    if function is not None and not isinstance(function, str):
        return "retry_backoff_function must be a string."
    if function is not None and function not in RETRY_BACKOFF_FUNCTIONS:
        return "retry_backoff_function must be one of: " + ", ".join(RETRY_BACKOFF_FUNCTIONS) + "."
    override = policy.get("ignore_subscription_override")
    if override is not None and not isinstance(override, bool):
        return "ignore_subscription_override must be a boolean."
    for key in _RETRY_INT_KEYS:
        value = policy.get(key)
        if value is not None and not _is_int(value):
            return f"Retry policy: {key} must be an integer."
    return None


def _reserved_error(key: str, value: Any) -> str | None:
    if key in _RANGES:
        if not _is_int(value):
            return f"{key} must be integer."
        return _range_error(key, value)
    if key == "_dead_letter_queue":
        if isinstance(value, str) and limits.valid_queue_name(value):
            return None
        return (f"{key} must be a queue name: at most 64 ASCII letters, digits, "
                "underscores, dashes or dots.")
    if key == "_fifo":
        return None if isinstance(value, bool) else f"{key} must be boolean."
    if key == "_enable_encrypt_messages":
        return None if isinstance(value, bool) else f"{key} must be boolean."
    if key == "_retry_policy":
        return _retry_policy_error(value)
    if key == "_flavor":
        return None if isinstance(value, str) else f"{key} must be a string."
    if key == message_schema.KEY:
        return message_schema.schema_error(value)
    if key == "_filters":
        return _filters_error(value)
    return None


def _filters_error(names: Any) -> str | None:
    """``_filters``: a list of names of installed message filters (message_svc runs them)."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "_filters must be a list of message filter names."
    installed = plugins.entry_points("message filter")
    for name in names:
        if name not in installed:
            known = ", ".join(sorted(installed)) or "none"
            return (f"_filters: no message filter named {name[:64]!r} is installed "
                    f"(installed: {known}).")
    return None


def check_reserved(
    metadata: Mapping[str, Any], error: type[InvalidArgument] = InvalidArgument
) -> None:
    """Raise ``error`` for the first reserved key with a value of the wrong type or range."""
    for key, value in metadata.items():
        if value is None or not key.startswith("_"):
            continue
        description = _reserved_error(key, value)
        if description is not None:
            raise error(description)


NO_ENCRYPTION_KEYS = (
    "_enable_encrypt_messages cannot be true: no message encryption key is configured "
    "(ZAQAR_MESSAGE_ENCRYPTION_KEYS)."
)


def check_encryption(
    metadata: Mapping[str, Any], configured: bool,
    error: type[InvalidArgument] = InvalidArgument,
) -> None:
    """Raise ``error`` when the metadata asks for encrypted messages and no key is
    ``configured``: the queue's posts could not be stored encrypted."""
    if metadata.get("_enable_encrypt_messages") is True and not configured:
        raise error(NO_ENCRYPTION_KEYS)


def check_patched(metadata: Mapping[str, Any]) -> None:
    """Rules on the metadata a PATCH produces (Zaqar answers "Invalid request body")."""
    if len(orjson.dumps(metadata)) > limits.METADATA_SIZE_MAX:
        raise InvalidBody(TOO_LARGE)
    check_reserved(metadata, InvalidBody)


def with_defaults(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata as GET shows it: stored keys first, in stored order (a stored null of a
    reserved key replaced by its default in place), then every missing reserved key with its
    default, in the order of ``RESERVED_DEFAULTS``."""
    shown = dict(metadata)
    for key, default in limits.RESERVED_DEFAULTS.items():
        if shown.get(key) is None:
            shown[key] = default
    return shown


def dump(metadata: Mapping[str, Any]) -> bytes:
    return orjson.dumps(metadata)


# JSON patch ----------------------------------------------------------------------------------


def _pointer_key(path: str) -> str:
    """The ``<key>`` of a ``/metadata/<key>`` JSON pointer (``~1`` is ``/``, ``~0`` is ``~``)."""
    if not path:
        raise InvalidBody("Unable to find 'path' in JSON Schema change")
    if not path.startswith("/"):
        raise InvalidBody(f'Pointer `{path}` does not start with "/".')
    if re.search(r"/\s*?/", path[1:]):
        raise InvalidBody(f'Pointer `{path}` contains adjacent "/".')
    if len(path) > 1 and path.endswith("/"):
        raise InvalidBody(f'Pointer `{path}` end with "/".')
    if re.search("~[^01]", path) or path.endswith("~"):
        raise InvalidBody(
            f'Pointer `{path}` contains "~" not part of a recognized escape sequence.'
        )
    parts = [p.replace("~1", "/").replace("~0", "~").strip() for p in path[1:].split("/")]
    if len(parts) != 2:
        raise InvalidBody(
            f"Invalid JSON pointer for this resource: '/{'/'.join(parts)}, e.g /metadata/key'"
        )
    if parts[0].lower() != "metadata":
        raise InvalidBody("The root of path must be metadata, e.g /metadata/key.")
    return parts[1]


def parse_patch(
    operations: Iterable[tuple[str, str, bytes]],
    reserved: Mapping[str, object] = limits.RESERVED_DEFAULTS,
) -> list[MetadataPatch]:
    """``(op, path, JSON value)`` triples as store patches.

    Reserved keys (``reserved``: those with a default) always exist through their defaults,
    so replacing or removing one that is not stored is no conflict (as in Zaqar); for other
    keys it is.
    """
    patches = []
    for op, path, raw_value in operations:
        if not op:
            raise InvalidBody(
                "Unable to find `op` in JSON Schema change. It must be one of the following: "
                + ", ".join(PATCH_OPS) + "."
            )
        if op not in PATCH_OPS:
            raise InvalidBody(
                f"Invalid operation: `{op}`. It must be one of the following: "
                + ", ".join(PATCH_OPS) + "."
            )
        key = _pointer_key(path)
        value = None
        if op != "remove":
            if not raw_value.strip():
                raise InvalidBody(f'Operation "{op}" requires a member named "value".')
            value = parse_json(raw_value)
        patch_op: PatchOp = "add" if op == "add" else "replace" if op == "replace" else "remove"
        strict = key not in reserved
        patches.append(MetadataPatch(op=patch_op, key=key, value=value, strict=strict))
    return patches
