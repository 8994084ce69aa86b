from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Message(_message.Message):
    __slots__ = ("id", "body", "ttl", "age", "claim_id", "claim_count", "created", "checksum")
    ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    CLAIM_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIM_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    id: str
    body: bytes
    ttl: int
    age: int
    claim_id: str
    claim_count: int
    created: int
    checksum: str
    def __init__(self, id: _Optional[str] = ..., body: _Optional[bytes] = ..., ttl: _Optional[int] = ..., age: _Optional[int] = ..., claim_id: _Optional[str] = ..., claim_count: _Optional[int] = ..., created: _Optional[int] = ..., checksum: _Optional[str] = ...) -> None: ...

class MessageSummary(_message.Message):
    __slots__ = ("id", "age", "created")
    ID_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    age: int
    created: int
    def __init__(self, id: _Optional[str] = ..., age: _Optional[int] = ..., created: _Optional[int] = ...) -> None: ...

class QueueStats(_message.Message):
    __slots__ = ("claimed", "free", "total", "oldest", "newest")
    CLAIMED_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    OLDEST_FIELD_NUMBER: _ClassVar[int]
    NEWEST_FIELD_NUMBER: _ClassVar[int]
    claimed: int
    free: int
    total: int
    oldest: MessageSummary
    newest: MessageSummary
    def __init__(self, claimed: _Optional[int] = ..., free: _Optional[int] = ..., total: _Optional[int] = ..., oldest: _Optional[_Union[MessageSummary, _Mapping]] = ..., newest: _Optional[_Union[MessageSummary, _Mapping]] = ...) -> None: ...

class QueueRef(_message.Message):
    __slots__ = ("project", "queue")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    project: str
    queue: str
    def __init__(self, project: _Optional[str] = ..., queue: _Optional[str] = ...) -> None: ...
