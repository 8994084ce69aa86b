"""Family "grpc": every method of the gRPC services, straight to their ports, with a valid
request, then mutated fields and malformed messages.

The methods come from the servers themselves: gRPC reflection on each service's port lists
what it serves, and the descriptors say each request's fields, so a method added later is
fuzzed without a change here. A request is filled by field name from the fixture (project,
queue, ids, ...), then one to three fields get a value of their type at an edge: long,
unicode, control-character and invalid-UTF-8 texts, integers at every edge of their width,
bytes that are not JSON or are large, 0/21/300 items of a repeated field, unknown enum
numbers, a nested message emptied. One case in eight sends a malformed message: random
bytes, a valid one cut short, an unknown field, a field of the wrong wire type, a length past
the end.

Left out: the admin calls that register or remove a pool (their URI makes a store, which
could create files outside the run's folder; the HTTP family fuzzes them with confined URIs),
and ``wait_seconds`` (a long poll past the run's bound would be a false hang): it is 0 or 1.
The oracle (as ``judge`` for HTTP): no INTERNAL, UNKNOWN or DATA_LOSS (a 5xx), no UNAVAILABLE
(a 503), no answer later than the bound (a hang); a stream's first message may not come
(a streaming pull with nothing to pull), which is not a hang.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

from bench.fuzz import values
from bench.fuzz.fixture import Fixture

PACKAGE = "zaqar.v2."
# Methods a case never calls (the module's docstring).
EXCLUDED = frozenset({"/zaqar.v2.Pools/PutPool", "/zaqar.v2.Pools/UpdatePool",
                      "/zaqar.v2.Pools/DeletePool"})
# Codes that are a fault of the service, as 5xx are over HTTP.
FAULTS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                    grpc.StatusCode.DATA_LOSS})
# Methods whose success may spoil the fixture's queue (its messages, claim, subscription).
SPOILING = ("Delete", "Purge", "Pop", "CreateClaim", "UpdateClaim", "StreamingPull",
            "Redrive", "Exchange", "Batch", "PostOnce", "UpdateQueue", "CreateQueue",
            "UpdateSubscription", "ConfirmSubscription")


@dataclass(frozen=True)
class Method:
    path: str  # /zaqar.v2.Messages/PostMessages
    port: int
    request: Descriptor
    server_streaming: bool
    client_streaming: bool


def method_table(host: str, ports: list[int]) -> list[Method]:
    """Every method of a ``zaqar.v2`` service served on ``ports``, found by reflection (the
    descriptors come from the servers too), but :data:`EXCLUDED`."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    table: dict[str, Method] = {}
    for port in sorted(set(ports)):
        with grpc.insecure_channel(f"{host}:{port}") as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            pool = descriptor_pool.DescriptorPool(database)
            for name in database.get_services():
                if not name.startswith(PACKAGE):
                    continue
                for m in pool.FindServiceByName(name).methods:
                    path = f"/{name}/{m.name}"
                    if path not in EXCLUDED and path not in table:
                        table[path] = _method(path, port, m)
    return [table[path] for path in sorted(table)]


def _method(path: str, port: int, m: MethodDescriptor) -> Method:
    return Method(path, port, m.input_type, m.server_streaming, m.client_streaming)


# -- valid requests --------------------------------------------------------------------------

def _by_name(name: str, fx: Fixture, rng: random.Random) -> Any:
    """A valid value for field ``name``, from the fixture; None when the name says nothing."""
    ids = fx.message_ids + fx.claimed_ids
    known: dict[str, Any] = {
        "project": fx.project, "queue": fx.queue, "topic": fx.queue,
        "client_id": fx.client_id, "claim_id": fx.claim_id,
        "subscription_id": fx.subscription_id,
        "message_id": ids[rng.randrange(len(ids))] if ids else "",
        "message_ids": ids[: rng.randint(1, 3)], "claim_ids": [fx.claim_id],
        "limit": rng.randint(1, 5), "ttl": 300, "grace": 60, "wait_seconds": rng.choice((0, 0, 1)),
        "max_outstanding": 2, "marker": "", "body": b'{"grpc": 1}',
        "subscriber": fx.sink or "http://127.0.0.1:9/", "pool": fx.pool, "flavor": fx.flavor,
    }
    return known.get(name)


