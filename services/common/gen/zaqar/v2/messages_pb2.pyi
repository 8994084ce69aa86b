from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from zaqar.v2 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NewMessage(_message.Message):
    __slots__ = ("body", "ttl", "delay")
    BODY_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    ttl: int
    delay: int
    def __init__(self, body: _Optional[bytes] = ..., ttl: _Optional[int] = ..., delay: _Optional[int] = ...) -> None: ...

class PostMessagesRequest(_message.Message):
    __slots__ = ("project", "queue", "client_id", "messages")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    client_id: str
    messages: _containers.RepeatedCompositeFieldContainer[NewMessage]
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., client_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[NewMessage, _Mapping]]] = ...) -> None: ...

class PostMessagesResponse(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListMessagesRequest(_message.Message):
    __slots__ = ("project", "queue", "client_id", "limit", "marker", "echo", "include_claimed", "include_delayed")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MARKER_FIELD_NUMBER: _ClassVar[int]
    ECHO_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CLAIMED_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DELAYED_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    client_id: str
    limit: int
    marker: str
    echo: bool
    include_claimed: bool
    include_delayed: bool
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., client_id: _Optional[str] = ..., limit: _Optional[int] = ..., marker: _Optional[str] = ..., echo: _Optional[bool] = ..., include_claimed: _Optional[bool] = ..., include_delayed: _Optional[bool] = ...) -> None: ...

class ListMessagesResponse(_message.Message):
    __slots__ = ("messages", "next_marker")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_MARKER_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Message]
    next_marker: str
    def __init__(self, messages: _Optional[_Iterable[_Union[_common_pb2.Message, _Mapping]]] = ..., next_marker: _Optional[str] = ...) -> None: ...

class GetMessageRequest(_message.Message):
    __slots__ = ("project", "queue", "message_id")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    message_id: str
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., message_id: _Optional[str] = ...) -> None: ...

class GetMessagesRequest(_message.Message):
    __slots__ = ("project", "queue", "message_ids")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    message_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., message_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetMessagesResponse(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[_common_pb2.Message, _Mapping]]] = ...) -> None: ...

class DeleteMessageRequest(_message.Message):
    __slots__ = ("project", "queue", "message_id", "claim_id")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIM_ID_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    message_id: str
    claim_id: str
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., message_id: _Optional[str] = ..., claim_id: _Optional[str] = ...) -> None: ...

class DeleteMessagesRequest(_message.Message):
    __slots__ = ("project", "queue", "message_ids", "claim_ids")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    CLAIM_IDS_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    message_ids: _containers.RepeatedScalarFieldContainer[str]
    claim_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., message_ids: _Optional[_Iterable[str]] = ..., claim_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PopMessagesRequest(_message.Message):
    __slots__ = ("project", "queue", "limit")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    limit: int
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class PopMessagesResponse(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[_common_pb2.Message, _Mapping]]] = ...) -> None: ...

class CreateClaimRequest(_message.Message):
    __slots__ = ("project", "queue", "limit", "ttl", "grace")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    GRACE_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    limit: int
    ttl: int
    grace: int
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., limit: _Optional[int] = ..., ttl: _Optional[int] = ..., grace: _Optional[int] = ...) -> None: ...

class Claim(_message.Message):
    __slots__ = ("id", "ttl", "age", "messages")
    ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    id: str
    ttl: int
    age: int
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Message]
    def __init__(self, id: _Optional[str] = ..., ttl: _Optional[int] = ..., age: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[_common_pb2.Message, _Mapping]]] = ...) -> None: ...

class GetClaimRequest(_message.Message):
    __slots__ = ("project", "queue", "claim_id")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CLAIM_ID_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    claim_id: str
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., claim_id: _Optional[str] = ...) -> None: ...

class UpdateClaimRequest(_message.Message):
    __slots__ = ("project", "queue", "claim_id", "ttl", "grace")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CLAIM_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    GRACE_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    claim_id: str
    ttl: int
    grace: int
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., claim_id: _Optional[str] = ..., ttl: _Optional[int] = ..., grace: _Optional[int] = ...) -> None: ...

class DeleteClaimRequest(_message.Message):
    __slots__ = ("project", "queue", "claim_id")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CLAIM_ID_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    claim_id: str
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., claim_id: _Optional[str] = ...) -> None: ...
