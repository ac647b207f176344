import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BackendKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_KIND_UNSPECIFIED: _ClassVar[BackendKind]
    BACKEND_KIND_OLLAMA: _ClassVar[BackendKind]
    BACKEND_KIND_OPENAI: _ClassVar[BackendKind]

class BackendState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_STATE_UNSPECIFIED: _ClassVar[BackendState]
    BACKEND_STATE_HEALTHY: _ClassVar[BackendState]
    BACKEND_STATE_EJECTED: _ClassVar[BackendState]
    BACKEND_STATE_DOWN: _ClassVar[BackendState]
BACKEND_KIND_UNSPECIFIED: BackendKind
BACKEND_KIND_OLLAMA: BackendKind
BACKEND_KIND_OPENAI: BackendKind
BACKEND_STATE_UNSPECIFIED: BackendState
BACKEND_STATE_HEALTHY: BackendState
BACKEND_STATE_EJECTED: BackendState
BACKEND_STATE_DOWN: BackendState

class Model(_message.Message):
    __slots__ = ("name", "backends", "size_bytes", "family", "healthy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    name: str
    backends: _containers.RepeatedScalarFieldContainer[str]
    size_bytes: int
    family: str
    healthy: bool
    def __init__(self, name: _Optional[str] = ..., backends: _Optional[_Iterable[str]] = ..., size_bytes: _Optional[int] = ..., family: _Optional[str] = ..., healthy: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class Backend(_message.Message):
    __slots__ = ("name", "kind", "endpoint", "state", "ejected_until", "in_flight", "requests_total", "errors_total", "latency_estimate", "weight", "priority", "models", "capacity", "queued", "load_signal", "reported_running", "reported_waiting", "loaded_models")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EJECTED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERRORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    LOAD_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    REPORTED_RUNNING_FIELD_NUMBER: _ClassVar[int]
    REPORTED_WAITING_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: BackendKind
    endpoint: str
    state: BackendState
    ejected_until: _timestamp_pb2.Timestamp
    in_flight: int
    requests_total: int
    errors_total: int
    latency_estimate: _duration_pb2.Duration
    weight: int
    priority: int
    models: _containers.RepeatedScalarFieldContainer[str]
    capacity: int
    queued: int
    load_signal: str
    reported_running: int
    reported_waiting: int
    loaded_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[BackendKind, str]] = ..., endpoint: _Optional[str] = ..., state: _Optional[_Union[BackendState, str]] = ..., ejected_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., in_flight: _Optional[int] = ..., requests_total: _Optional[int] = ..., errors_total: _Optional[int] = ..., latency_estimate: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., weight: _Optional[int] = ..., priority: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., capacity: _Optional[int] = ..., queued: _Optional[int] = ..., load_signal: _Optional[str] = ..., reported_running: _Optional[int] = ..., reported_waiting: _Optional[int] = ..., loaded_models: _Optional[_Iterable[str]] = ...) -> None: ...

class ListBackendsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBackendsResponse(_message.Message):
    __slots__ = ("backends",)
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    backends: _containers.RepeatedCompositeFieldContainer[Backend]
    def __init__(self, backends: _Optional[_Iterable[_Union[Backend, _Mapping]]] = ...) -> None: ...

class PullModelRequest(_message.Message):
    __slots__ = ("backend", "model")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    backend: str
    model: str
    def __init__(self, backend: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class PullModelResponse(_message.Message):
    __slots__ = ("status", "digest", "total_bytes", "completed_bytes")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_BYTES_FIELD_NUMBER: _ClassVar[int]
    status: str
    digest: str
    total_bytes: int
    completed_bytes: int
    def __init__(self, status: _Optional[str] = ..., digest: _Optional[str] = ..., total_bytes: _Optional[int] = ..., completed_bytes: _Optional[int] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("backend", "model")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    backend: str
    model: str
    def __init__(self, backend: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RouteTarget(_message.Message):
    __slots__ = ("backend", "model", "weight", "priority")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    backend: str
    model: str
    weight: int
    priority: int
    def __init__(self, backend: _Optional[str] = ..., model: _Optional[str] = ..., weight: _Optional[int] = ..., priority: _Optional[int] = ...) -> None: ...

class RouteRule(_message.Message):
    __slots__ = ("task", "match")
    TASK_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    task: str
    match: str
    def __init__(self, task: _Optional[str] = ..., match: _Optional[str] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("name", "strategy", "targets", "rules", "attempts", "affinity", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    strategy: str
    targets: _containers.RepeatedCompositeFieldContainer[RouteTarget]
    rules: _containers.RepeatedCompositeFieldContainer[RouteRule]
    attempts: int
    affinity: str
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., strategy: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[RouteTarget, _Mapping]]] = ..., rules: _Optional[_Iterable[_Union[RouteRule, _Mapping]]] = ..., attempts: _Optional[int] = ..., affinity: _Optional[str] = ..., is_default: _Optional[bool] = ...) -> None: ...

class ListRoutesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRoutesResponse(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...
