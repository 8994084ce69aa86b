"""The gRPC API stays compatible with its recorded baseline (scripts/api_compat.py), and the
check catches the changes that would break a client or a replica of the version before."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from scripts import api_compat

FieldType = descriptor_pb2.FieldDescriptorProto
Files = descriptor_pb2.FileDescriptorSet


def _file(files: Files, name: str) -> descriptor_pb2.FileDescriptorProto:
    return next(f for f in files.file if f.name == f"zaqar_grpc/v2/{name}.proto")


def _message(files: Files, name: str) -> descriptor_pb2.DescriptorProto:
    return next(m for m in _file(files, "messages").message_type if m.name == name)


def _field(files: Files, message: str, name: str) -> FieldType:
    return next(f for f in _message(files, message).field if f.name == name)


def _method(files: Files, name: str) -> descriptor_pb2.MethodDescriptorProto:
    service = next(s for s in _file(files, "messages").service if s.name == "Messages")
    return next(m for m in service.method if m.name == name)


def _set_http(files: Files, method: str, path: str | None) -> None:
    """Gives ``method`` the HTTP rule ``DELETE path``, or none."""
    found = _method(files, method)
    options = descriptor_pb2.MethodOptions.FromString(found.options.SerializeToString())
    if path is None:
        options.ClearExtension(annotations_pb2.http)
    else:
        options.Extensions[annotations_pb2.http].delete = path
    found.options.CopyFrom(options)


def _delete_field(files: Files) -> None:
    fields = _message(files, "PostMessagesRequest").field
    del fields[[f.name for f in fields].index("client_id")]


def _change_type(files: Files) -> None:
    _field(files, "CreateClaimRequest", "wait_seconds").type = FieldType.TYPE_STRING


def _rename_field(files: Files) -> None:
    field = _field(files, "CreateClaimRequest", "grace")
    field.name, field.json_name = "grace_seconds", "graceSeconds"


def _renumber_field(files: Files) -> None:
    _field(files, "CreateClaimRequest", "wait_seconds").number = 16


def _make_repeated(files: Files) -> None:
    field = _field(files, "PostMessagesRequest", "queue")
    field.label = FieldType.LABEL_REPEATED


def _delete_method(files: Files) -> None:
    service = next(s for s in _file(files, "messages").service if s.name == "Messages")
    del service.method[[m.name for m in service.method].index("GetStats")]


def _change_request(files: Files) -> None:
    _method(files, "DeleteClaim").input_type = ".zaqar.v2.CreateClaimRequest"


def _make_streaming(files: Files) -> None:
    _method(files, "DeleteClaim").server_streaming = True


def _change_http_path(files: Files) -> None:
    _set_http(files, "DeleteClaim", "/v2/queues/{queue}/claims/{claim_id}")


def _drop_http_rule(files: Files) -> None:
    _set_http(files, "DeleteClaim", None)


BREAKING: dict[str, tuple[Callable[[Files], None], str]] = {
    # change -> (how, a part of what the check says)
    "a field deleted": (_delete_field, '"client_id" on message "PostMessagesRequest" was deleted'),
    "a field's type changed": (_change_type, 'changed type from "int32" to "string"'),
    "a field renamed": (_rename_field, 'changed name from "grace" to "grace_seconds"'),
    "a field renumbered": (_renumber_field, 'field "6" with name "wait_seconds"'),
    "a field made repeated": (_make_repeated, 'changed cardinality'),
    "a method deleted": (_delete_method, 'RPC "GetStats" on service "Messages"'),
    "a method's request type changed": (_change_request, 'changed request type'),
    "a method made streaming": (_make_streaming, 'server streaming'),
    "a method's HTTP path changed": (
        _change_http_path, "/zaqar.v2.Messages/DeleteClaim: its HTTP rule changed"
    ),
    "a method's HTTP rule removed": (
        _drop_http_rule, "/zaqar.v2.Messages/DeleteClaim: its HTTP rule"
    ),
}


def _changed(change: Callable[[Files], None]) -> bytes:
    files = api_compat.descriptors(api_compat.BASELINE.read_bytes())
    change(files)
    return files.SerializeToString()


def test_the_api_is_its_recorded_baseline() -> None:
    # The generated descriptor set (tests/unit/test_codegen.py: fresh from protos/) is the
    # recorded baseline: each change of the API was checked and recorded with
    # `.venv/bin/python scripts/api_compat.py --record`.
    current, baseline = api_compat.CURRENT.read_bytes(), api_compat.BASELINE.read_bytes()
    assert api_compat.breaking_changes(current, baseline) == []
    assert current == baseline, (
        "protos/ changed the API without recording it: run "
        "`.venv/bin/python scripts/api_compat.py --record` (docs/api-compatibility.md)"
    )


def test_the_baseline_holds_every_service_and_its_http_rules() -> None:
    files = api_compat.descriptors(api_compat.BASELINE.read_bytes())
    services = {s.name for f in files.file if f.package == "zaqar.v2" for s in f.service}
    assert services == {
        "Queues", "Flavors", "Pools", "Messages", "MessagesInternal", "StoreHealth",
        "Subscriptions", "NotifierInternal", "Topics",
    }
    rules = api_compat.http_rules(files)
    assert rules["/zaqar.v2.Messages/GetStats"].get == (
        "/v2/projects/{project}/queues/{queue}/messages:stats"
    )
    assert len(rules) >= 40


@pytest.mark.parametrize("name", list(BREAKING))
def test_a_breaking_change_is_reported(name: str) -> None:
    change, said = BREAKING[name]
    changes = api_compat.breaking_changes(_changed(change), api_compat.BASELINE.read_bytes())
    assert any(said in line for line in changes), changes


def test_additions_are_compatible() -> None:
    # A new field and a new method (with its HTTP rule) break nothing.
    def add(files: Files) -> None:
        message = _message(files, "CreateClaimRequest")
        message.field.add(name="note", json_name="note", number=99,
                          label=FieldType.LABEL_OPTIONAL, type=FieldType.TYPE_STRING)
        service = next(s for s in _file(files, "messages").service if s.name == "Messages")
        new = service.method.add()
        new.CopyFrom(_method(files, "DeleteClaim"))
        new.name = "ForgetClaim"
        _set_http(files, "ForgetClaim", "/v2/projects/{project}/queues/{queue}/forget/{claim_id}")

    assert api_compat.breaking_changes(_changed(add), api_compat.BASELINE.read_bytes()) == []
