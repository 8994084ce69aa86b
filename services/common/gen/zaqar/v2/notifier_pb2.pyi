from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from zaqar.v2 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchRequest(_message.Message):
    __slots__ = ("project", "queue", "ttl")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    ttl: int
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., ttl: _Optional[int] = ...) -> None: ...

class Notification(_message.Message):
    __slots__ = ("queue", "message")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    queue: str
    message: _common_pb2.Message
    def __init__(self, queue: _Optional[str] = ..., message: _Optional[_Union[_common_pb2.Message, _Mapping]] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("id", "source", "subscriber", "ttl", "age", "options", "confirmed")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: str
    subscriber: str
    ttl: int
    age: int
    options: bytes
    confirmed: bool
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., subscriber: _Optional[str] = ..., ttl: _Optional[int] = ..., age: _Optional[int] = ..., options: _Optional[bytes] = ..., confirmed: _Optional[bool] = ...) -> None: ...

class SubscriptionRef(_message.Message):
    __slots__ = ("project", "queue", "subscription_id")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    subscription_id: str
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., subscription_id: _Optional[str] = ...) -> None: ...

class CreateSubscriptionRequest(_message.Message):
    __slots__ = ("project", "queue", "subscriber", "ttl", "options")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    subscriber: str
    ttl: int
    options: bytes
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., subscriber: _Optional[str] = ..., ttl: _Optional[int] = ..., options: _Optional[bytes] = ...) -> None: ...

class CreateSubscriptionResponse(_message.Message):
    __slots__ = ("subscription_id", "created")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    created: bool
    def __init__(self, subscription_id: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class ListSubscriptionsRequest(_message.Message):
    __slots__ = ("project", "queue", "limit", "marker")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MARKER_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    limit: int
    marker: str
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., limit: _Optional[int] = ..., marker: _Optional[str] = ...) -> None: ...

class ListSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions", "next_marker")
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_MARKER_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[Subscription]
    next_marker: str
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[Subscription, _Mapping]]] = ..., next_marker: _Optional[str] = ...) -> None: ...

class UpdateSubscriptionRequest(_message.Message):
    __slots__ = ("project", "queue", "subscription_id", "subscriber", "ttl", "options")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    subscription_id: str
    subscriber: str
    ttl: int
    options: bytes
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., subscription_id: _Optional[str] = ..., subscriber: _Optional[str] = ..., ttl: _Optional[int] = ..., options: _Optional[bytes] = ...) -> None: ...

class ConfirmSubscriptionRequest(_message.Message):
    __slots__ = ("project", "queue", "subscription_id", "confirmed")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    subscription_id: str
    confirmed: bool
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., subscription_id: _Optional[str] = ..., confirmed: _Optional[bool] = ...) -> None: ...

class NotifyRequest(_message.Message):
    __slots__ = ("project", "queue", "messages", "accepted_at")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Message]
    accepted_at: float
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_common_pb2.Message, _Mapping]]] = ..., accepted_at: _Optional[float] = ...) -> None: ...

class NotifyManyRequest(_message.Message):
    __slots__ = ("batches",)
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[NotifyRequest]
    def __init__(self, batches: _Optional[_Iterable[_Union[NotifyRequest, _Mapping]]] = ...) -> None: ...

class NotifyManyResponse(_message.Message):
    __slots__ = ("listened",)
    LISTENED_FIELD_NUMBER: _ClassVar[int]
    listened: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, listened: _Optional[_Iterable[bool]] = ...) -> None: ...
