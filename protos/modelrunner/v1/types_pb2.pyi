from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelConfig(_message.Message):
    __slots__ = ("format", "quantization", "parameters", "architecture", "size", "context_size", "gguf")
    class GgufEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SIZE_FIELD_NUMBER: _ClassVar[int]
    GGUF_FIELD_NUMBER: _ClassVar[int]
    format: str
    quantization: str
    parameters: str
    architecture: str
    size: str
    context_size: int
    gguf: _containers.ScalarMap[str, str]
    def __init__(self, format: _Optional[str] = ..., quantization: _Optional[str] = ..., parameters: _Optional[str] = ..., architecture: _Optional[str] = ..., size: _Optional[str] = ..., context_size: _Optional[int] = ..., gguf: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "tags", "created", "config", "size")
    ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    id: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    created: float
    config: ModelConfig
    size: float
    def __init__(self, id: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., created: _Optional[float] = ..., config: _Optional[_Union[ModelConfig, _Mapping]] = ..., size: _Optional[float] = ...) -> None: ...

class Descriptor(_message.Message):
    __slots__ = ("media_type", "digest", "size", "annotations")
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    media_type: str
    digest: str
    size: float
    annotations: _containers.ScalarMap[str, str]
    def __init__(self, media_type: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[float] = ..., annotations: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("type", "message", "total", "layer", "mode", "current", "rate", "model_id")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    type: str
    message: str
    total: float
    layer: LayerProgress
    mode: str
    current: float
    rate: float
    model_id: str
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ..., total: _Optional[float] = ..., layer: _Optional[_Union[LayerProgress, _Mapping]] = ..., mode: _Optional[str] = ..., current: _Optional[float] = ..., rate: _Optional[float] = ..., model_id: _Optional[str] = ...) -> None: ...

class LayerProgress(_message.Message):
    __slots__ = ("id", "size", "current")
    ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    size: float
    current: float
    def __init__(self, id: _Optional[str] = ..., size: _Optional[float] = ..., current: _Optional[float] = ...) -> None: ...
