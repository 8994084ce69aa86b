from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from zaqar.v2 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Queue(_message.Message):
    __slots__ = ("name", "metadata", "exists")
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    metadata: bytes
    exists: bool
    def __init__(self, name: _Optional[str] = ..., metadata: _Optional[bytes] = ..., exists: _Optional[bool] = ...) -> None: ...

class CreateQueueRequest(_message.Message):
    __slots__ = ("project", "queue", "metadata")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    metadata: bytes
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., metadata: _Optional[bytes] = ...) -> None: ...

class CreateQueueResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class GetQueueRequest(_message.Message):
    __slots__ = ("project", "queue")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ...) -> None: ...

class PatchOperation(_message.Message):
    __slots__ = ("op", "path", "value")
    OP_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    op: str
    path: str
    value: bytes
    def __init__(self, op: _Optional[str] = ..., path: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class UpdateQueueRequest(_message.Message):
    __slots__ = ("project", "queue", "operations")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    operations: _containers.RepeatedCompositeFieldContainer[PatchOperation]
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., operations: _Optional[_Iterable[_Union[PatchOperation, _Mapping]]] = ...) -> None: ...

class DeleteQueueRequest(_message.Message):
    __slots__ = ("project", "queue")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ...) -> None: ...

class ListQueuesRequest(_message.Message):
    __slots__ = ("project", "limit", "marker", "detailed", "name", "with_count", "metadata_filters")
    class MetadataFiltersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MARKER_FIELD_NUMBER: _ClassVar[int]
    DETAILED_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WITH_COUNT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FILTERS_FIELD_NUMBER: _ClassVar[int]
    project: str
    limit: int
    marker: str
    detailed: bool
    name: str
    with_count: bool
    metadata_filters: _containers.ScalarMap[str, bytes]
    def __init__(self, project: _Optional[str] = ..., limit: _Optional[int] = ..., marker: _Optional[str] = ..., detailed: _Optional[bool] = ..., name: _Optional[str] = ..., with_count: _Optional[bool] = ..., metadata_filters: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class ListQueuesResponse(_message.Message):
    __slots__ = ("queues", "next_marker", "count")
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    NEXT_MARKER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[Queue]
    next_marker: str
    count: int
    def __init__(self, queues: _Optional[_Iterable[_Union[Queue, _Mapping]]] = ..., next_marker: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GetQueueStatsRequest(_message.Message):
    __slots__ = ("project", "queue")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ...) -> None: ...

class PurgeQueueRequest(_message.Message):
    __slots__ = ("project", "queue", "resource_types")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPES_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    resource_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ..., resource_types: _Optional[_Iterable[str]] = ...) -> None: ...
