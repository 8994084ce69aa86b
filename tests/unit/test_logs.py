"""Request ids on log records, and the text and JSON log formats (services/common/logs.py)."""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import re
import sys
import threading
import time

import orjson
import pytest

from services.common.config import ConfigurationError
from services.common.logs import (
    REQUEST_ID,
    JsonFormatter,
    RequestIdFilter,
    detached,
    log_handler,
    request_id_from,
    well_formed,
)

GIVEN = "req-03950a8c-00a4-4cc4-ba41-b7a6966da717"  # fixed: test ids must not vary
NEW_ID = re.compile(r"req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


def record(msg: str = "hello %s", args: tuple[object, ...] = ("world",), **extra: object
           ) -> logging.LogRecord:
    rec = logging.LogRecord("zaqar.test", logging.WARNING, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def emit(log_format: str, rec: logging.LogRecord) -> str:
    stream = io.StringIO()
    handler = log_handler(log_format, stream)
    handler.handle(rec)
    return stream.getvalue()


@pytest.mark.parametrize(
    "given",
    [
        None,
        "",
        "req-123",
        GIVEN.upper().replace("REQ-", "req-"),  # oslo takes lower-case hex only
        "REQ" + GIVEN[3:],
        GIVEN + "x",
        "x" + GIVEN[1:] + "0",
        GIVEN[:-1] + "\n",
        "bc61bdd9-a81b-42b4-810e-5fe4466f2a14",
    ],
)
def test_a_malformed_or_absent_request_id_is_replaced_by_a_new_one(given: str | None) -> None:
    made = request_id_from(given)
    assert made != given
    assert NEW_ID.fullmatch(made)


def test_a_well_formed_request_id_is_kept() -> None:
    assert request_id_from(GIVEN) == GIVEN
    assert well_formed(GIVEN)
    assert not well_formed(GIVEN[:-1])


def test_the_filter_adds_the_request_id_of_the_current_context() -> None:
    # Given no request id, then one
    rec = record()
    assert RequestIdFilter().filter(rec)
    assert rec.request_id == "-"  # type: ignore[attr-defined]

    def inside() -> logging.LogRecord:
        REQUEST_ID.set(GIVEN)
        rec = record()
        RequestIdFilter().filter(rec)
        return rec

    assert contextvars.copy_context().run(inside).request_id == GIVEN  # type: ignore[attr-defined]
    # A record that names its own (the access log's) keeps it
    own = record(request_id="req-own")
    RequestIdFilter().filter(own)
    assert own.request_id == "req-own"  # type: ignore[attr-defined]


def test_the_text_format_shows_the_request_id_in_brackets() -> None:
    token = REQUEST_ID.set(GIVEN)
    try:
        line = emit("text", record())
    finally:
        REQUEST_ID.reset(token)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING zaqar\.test \["
        + GIVEN + r"\] hello world\n",
        line,
    ), line
    assert emit("text", record()).endswith(" WARNING zaqar.test [-] hello world\n")


def test_the_json_format_is_one_object_per_line() -> None:
    # Given a record with a request id, and one without
    token = REQUEST_ID.set(GIVEN)
    try:
        line = emit("json", record())
    finally:
        REQUEST_ID.reset(token)
    assert line.endswith("\n") and line.count("\n") == 1
    entry = orjson.loads(line)
    assert entry == {
        "time": entry["time"],
        "level": "WARNING",
        "logger": "zaqar.test",
        "message": "hello world",
        "request_id": GIVEN,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert orjson.loads(emit("json", record()))["request_id"] is None


def test_json_lines_carry_fields_and_exceptions() -> None:
    # Given an access-log record with fields, and a record with a traceback and a newline
    access = orjson.loads(emit("json", record(
        "%s", ("GET /v2/queues 200",), request_id=GIVEN,
        fields={"method": "GET", "path": "/v2/queues", "status": 200, "duration_ms": 1.5},
    )))
    assert access["method"] == "GET" and access["status"] == 200
    assert access["duration_ms"] == 1.5 and access["request_id"] == GIVEN
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("two\nlines %s", (object(),))
        rec.exc_info = sys.exc_info()
    line = emit("json", rec)
    assert line.count("\n") == 1
    entry = orjson.loads(line)
    assert entry["message"].startswith("two\nlines <object")
    assert "ValueError: boom" in entry["exception"]
    assert entry["exception"].startswith("Traceback")


def test_an_unknown_format_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="log_format must be one of text, json"):
        log_handler("xml")


def test_json_formatter_needs_no_filter() -> None:
    # A record that never went through the filter has no request id
    assert orjson.loads(JsonFormatter().format(record()))["request_id"] is None


async def test_a_detached_task_carries_no_request_id() -> None:
    REQUEST_ID.set(GIVEN)

    async def current() -> str | None:
        return REQUEST_ID.get()

    loop = asyncio.get_running_loop()
    assert await loop.create_task(current()) == GIVEN
    assert await loop.create_task(current(), context=detached()) is None
    assert REQUEST_ID.get() == GIVEN


def test_times_are_right_across_seconds() -> None:
    # Given records of one second, the next second, and back (the stamp is cached per second)
    text, json = log_handler("text", io.StringIO()).formatter, JsonFormatter()
    assert text is not None
    for created in (1_700_000_000.25, 1_700_000_000.75, 1_700_000_001.5, 1_700_000_000.0):
        rec = record()
        rec.created, rec.msecs = created, (created % 1) * 1000
        local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
        assert text.formatTime(rec) == f"{local},{int(rec.msecs):03d}"
        utc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        assert orjson.loads(json.format(rec))["time"] == f"{utc}.{int(rec.msecs):03d}Z"


class Writes(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def lines_of(stream: Writes) -> list[str]:
    return [line.rsplit(" ", 1)[-1] for line in stream.getvalue().splitlines()]


async def test_the_lines_of_one_turn_of_the_loop_go_out_in_one_write() -> None:
    stream = Writes()
    handler = log_handler("text", stream)
    for n in range(3):
        handler.handle(record("line %s", (n,)))
    assert stream.writes == []  # they wait for the turn to end
    await asyncio.sleep(0)
    assert len(stream.writes) == 1
    assert lines_of(stream) == ["0", "1", "2"]
    handler.handle(record("line %s", (3,)))
    await asyncio.sleep(0)
    assert len(stream.writes) == 2
    assert lines_of(stream) == ["0", "1", "2", "3"]


async def test_a_line_from_another_thread_comes_after_the_waiting_ones() -> None:
    stream = Writes()
    handler = log_handler("text", stream)
    handler.handle(record("line %s", ("loop",)))
    await asyncio.to_thread(handler.handle, record("line %s", ("thread",)))
    assert lines_of(stream) == ["loop", "thread"]  # written by the thread, in order
    await asyncio.sleep(0)
    assert lines_of(stream) == ["loop", "thread"]  # and not again


def test_lines_left_waiting_by_a_loop_that_stopped_are_written_by_flush() -> None:
    stream = Writes()
    handler = log_handler("json", stream)

    async def last_words() -> None:
        handler.handle(record("line %s", ("last",)))
        raise SystemExit(1)  # leaves the loop in the middle of its turn

    loop = asyncio.new_event_loop()
    with pytest.raises(SystemExit):
        loop.run_until_complete(last_words())
    loop.close()  # the turn's callback never ran
    assert stream.getvalue() == ""
    handler.flush()  # as logging.shutdown does at exit
    assert orjson.loads(stream.getvalue())["message"] == "line last"


def test_each_loop_writes_its_lines_at_the_end_of_its_own_turn() -> None:
    stream = Writes()
    handler = log_handler("text", stream)

    async def on_b() -> None:
        handler.handle(record("line %s", ("b",)))

    def loop_b() -> None:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(on_b())
        loop.close()

    async def on_a() -> None:
        handler.handle(record("line %s", ("a",)))
        # Loop A's turn does not end while loop B, on another thread, logs and ends its own.
        thread = threading.Thread(target=loop_b)
        thread.start()
        thread.join()
        assert lines_of(stream) == ["a", "b"]

    asyncio.run(on_a())
    assert lines_of(stream) == ["a", "b"]


class FailsOnce(Writes):
    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def write(self, text: str) -> int:
        if not self.failed:
            self.failed = True
            raise OSError(5, "Input/output error")
        return super().write(text)


async def test_a_failed_write_is_reported_and_its_lines_are_not_written_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stream = FailsOnce()
    handler = log_handler("text", stream)
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", reported.append)
    handler.handle(record("line %s", ("lost",)))
    await asyncio.sleep(0)
    assert [r.getMessage() for r in reported] == ["line lost"]
    handler.handle(record("line %s", ("next",)))
    await asyncio.sleep(0)
    assert lines_of(stream) == ["next"]
