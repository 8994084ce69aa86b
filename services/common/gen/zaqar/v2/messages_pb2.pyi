from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.rpc import status_pb2 as _status_pb2
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

class BatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[BatchItem]
    def __init__(self, items: _Optional[_Iterable[_Union[BatchItem, _Mapping]]] = ...) -> None: ...

class BatchItem(_message.Message):
    __slots__ = ("post_messages", "list_messages", "get_message", "get_messages", "delete_message", "delete_messages", "pop_messages", "create_claim", "get_claim", "update_claim", "delete_claim", "get_stats")
    POST_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    LIST_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    GET_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GET_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    DELETE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DELETE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    POP_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    CREATE_CLAIM_FIELD_NUMBER: _ClassVar[int]
    GET_CLAIM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CLAIM_FIELD_NUMBER: _ClassVar[int]
    DELETE_CLAIM_FIELD_NUMBER: _ClassVar[int]
    GET_STATS_FIELD_NUMBER: _ClassVar[int]
    post_messages: PostMessagesRequest
    list_messages: ListMessagesRequest
    get_message: GetMessageRequest
    get_messages: GetMessagesRequest
    delete_message: DeleteMessageRequest
    delete_messages: DeleteMessagesRequest
    pop_messages: PopMessagesRequest
    create_claim: CreateClaimRequest
    get_claim: GetClaimRequest
    update_claim: UpdateClaimRequest
    delete_claim: DeleteClaimRequest
    get_stats: _common_pb2.QueueRef
    def __init__(self, post_messages: _Optional[_Union[PostMessagesRequest, _Mapping]] = ..., list_messages: _Optional[_Union[ListMessagesRequest, _Mapping]] = ..., get_message: _Optional[_Union[GetMessageRequest, _Mapping]] = ..., get_messages: _Optional[_Union[GetMessagesRequest, _Mapping]] = ..., delete_message: _Optional[_Union[DeleteMessageRequest, _Mapping]] = ..., delete_messages: _Optional[_Union[DeleteMessagesRequest, _Mapping]] = ..., pop_messages: _Optional[_Union[PopMessagesRequest, _Mapping]] = ..., create_claim: _Optional[_Union[CreateClaimRequest, _Mapping]] = ..., get_claim: _Optional[_Union[GetClaimRequest, _Mapping]] = ..., update_claim: _Optional[_Union[UpdateClaimRequest, _Mapping]] = ..., delete_claim: _Optional[_Union[DeleteClaimRequest, _Mapping]] = ..., get_stats: _Optional[_Union[_common_pb2.QueueRef, _Mapping]] = ...) -> None: ...

class BatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchResult, _Mapping]]] = ...) -> None: ...

class BatchResult(_message.Message):
    __slots__ = ("error", "post_messages", "list_messages", "message", "get_messages", "pop_messages", "claim", "stats", "empty")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    POST_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    LIST_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GET_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    POP_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    EMPTY_FIELD_NUMBER: _ClassVar[int]
    error: _status_pb2.Status
    post_messages: PostMessagesResponse
    list_messages: ListMessagesResponse
    message: _common_pb2.Message
    get_messages: GetMessagesResponse
    pop_messages: PopMessagesResponse
    claim: Claim
    stats: _common_pb2.QueueStats
    empty: _empty_pb2.Empty
    def __init__(self, error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., post_messages: _Optional[_Union[PostMessagesResponse, _Mapping]] = ..., list_messages: _Optional[_Union[ListMessagesResponse, _Mapping]] = ..., message: _Optional[_Union[_common_pb2.Message, _Mapping]] = ..., get_messages: _Optional[_Union[GetMessagesResponse, _Mapping]] = ..., pop_messages: _Optional[_Union[PopMessagesResponse, _Mapping]] = ..., claim: _Optional[_Union[Claim, _Mapping]] = ..., stats: _Optional[_Union[_common_pb2.QueueStats, _Mapping]] = ..., empty: _Optional[_Union[_empty_pb2.Empty, _Mapping]] = ...) -> None: ...
