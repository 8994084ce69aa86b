"""FIFO queues (``_fifo``) through message_svc's public gRPC API on every built-in store:
``NewMessage.group_id`` / ``dedup_id`` in, ``Message.group_id`` out, and the 400 answers of a
queue without FIFO or a store without it (another package's backend)."""

from __future__ import annotations

import importlib
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from zaqar_grpc.v2 import messages_pb2

from services.message_svc import validation
from tests.services.test_message_svc import (  # noqa: F401 - fixtures
    CLIENT,
    PROJECT,
    Services,
    invalid,
    message_svc,
    message_svc_factory,
    rpc_error,
)


def _new(n: int, group: str | None = None, dedup: str | None = None) -> messages_pb2.NewMessage:
    return messages_pb2.NewMessage(body=orjson.dumps(n), group_id=group, dedup_id=dedup)


async def _post(svc: Services, queue: str, *messages: messages_pb2.NewMessage) -> list[str]:
    answer = await svc.messages.PostMessages(messages_pb2.PostMessagesRequest(
        project=PROJECT, queue=queue, client_id=CLIENT, messages=messages
    ))
    return list(answer.ids)


def _numbers(claim: messages_pb2.Claim) -> list[int]:
    return [orjson.loads(m.body) for m in claim.messages]


async def test_groups_are_claimed_in_order_one_claim_at_a_time(svc: Services) -> None:
    # Given a FIFO queue with two groups and a message without a group
    await svc.create_queue("f", _fifo=True)
    await _post(svc, "f", _new(1, "a"), _new(2, "a"), _new(3, "b"), _new(4), _new(5, "a"))

    # When one claim takes two messages
    first = await svc.claim(queue="f", limit=2)

    # Then it has group a's head and the next of a, with their groups
    assert _numbers(first) == [1, 2]
    assert [m.group_id for m in first.messages] == ["a", "a"]

    # And while it lives, group a is locked: the next claim passes over a
    second = await svc.claim(queue="f", limit=10)
    assert _numbers(second) == [3, 4]
    assert [m.group_id for m in second.messages] == ["b", ""]
    locked = await svc.claim(queue="f", limit=10)
    assert not locked.messages

    # When the first claim is released, a's next message is free
    await svc.messages.DeleteClaim(messages_pb2.DeleteClaimRequest(
        project=PROJECT, queue="f", claim_id=first.id
    ))
    third = await svc.claim(queue="f", limit=10)
    assert _numbers(third) == [1, 2, 5]


async def test_a_duplicate_post_answers_with_the_first_id(svc: Services) -> None:
    await svc.create_queue("f", _fifo=True, _dedup_window=60)

    # Given a posted message with a dedup_id
    (first,) = await _post(svc, "f", _new(1, dedup="x"))

    # When it is posted again, alone and inside a batch that repeats it too
    again = await _post(svc, "f", _new(2, dedup="x"))
    batch = await _post(
        svc, "f", _new(3, dedup="y"), _new(4, dedup="x"), _new(5, dedup="y")
    )

    # Then every duplicate answers with the first id and only new ids are stored
    assert again == [first]
    assert batch[1] == first and batch[0] == batch[2] != first
    listed = await svc.listed(queue="f")
    assert [orjson.loads(m.body) for m in listed] == [1, 3]
    assert [m.group_id for m in listed] == ["", ""]


async def test_a_dedup_id_on_a_standard_queue_is_refused(message_svc: Services) -> None:  # noqa: F811
    await message_svc.create_queue("plain")
    info = await rpc_error(_post(message_svc, "plain", _new(1, dedup="x")))
    invalid(info, validation.DEDUP_NEEDS_FIFO)
    assert await message_svc.listed(queue="plain") == []


async def test_a_group_on_a_standard_queue_is_kept(message_svc: Services) -> None:  # noqa: F811
    await message_svc.create_queue("plain")
    await _post(message_svc, "plain", _new(1, group="a"), _new(2))
    assert [m.group_id for m in await message_svc.listed(queue="plain")] == ["a", ""]


@pytest.mark.parametrize("value", ["", "g" * 129])
async def test_fifo_ids_of_a_bad_length_are_refused(
    message_svc: Services, value: str  # noqa: F811 - fixture
) -> None:
    await message_svc.create_queue("f", _fifo=True)
    for name, message in (("group_id", _new(1, group=value)), ("dedup_id", _new(1, dedup=value))):
        info = await rpc_error(_post(message_svc, "f", message))
        invalid(info, f"{name} must be a string of 1 to 128 characters.")


async def test_a_fifo_queue_on_a_store_without_fifo_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    message_svc_factory: Callable[..., Awaitable[Services]],  # noqa: F811 - fixture
) -> None:
    # Given another package's message store that does not implement FIFO queues
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "zaqar_nofifo.py").write_text(textwrap.dedent("""
        from services.message_svc.storage.base import Capabilities, MessageStore
        from services.message_svc.storage.sqlite import SqliteMessageStore

        class NoFifoMessageStore(SqliteMessageStore):
            post_fifo = MessageStore.post_fifo
            claim_fifo = MessageStore.claim_fifo
            pop_fifo = MessageStore.pop_fifo

            def __init__(self, uri, now):
                super().__init__("sqlite://" + uri.removeprefix("nofifo://"), now)
                self.capabilities = Capabilities(durable=True, shared=True)
        """))
    info = tmp_path / "zaqar_nofifo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zaqar-nofifo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[zaqar_grpc.message_stores]\nnofifo = zaqar_nofifo:NoFifoMessageStore\n"
    )
    importlib.invalidate_caches()
    svc = await message_svc_factory(message_store=f"nofifo:///{tmp_path / 'messages.db'}")
    await svc.create_queue("f", _fifo=True)

    # A post with or without FIFO ids, a claim and a pop all answer 400
    for call in (
        _post(svc, "f", _new(1, group="a")),
        _post(svc, "f", _new(1)),
        svc.claim(queue="f"),
        svc.messages.PopMessages(messages_pb2.PopMessagesRequest(
            project=PROJECT, queue="f", limit=1
        )),
    ):
        invalid(await rpc_error(call), validation.FIFO_UNSUPPORTED)
