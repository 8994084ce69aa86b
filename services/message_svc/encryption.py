"""Message bodies encrypted at rest: AES-256-GCM envelopes, sealed and opened only here.

A queue with ``_enable_encrypt_messages`` has its bodies sealed after the post filters and
before the store; every read opens the sealed bodies it finds (recognised by their first bytes,
whatever the queue's flag says now) before the read filters. An envelope::

    magic   4 bytes  0xFF "ZQE"  (no UTF-8 JSON body starts with 0xFF)
    version 1 byte   1
    kid     1 byte length + ASCII key id
    queue   1 byte length + ASCII name of the queue it was sealed for
    nonce   12 random bytes
    ciphertext with the 16-byte GCM tag

The associated data is a domain label, the project and every header byte (magic to queue), so
a body moved to another project or given another kid or queue does not open. A body read in a
queue other than the one it was sealed for opens only when that queue leads to the reading
queue through ``_dead_letter_queue`` (a dead-letter move keeps the body as stored).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Final

import grpc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common.errors import ServiceError, Unavailable
from services.common.message_keys import ENVELOPE_MAGIC, MessageKeys, is_sealed

__all__ = ["Envelope", "MessageUnreadable", "Sealer", "is_sealed"]

VERSION: Final = 1
NONCE_BYTES: Final = 12
_AAD_LABEL: Final = b"zaqar-grpc message body v1\x00"
# Hops followed through _dead_letter_queue from the queue a body was sealed for.
DEAD_LETTER_HOPS: Final = 4

DeadLetterOf = Callable[[str, str], Awaitable[str | None]]
"""``dead_letter_of(project, queue)``: the queue's ``_dead_letter_queue``, if any."""


class MessageUnreadable(ServiceError):
    """A stored body cannot be opened: its key is not configured any more, or it fails
    authentication (tampered with, or moved). Answered instead of the body, never silently."""

    code = grpc.StatusCode.DATA_LOSS
    reason = "MESSAGE_UNREADABLE"
    title = "Service temporarily unavailable"
    msg_format = "{description}"


class Envelope:
    """The parsed header of a sealed body."""

    __slots__ = ("body", "header_end", "kid", "queue")

    def __init__(self, body: bytes) -> None:
        """Raises ``ValueError`` for a body that is not a well-formed envelope."""
        if not is_sealed(body) or len(body) < len(ENVELOPE_MAGIC) + 3:
            raise ValueError("not an envelope")
        at = len(ENVELOPE_MAGIC)
        if body[at] != VERSION:
            raise ValueError(f"envelope version {body[at]}")
        at += 1
        kid, at = _field(body, at)
        queue, at = _field(body, at)
        if len(body) < at + NONCE_BYTES + 16:
            raise ValueError("envelope too short")
        self.body = body
        self.kid = kid
        self.queue = queue
        self.header_end = at


def _field(body: bytes, at: int) -> tuple[str, int]:
    size = body[at]
    end = at + 1 + size
    if size == 0 or end > len(body):
        raise ValueError("envelope header truncated")
    return body[at + 1:end].decode("ascii"), end


def _aad(project: str, header: bytes) -> bytes:
    return _AAD_LABEL + project.encode() + b"\x00" + header


class Sealer:
    """Seals with the current key, opens with any configured key."""

    def __init__(self, keys: MessageKeys) -> None:
        self.current = keys.current
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.keys.items()}

    def seal(self, project: str, queue: str, body: bytes) -> bytes:
        kid = self.current.encode("ascii")
        name = queue.encode("ascii")
        header = (ENVELOPE_MAGIC + bytes([VERSION, len(kid)]) + kid
                  + bytes([len(name)]) + name)
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(nonce, body, _aad(project, header))
        return header + nonce + sealed

    def open(self, project: str, envelope: Envelope) -> bytes:
        """The plaintext body, authenticated for ``project`` and the envelope's queue.

        Raises:
            MessageUnreadable: unknown kid, or authentication failed.
        """
        cipher = self._ciphers.get(envelope.kid)
        if cipher is None:
            raise MessageUnreadable(
                f"A message of queue {envelope.queue} is encrypted with key {envelope.kid!r}, "
                "which is not configured (ZAQAR_MESSAGE_ENCRYPTION_KEYS): add it back to "
                "read the message."
            )
        body = envelope.body
        at = envelope.header_end
        try:
            return cipher.decrypt(
                body[at:at + NONCE_BYTES], body[at + NONCE_BYTES:],
                _aad(project, body[:at]),
            )
        except InvalidTag:
            raise MessageUnreadable(
                f"A message of queue {envelope.queue} (key {envelope.kid!r}) failed "
                "authentication: it was altered, or moved from another project."
            ) from None


class Bodies:
    """What message_svc's service layer uses: sealing for a queue, opening on the way out."""

    def __init__(self, sealer: Sealer | None, dead_letter_of: DeadLetterOf) -> None:
        self.sealer = sealer
        self._dead_letter_of = dead_letter_of

    def seal(self, project: str, queue: str, body: bytes) -> bytes:
        if self.sealer is None:
            raise Unavailable(
                f"Queue {queue} encrypts its messages, but message_svc has no encryption key "
                "(ZAQAR_MESSAGE_ENCRYPTION_KEYS)."
            )
        return self.sealer.seal(project, queue, body)

    async def open(self, project: str, queue: str, body: bytes) -> bytes:
        """``body`` itself when it is not sealed, else its plaintext.

        Raises:
            MessageUnreadable: it cannot be opened here (no keys, unknown kid, failed
                authentication, or sealed for a queue that does not lead here).
        """
        if not is_sealed(body):
            return body
        try:
            envelope = Envelope(body)
        except (ValueError, UnicodeDecodeError, IndexError):
            raise MessageUnreadable(
                f"A message of queue {queue} has a malformed encryption envelope."
            ) from None
        if self.sealer is None:
            raise MessageUnreadable(
                f"A message of queue {queue} is encrypted, but message_svc has no encryption "
                "key (ZAQAR_MESSAGE_ENCRYPTION_KEYS)."
            )
        if envelope.queue != queue and not await self._leads_to(
            project, envelope.queue, queue
        ):
            raise MessageUnreadable(
                f"A message in queue {queue} was encrypted for queue {envelope.queue}, whose "
                "dead-letter queue is not this one: it was moved, or the dead-letter setting "
                "changed."
            )
        return self.sealer.open(project, envelope)

    async def _leads_to(self, project: str, origin: str, queue: str) -> bool:
        current = origin
        for _ in range(DEAD_LETTER_HOPS):
            following = await self._dead_letter_of(project, current)
            if following is None:
                return False
            if following == queue:
                return True
            current = following
        return False