def valid_request(method: Method, fx: Fixture, rng: random.Random) -> Any:
    message = message_factory.GetMessageClass(method.request)()
    _fill(message, fx, rng, depth=0)
    return message


def _fill(message: Any, fx: Fixture, rng: random.Random, depth: int) -> None:
    for f in message.DESCRIPTOR.fields:
        value = _by_name(f.name, fx, rng)
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 2 or f.message_type.GetOptions().map_entry:
                continue
            if f.is_repeated:
                if f.name == "messages":  # a post: one message to post
                    _fill(getattr(message, f.name).add(), fx, rng, depth + 1)
                elif f.name == "items" and depth == 0:
                    pass  # a batch: left empty, mutations fill it
                continue
            if f.message_type.full_name.startswith(PACKAGE):
                _fill(getattr(message, f.name), fx, rng, depth + 1)
            continue
        if value is None:
            continue
        try:
            if f.is_repeated:
                getattr(message, f.name).extend(value if isinstance(value, list) else [value])
            else:
                setattr(message, f.name, value)
        except (TypeError, ValueError):
            pass  # a field of that name but another type


# -- mutations -------------------------------------------------------------------------------

_INT_EDGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), -1, 0, 1, 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), -(2**31) - 1, -1, 0, 2**31, 2**53 + 1, 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 1, 2**31, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**32, 2**53 + 1, 2**64 - 1),
}
_FLOATS = (0.0, -0.0, 1e-300, 1e300, float("inf"), float("-inf"), float("nan"))


def _odd_bytes(rng: random.Random) -> bytes:
    return rng.choice((
        b"", b"\xff\xfe", b"{", b"null", b"[]", b'"' + b"x" * 300_000 + b'"',
        b'{"a":' * 40 + b"1" + b"}" * 40, bytes(rng.randrange(256) for _ in range(64)),
        b'{"a": NaN}', b"\x00" * 10, b'"\\ud800"', b"1e999",
    ))


def _odd_text(rng: random.Random) -> str:
    return rng.choice((
        values.text(rng), "", "x" * rng.choice((65, 257, 5000)), rng.choice(values.UNICODE),
        "a" + rng.choice(values.CONTROL) + "b", "\ud800", "../" * 5, "*", "%", " q",
    ))


def _mutate_field(message: Any, f: FieldDescriptor, rng: random.Random) -> str:
    name = f.name
    if f.is_repeated:
        message.ClearField(name)
        field = getattr(message, name)
        count = rng.choice((0, 21, 300))
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            if not f.message_type.GetOptions().map_entry:
                for _ in range(min(count, 50)):
                    field.add()
            return f"{name}: {min(count, 50)} empty items"
        item = _scalar(f, rng)
        try:
            field.extend([item] * count)
        except (TypeError, ValueError):
            return f"{name}: left empty"
        return f"{name}: {count} x {item!r:.40}"
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        message.ClearField(name) if rng.random() < 0.5 else getattr(message, name).SetInParent()
        return f"{name}: emptied"
    value = _scalar(f, rng)
    try:
        setattr(message, name, value)
    except (TypeError, ValueError):
        return f"{name}: {value!r:.40} refused by protobuf"
    return f"{name} = {value!r:.60}"


def _scalar(f: FieldDescriptor, rng: random.Random) -> Any:
    cpp = f.cpp_type
    if cpp in _INT_EDGES:
        return rng.choice(_INT_EDGES[cpp])
    if cpp in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return rng.choice(_FLOATS)
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return rng.random() < 0.5
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        return rng.choice((-1, 99, 2**31 - 1))
    if f.type == FieldDescriptor.TYPE_BYTES:
        return _odd_bytes(rng)
    return _odd_text(rng)


