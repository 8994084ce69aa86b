"""Keys of message encryption at rest (``ZAQAR_MESSAGE_ENCRYPTION_KEYS``), and how a sealed body
is recognised.

Every service reads the same setting: message_svc seals and opens bodies with the keys,
queue_svc refuses ``_enable_encrypt_messages`` when there are none, ``up`` checks them before
it starts anything. Only message_svc ever decrypts (``services/message_svc/encryption.py``);
notifier_svc only recognises a sealed body and asks message_svc to open it.

The setting (or the file named by ``ZAQAR_MESSAGE_ENCRYPTION_KEYS_FILE``) lists keys as
``<kid>:<base64 of 32 bytes>``, separated by commas or line breaks (blank lines and lines
starting with ``#`` are skipped), or is a JSON object ``{"<kid>": "<base64>", ...}``. The
first key is the current one, which seals new bodies; the others still open what they sealed.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

import orjson

from services.common.config import ConfigurationError

KEY_BYTES: Final = 32
SETTING: Final = "message_encryption_keys (ZAQAR_MESSAGE_ENCRYPTION_KEYS)"

ENVELOPE_MAGIC: Final = b"\xffZQE"
"""First bytes of every sealed body. 0xFF occurs in no UTF-8 text, so no posted body (UTF-8
JSON) can ever be taken for a sealed one, and a sealed one is recognised without knowing its
queue's metadata."""

_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def is_sealed(body: bytes) -> bool:
    """Whether ``body`` is a sealed (encrypted) message body."""
    return body.startswith(ENVELOPE_MAGIC)


@dataclass(frozen=True, slots=True)
class MessageKeys:
    """The configured keys, in order: ``current`` seals, every one of ``keys`` opens."""

    current: str
    keys: dict[str, bytes]


def parse_keys(text: str) -> MessageKeys | None:
    """The keys of the setting's value; None when it is empty (encryption unavailable).

    Raises:
        ConfigurationError: a key that is malformed, not base64, not 32 bytes long, or whose
            kid is used twice; the one line names the key by its kid, never its value.
    """
    text = text.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ConfigurationError(f"{SETTING}: not a JSON object of keys ({exc})") from None
        if not isinstance(document, dict) or not all(
            isinstance(v, str) for v in document.values()
        ):
            raise ConfigurationError(f'{SETTING}: expected {{"<kid>": "<base64 key>", ...}}')
        # orjson keeps the last of duplicate names: find them in the text itself.
        pairs = [(str(k), str(v)) for k, v in document.items()]
        entries = _json_kids(text, pairs)
    else:
        entries = []
        for item in re.split(r"[,\n]", text):
            item = item.strip()
            if not item or item.startswith("#"):
                continue
            kid, sep, value = item.partition(":")
            if not sep:
                raise ConfigurationError(
                    f"{SETTING}: expected <kid>:<base64 key>, got an entry without ':'"
                )
            entries.append((kid.strip(), value.strip()))
    if not entries:
        return None
    keys: dict[str, bytes] = {}
    for kid, value in entries:
        if not _KID.fullmatch(kid):
            raise ConfigurationError(
                f"{SETTING}: key id {kid[:70]!r} must be 1 to 64 letters, digits, '.', '_' or '-'"
            )
        if kid in keys:
            raise ConfigurationError(f"{SETTING}: key id {kid!r} is listed twice")
        keys[kid] = _decode(kid, value)
    return MessageKeys(current=entries[0][0], keys=keys)


def _json_kids(text: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    names = re.findall(r'"((?:[^"\\]|\\.)*)"\s*:', text)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigurationError(f"{SETTING}: key id {name!r} is listed twice")
        seen.add(name)
    return pairs


def _decode(kid: str, value: str) -> bytes:
    try:
        padded = value + "=" * (-len(value) % 4)
        key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{SETTING}: key {kid!r} is not base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigurationError(
            f"{SETTING}: key {kid!r} is {len(key)} bytes long; AES-256 needs {KEY_BYTES} "
            "(make one with: head -c 32 /dev/urandom | base64)"
        )
    return key
