"""Message encryption at rest: the keys setting and the AES-256-GCM envelope."""

from __future__ import annotations

import base64

import pytest

from services.common.config import ConfigurationError
from services.common.message_keys import ENVELOPE_MAGIC, MessageKeys, is_sealed, parse_keys
from services.message_svc.encryption import Bodies, Envelope, MessageUnreadable, Sealer

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()
BODY = b'{"marker": "plain-text-marker"}'


def sealer(text: str) -> Sealer:
    keys = parse_keys(text)
    assert keys is not None
    return Sealer(keys)


def test_keys_are_read_in_order_from_lists_lines_and_json() -> None:
    assert parse_keys("") is None
    assert parse_keys(f"a:{KEY_A}, b:{KEY_B}") == MessageKeys(
        "a", {"a": b"a" * 32, "b": base64.b64decode(KEY_B)}
    )
    lines = parse_keys(f"# current first\nb:{KEY_B}\n\na:{KEY_A}\n")
    assert lines is not None and lines.current == "b" and list(lines.keys) == ["b", "a"]
    document = parse_keys(f'{{"k2": "{KEY_B}", "k1": "{KEY_A}"}}')
    assert document is not None and document.current == "k2"


@pytest.mark.parametrize(("text", "error"), [
    (f"a:{KEY_A},a:{KEY_B}", "key id 'a' is listed twice"),
    (f'{{"a": "{KEY_A}", "a": "{KEY_B}"}}', "key id 'a' is listed twice"),
    ("a:" + base64.b64encode(b"x" * 16).decode(), "key 'a' is 16 bytes long; AES-256 needs 32"),
    ("a:not*base64", "key 'a' is not base64"),
    (KEY_A, "expected <kid>:<base64 key>"),
    (f"bad kid:{KEY_A}", "key id 'bad kid' must be"),
])
def test_bad_keys_are_one_clear_line(text: str, error: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_keys(text)
    message = str(caught.value)
    assert message.startswith("message_encryption_keys (ZAQAR_MESSAGE_ENCRYPTION_KEYS): ")
    assert error in message and "\n" not in message
    assert KEY_B not in message


def test_round_trip_and_format() -> None:
    keys = sealer(f"a:{KEY_A}")
    sealed = keys.seal("p", "q", BODY)
    assert is_sealed(sealed) and sealed.startswith(ENVELOPE_MAGIC)
    assert b"plain-text-marker" not in sealed
    envelope = Envelope(sealed)
    assert (envelope.kid, envelope.queue) == ("a", "q")
    assert keys.open("p", envelope) == BODY
    # A fresh nonce each time
    assert keys.seal("p", "q", BODY) != sealed


def test_tampering_and_another_project_fail_authentication() -> None:
    keys = sealer(f"a:{KEY_A}")
    sealed = keys.seal("p", "q", BODY)
    flipped = sealed[:-20] + bytes([sealed[-20] ^ 1]) + sealed[-19:]
    with pytest.raises(MessageUnreadable, match="failed authentication"):
        keys.open("p", Envelope(flipped))
    with pytest.raises(MessageUnreadable, match="failed authentication"):
        keys.open("other-project", Envelope(sealed))
    # The queue is part of the header, so rewriting it breaks the tag too.
    renamed = sealed.replace(b"\x01q", b"\x01r", 1)
    with pytest.raises(MessageUnreadable, match="failed authentication"):
        keys.open("p", Envelope(renamed))


def test_rotation_keeps_old_bodies_readable_and_unknown_kids_are_named() -> None:
    old = sealer(f"a:{KEY_A}").seal("p", "q", BODY)
    rotated = sealer(f"b:{KEY_B},a:{KEY_A}")
    assert rotated.open("p", Envelope(old)) == BODY
    assert Envelope(rotated.seal("p", "q", BODY)).kid == "b"
    with pytest.raises(MessageUnreadable, match="key 'a', which is not configured"):
        sealer(f"b:{KEY_B}").open("p", Envelope(old))


async def test_a_body_opens_only_in_its_queue_or_where_dead_letters_lead() -> None:
    dead_letters = {"q": "dlq", "dlq": "last"}

    async def dead_letter_of(project: str, queue: str) -> str | None:
        return dead_letters.get(queue)

    bodies = Bodies(sealer(f"a:{KEY_A}"), dead_letter_of)
    sealed = bodies.seal("p", "q", BODY)
    assert await bodies.open("p", "q", sealed) == BODY
    assert await bodies.open("p", "dlq", sealed) == BODY
    assert await bodies.open("p", "last", sealed) == BODY
    with pytest.raises(MessageUnreadable, match="encrypted for queue q"):
        await bodies.open("p", "elsewhere", sealed)
    assert await bodies.open("p", "q", BODY) == BODY  # not sealed: as it is
    with pytest.raises(MessageUnreadable, match="malformed"):
        await bodies.open("p", "q", ENVELOPE_MAGIC + b"\x01")
    with pytest.raises(MessageUnreadable, match="no encryption key"):
        await Bodies(None, dead_letter_of).open("p", "q", sealed)