def _fields(message: Any, depth: int = 0) -> list[tuple[Any, FieldDescriptor]]:
    """Every field of ``message`` and of the nested messages it holds (two levels)."""
    found = [(message, f) for f in message.DESCRIPTOR.fields if f.name != "wait_seconds"]
    if depth < 2:
        for f in message.DESCRIPTOR.fields:
            if f.type != FieldDescriptor.TYPE_MESSAGE or f.message_type.GetOptions().map_entry:
                continue
            if f.is_repeated:
                for item in list(getattr(message, f.name))[:3]:
                    found += _fields(item, depth + 1)
            elif message.HasField(f.name):
                found += _fields(getattr(message, f.name), depth + 1)
    return found


def _malformed(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    choice = rng.randrange(6)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.choice((1, 7, 300)))), "random bytes"
    if choice == 1 and data:
        return data[: rng.randrange(len(data))], "cut short"
    if choice == 2:
        return data + b"\xc2\x3e\x05hello", "an unknown field"
    if choice == 3:
        return b"\x0d\x00\x00\x00\x00" + data, "field 1 as a fixed32"
    if choice == 4:
        return b"\x0a\xff\xff\xff\x0f" + data, "a length past the end"
    return b"\x0b" * 50 + data, "50 unclosed groups"


@dataclass(frozen=True)
class GrpcCase:
    method: Method
    data: bytes
    label: str


def make_case(method: Method, fx: Fixture, rng: random.Random, mutate: bool) -> GrpcCase:
    message = valid_request(method, fx, rng)
    if not mutate or rng.random() < 1 / 12:
        return GrpcCase(method, message.SerializeToString(), f"{method.path}: valid")
    if rng.random() < 1 / 8:
        data, label = _malformed(message.SerializeToString(), rng)
        return GrpcCase(method, data, f"{method.path}: {label}")
    fields = _fields(message)
    labels = [_mutate_field(*rng.choice(fields), rng) for _ in range(rng.randint(1, 3))] if (
        fields) else ["no fields"]
    return GrpcCase(method, message.SerializeToString(), f"{method.path}: " + "; ".join(labels))


@dataclass
class GrpcResult:
    code: grpc.StatusCode | None  # None: no answer within the bound
    details: str


class GrpcClient:
    """One channel per port, reused for every case of a worker."""

    def __init__(self, host: str, timeout: float) -> None:
        self.host = host
        self.timeout = timeout
        self._channels: dict[int, grpc.aio.Channel] = {}

    def _channel(self, port: int) -> grpc.aio.Channel:
        if port not in self._channels:
            self._channels[port] = grpc.aio.insecure_channel(f"{self.host}:{port}")
        return self._channels[port]

    async def call(self, case: GrpcCase) -> GrpcResult:
        channel = self._channel(case.method.port)
        m = case.method
        try:
            if m.client_streaming:
                stream = channel.stream_stream(m.path)(timeout=self.timeout)
                await stream.write(case.data)
                await stream.done_writing()
                async for _ in stream:
                    pass
            elif m.server_streaming:
                stream = channel.unary_stream(m.path)(case.data, timeout=self.timeout)
                try:
                    # A stream with nothing to send yet (a quiet queue) is not a hang.
                    await asyncio.wait_for(stream.read(), min(2.0, self.timeout / 2))
                except TimeoutError:
                    pass
                stream.cancel()
            else:
                await channel.unary_unary(m.path)(case.data, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return GrpcResult(None, exc.details() or "")
            return GrpcResult(exc.code(), exc.details() or "")
        return GrpcResult(grpc.StatusCode.OK, "")

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


def judge(result: GrpcResult) -> str | None:
    if result.code is None:
        return "hang"
    if result.code in FAULTS:
        return "5xx"
    if result.code == grpc.StatusCode.UNAVAILABLE:
        return "503"
    return None


def spoils(method: Method) -> bool:
    name = method.path.rsplit("/", 1)[1]
    return any(part in name for part in SPOILING)
