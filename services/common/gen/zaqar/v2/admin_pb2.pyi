from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Pool(_message.Message):
    __slots__ = ("name", "uri", "weight", "flavor", "options")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    weight: int
    flavor: str
    options: bytes
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., weight: _Optional[int] = ..., flavor: _Optional[str] = ..., options: _Optional[bytes] = ...) -> None: ...

class PutPoolRequest(_message.Message):
    __slots__ = ("name", "uri", "weight", "flavor", "options")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    weight: int
    flavor: str
    options: bytes
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., weight: _Optional[int] = ..., flavor: _Optional[str] = ..., options: _Optional[bytes] = ...) -> None: ...

class PutPoolResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class GetPoolRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UpdatePoolRequest(_message.Message):
    __slots__ = ("name", "uri", "weight", "flavor", "options")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    weight: int
    flavor: str
    options: bytes
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., weight: _Optional[int] = ..., flavor: _Optional[str] = ..., options: _Optional[bytes] = ...) -> None: ...

class DeletePoolRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListPoolsRequest(_message.Message):
    __slots__ = ("limit", "marker")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MARKER_FIELD_NUMBER: _ClassVar[int]
    limit: int
    marker: str
    def __init__(self, limit: _Optional[int] = ..., marker: _Optional[str] = ...) -> None: ...

class ListPoolsResponse(_message.Message):
    __slots__ = ("pools", "next_marker")
    POOLS_FIELD_NUMBER: _ClassVar[int]
    NEXT_MARKER_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[Pool]
    next_marker: str
    def __init__(self, pools: _Optional[_Iterable[_Union[Pool, _Mapping]]] = ..., next_marker: _Optional[str] = ...) -> None: ...

class Flavor(_message.Message):
    __slots__ = ("project", "name", "pool_list", "capabilities")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    POOL_LIST_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    project: str
    name: str
    pool_list: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, project: _Optional[str] = ..., name: _Optional[str] = ..., pool_list: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class PutFlavorRequest(_message.Message):
    __slots__ = ("project", "name", "pool_list")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    POOL_LIST_FIELD_NUMBER: _ClassVar[int]
    project: str
    name: str
    pool_list: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, project: _Optional[str] = ..., name: _Optional[str] = ..., pool_list: _Optional[_Iterable[str]] = ...) -> None: ...

class PutFlavorResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class GetFlavorRequest(_message.Message):
    __slots__ = ("project", "name")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    project: str
    name: str
    def __init__(self, project: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListFlavorsRequest(_message.Message):
    __slots__ = ("project", "limit", "marker")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MARKER_FIELD_NUMBER: _ClassVar[int]
    project: str
    limit: int
    marker: str
    def __init__(self, project: _Optional[str] = ..., limit: _Optional[int] = ..., marker: _Optional[str] = ...) -> None: ...

class ListFlavorsResponse(_message.Message):
    __slots__ = ("flavors", "next_marker")
    FLAVORS_FIELD_NUMBER: _ClassVar[int]
    NEXT_MARKER_FIELD_NUMBER: _ClassVar[int]
    flavors: _containers.RepeatedCompositeFieldContainer[Flavor]
    next_marker: str
    def __init__(self, flavors: _Optional[_Iterable[_Union[Flavor, _Mapping]]] = ..., next_marker: _Optional[str] = ...) -> None: ...

class PoolStore(_message.Message):
    __slots__ = ("name", "uri")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ...) -> None: ...

class CheckStoresRequest(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[PoolStore]
    def __init__(self, pools: _Optional[_Iterable[_Union[PoolStore, _Mapping]]] = ...) -> None: ...

class OperationStatus(_message.Message):
    __slots__ = ("name", "succeeded", "seconds", "ref")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    name: str
    succeeded: bool
    seconds: float
    ref: str
    def __init__(self, name: _Optional[str] = ..., succeeded: _Optional[bool] = ..., seconds: _Optional[float] = ..., ref: _Optional[str] = ...) -> None: ...

class StoreReport(_message.Message):
    __slots__ = ("store", "reachable", "problem", "operations")
    STORE_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    store: str
    reachable: bool
    problem: str
    operations: _containers.RepeatedCompositeFieldContainer[OperationStatus]
    def __init__(self, store: _Optional[str] = ..., reachable: _Optional[bool] = ..., problem: _Optional[str] = ..., operations: _Optional[_Iterable[_Union[OperationStatus, _Mapping]]] = ...) -> None: ...

class StoresHealth(_message.Message):
    __slots__ = ("stores", "pools")
    STORES_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    stores: _containers.RepeatedCompositeFieldContainer[StoreReport]
    pools: _containers.RepeatedCompositeFieldContainer[PoolStore]
    def __init__(self, stores: _Optional[_Iterable[_Union[StoreReport, _Mapping]]] = ..., pools: _Optional[_Iterable[_Union[PoolStore, _Mapping]]] = ...) -> None: ...
