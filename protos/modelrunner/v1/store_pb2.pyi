from google.api import annotations_pb2 as _annotations_pb2
from modelrunner.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_types_pb2.Model]
    def __init__(self, models: _Optional[_Iterable[_Union[_types_pb2.Model, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name", "remote")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    remote: bool
    def __init__(self, name: _Optional[str] = ..., remote: _Optional[bool] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteAction(_message.Message):
    __slots__ = ("untagged", "deleted")
    UNTAGGED_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    untagged: str
    deleted: str
    def __init__(self, untagged: _Optional[str] = ..., deleted: _Optional[str] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ("actions",)
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[DeleteAction]
    def __init__(self, actions: _Optional[_Iterable[_Union[DeleteAction, _Mapping]]] = ...) -> None: ...

class TagModelRequest(_message.Message):
    __slots__ = ("source", "repo", "tag")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REPO_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    source: str
    repo: str
    tag: str
    def __init__(self, source: _Optional[str] = ..., repo: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class TagModelResponse(_message.Message):
    __slots__ = ("tag", "model")
    TAG_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    tag: str
    model: _types_pb2.Model
    def __init__(self, tag: _Optional[str] = ..., model: _Optional[_Union[_types_pb2.Model, _Mapping]] = ...) -> None: ...

class PackageFile(_message.Message):
    __slots__ = ("digest", "name")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    digest: str
    name: str
    def __init__(self, digest: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class PackageModelRequest(_message.Message):
    __slots__ = ("name", "context_size", "gguf", "license", "chat_template")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SIZE_FIELD_NUMBER: _ClassVar[int]
    GGUF_FIELD_NUMBER: _ClassVar[int]
    LICENSE_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    context_size: int
    gguf: _containers.RepeatedCompositeFieldContainer[PackageFile]
    license: PackageFile
    chat_template: PackageFile
    def __init__(self, name: _Optional[str] = ..., context_size: _Optional[int] = ..., gguf: _Optional[_Iterable[_Union[PackageFile, _Mapping]]] = ..., license: _Optional[_Union[PackageFile, _Mapping]] = ..., chat_template: _Optional[_Union[PackageFile, _Mapping]] = ...) -> None: ...

class PurgeModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PurgeModelsResponse(_message.Message):
    __slots__ = ("deleted_models", "reclaimed_bytes")
    DELETED_MODELS_FIELD_NUMBER: _ClassVar[int]
    RECLAIMED_BYTES_FIELD_NUMBER: _ClassVar[int]
    deleted_models: int
    reclaimed_bytes: float
    def __init__(self, deleted_models: _Optional[int] = ..., reclaimed_bytes: _Optional[float] = ...) -> None: ...

class PruneRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PruneResponse(_message.Message):
    __slots__ = ("removed_blobs", "reclaimed_bytes")
    REMOVED_BLOBS_FIELD_NUMBER: _ClassVar[int]
    RECLAIMED_BYTES_FIELD_NUMBER: _ClassVar[int]
    removed_blobs: int
    reclaimed_bytes: float
    def __init__(self, removed_blobs: _Optional[int] = ..., reclaimed_bytes: _Optional[float] = ...) -> None: ...

class DiskUsageRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DiskUsageResponse(_message.Message):
    __slots__ = ("models_disk_usage", "default_backend_disk_usage")
    MODELS_DISK_USAGE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BACKEND_DISK_USAGE_FIELD_NUMBER: _ClassVar[int]
    models_disk_usage: float
    default_backend_disk_usage: float
    def __init__(self, models_disk_usage: _Optional[float] = ..., default_backend_disk_usage: _Optional[float] = ...) -> None: ...

class ResolveModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ResolvedModel(_message.Message):
    __slots__ = ("id", "reference", "config", "gguf_paths", "mmproj_path", "license_path", "chat_template", "layers")
    ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    GGUF_PATHS_FIELD_NUMBER: _ClassVar[int]
    MMPROJ_PATH_FIELD_NUMBER: _ClassVar[int]
    LICENSE_PATH_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    id: str
    reference: str
    config: _types_pb2.ModelConfig
    gguf_paths: _containers.RepeatedScalarFieldContainer[str]
    mmproj_path: str
    license_path: str
    chat_template: str
    layers: _containers.RepeatedCompositeFieldContainer[_types_pb2.Descriptor]
    def __init__(self, id: _Optional[str] = ..., reference: _Optional[str] = ..., config: _Optional[_Union[_types_pb2.ModelConfig, _Mapping]] = ..., gguf_paths: _Optional[_Iterable[str]] = ..., mmproj_path: _Optional[str] = ..., license_path: _Optional[str] = ..., chat_template: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[_types_pb2.Descriptor, _Mapping]]] = ...) -> None: ...

class StatBlobRequest(_message.Message):
    __slots__ = ("digest",)
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    digest: str
    def __init__(self, digest: _Optional[str] = ...) -> None: ...

class StatBlobResponse(_message.Message):
    __slots__ = ("exists", "size", "partial")
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    size: float
    partial: float
    def __init__(self, exists: _Optional[bool] = ..., size: _Optional[float] = ..., partial: _Optional[float] = ...) -> None: ...

class WriteBlobRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: BlobHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[BlobHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class BlobHeader(_message.Message):
    __slots__ = ("digest", "size", "offset", "media_type")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: float
    offset: float
    media_type: str
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[float] = ..., offset: _Optional[float] = ..., media_type: _Optional[str] = ...) -> None: ...

class WriteBlobResponse(_message.Message):
    __slots__ = ("digest", "size", "existed")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: float
    existed: bool
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[float] = ..., existed: _Optional[bool] = ...) -> None: ...

class ReadBlobRequest(_message.Message):
    __slots__ = ("digest", "offset")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    digest: str
    offset: float
    def __init__(self, digest: _Optional[str] = ..., offset: _Optional[float] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class PutManifestRequest(_message.Message):
    __slots__ = ("manifest", "tags")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    manifest: bytes
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, manifest: _Optional[bytes] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class GetManifestRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetManifestResponse(_message.Message):
    __slots__ = ("digest", "media_type", "manifest", "reference")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    media_type: str
    manifest: bytes
    reference: str
    def __init__(self, digest: _Optional[str] = ..., media_type: _Optional[str] = ..., manifest: _Optional[bytes] = ..., reference: _Optional[str] = ...) -> None: ...
