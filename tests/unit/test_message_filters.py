"""The message filter pipeline: which filters a queue gets, in which order, and how their
refusals and failures come out. Filters are found through real entry points (the built-in one
from zaqar-grpc's own metadata, the others from tests/filter_plugins.py's distribution)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.common.config import ConfigurationError
from services.message_svc.filters import FilterContext
from services.message_svc.filters.pipeline import (
    Filters,
    MessageFilterFailed,
    MessageRejected,
    Pipeline,
    parse_names,
)
from services.message_svc.storage.base import NewMessage, StoredMessage
from tests import filter_plugins

POST = FilterContext("p", "q", "post", "client")
LIST = FilterContext("p", "q", "list")
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test filters' distribution is installed (on sys.path) for the test."""
    monkeypatch.syspath_prepend(str(filter_plugins.install(tmp_path / "site", broken=True)))


def new(*bodies: Any) -> list[NewMessage]:
    return [NewMessage(orjson.dumps(b), ttl=3600) for b in bodies]


def stored(*bodies: Any) -> list[StoredMessage]:
    return [
        StoredMessage(id=f"m{i}", seq=i, body=orjson.dumps(b), ttl=3600, created=0.0,
                      expires=3600.0, visible_at=0.0, client_id="c", claim_id=None,
                      claim_count=0)
        for i, b in enumerate(bodies)
    ]


def pipeline(filters: Filters, **metadata: Any) -> Pipeline:
    made = filters.for_queue(metadata)
    assert made is not None
    return made


def test_parse_names_keeps_order_and_drops_blanks_and_repeats() -> None:
    assert parse_names(" a, b,,a ,c ") == ("a", "b", "c")
    assert parse_names("") == ()


def test_a_queue_without_filters_has_no_pipeline() -> None:
    # Given the default deployment (only the built-in filter)
    filters = Filters.load("")
    # Then a queue without _message_schema or _filters has none, and reads need no lookup
    assert filters.for_queue({"_default_message_ttl": 60, "a": 1}) is None
    assert filters.reads is False
    assert Filters.none().for_queue({"_message_schema": SCHEMA}) is None


def test_the_schema_filter_is_made_by_the_key() -> None:
    made = pipeline(Filters.load(""), _message_schema=SCHEMA)
    assert made.names == ("message_schema",)
    assert made.on_post(POST, new({"n": 1}, {"n": 2})) == new({"n": 1}, {"n": 2})
    with pytest.raises(MessageRejected) as refused:
        made.on_post(POST, new({"n": 1}, {"n": "two"}))
    assert refused.value.description == (
        "Message 1 was refused by message filter 'message_schema': the body does not match "
        "the queue's _message_schema at JSON pointer \"/n\": 'two' is not of type 'integer'"
    )
    assert refused.value.code.name == "INVALID_ARGUMENT"
    assert refused.value.title == "Invalid request body"


def test_a_missing_property_is_reported_at_the_root_pointer() -> None:
    made = pipeline(Filters.load(""), _message_schema=SCHEMA)
    with pytest.raises(MessageRejected, match='at JSON pointer "": \'n\' is a required'):
        made.on_post(POST, new({"m": 1}))


def test_order_is_schema_then_deployment_then_queue(installed: None) -> None:
    filters = Filters.load("redact,stamp")
    made = pipeline(filters, _message_schema=SCHEMA, _filters=["crash", "stamp"])
    assert made.names == ("message_schema", "redact", "stamp", "crash")
    assert [name for name, _ in made.posts] == ["message_schema", "stamp", "crash"]
    assert [name for name, _ in made.reads] == ["redact"]
    assert filters.reads is True


def test_the_schema_sees_the_posted_body_before_other_filters_change_it(
    installed: None,
) -> None:
    closed = {**SCHEMA, "additionalProperties": False}
    made = pipeline(Filters.load("stamp"), _message_schema=closed)
    out = made.on_post(POST, new({"n": 1}))
    assert orjson.loads(out[0].body) == {"n": 1, "stamp": "post"}
    assert out[0].ttl == 3600


def test_a_filter_that_crashes_on_post_refuses_the_post_and_is_logged(
    installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    made = pipeline(Filters.load(""), _filters=["crash"])
    with caplog.at_level(logging.ERROR), pytest.raises(MessageFilterFailed) as failed:
        made.on_post(POST, new({"n": 1}))
    assert failed.value.description.startswith(
        "Message filter 'crash' failed, so the messages were not posted (nothing was stored)."
    )
    assert failed.value.code.name == "INVALID_ARGUMENT"
    assert "message filter 'crash' failed on post of p/q: RuntimeError: crash filter " \
        "crashed on post" in caplog.text


@pytest.mark.parametrize("name", ["wrong_count", "not_a_filter", "unimportable", "absent"])
def test_a_filter_that_cannot_be_used_refuses_posts(installed: None, name: str) -> None:
    made = pipeline(Filters.load(""), _filters=[name])
    with pytest.raises(MessageFilterFailed, match=f"Message filter '{name}' failed"):
        made.on_post(POST, new({"n": 1}, {"n": 2}))


def test_on_the_way_out_a_crashing_filter_is_skipped(
    installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    made = pipeline(Filters.load("redact"), _filters=["crash_on_read"])
    with caplog.at_level(logging.ERROR):
        out = made.on_read(LIST, stored({"secret": "s"}, {"n": 1}))
    assert [orjson.loads(m.body) for m in out] == [{"secret": "***"}, {"n": 1}]
    assert [m.id for m in out] == ["m0", "m1"]
    assert "message filter 'crash_on_read' failed on list of p/q" in caplog.text


def test_unchanged_messages_are_the_same_objects(installed: None) -> None:
    made = pipeline(Filters.load("redact"))
    messages = stored({"n": 1})
    assert made.on_read(LIST, messages)[0] is messages[0]


def test_deployment_filters_must_load(installed: None) -> None:
    with pytest.raises(ConfigurationError, match="ZAQAR_MESSAGE_FILTERS: no message filter "
                                                 "named 'nope' is installed"):
        Filters.load("stamp,nope")
    with pytest.raises(ConfigurationError, match="cannot be loaded"):
        Filters.load("unimportable")
    with pytest.raises(ConfigurationError, match="not a subclass of"):
        Filters.load("not_a_filter")
