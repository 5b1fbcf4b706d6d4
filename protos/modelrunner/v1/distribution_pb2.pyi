from google.api import annotations_pb2 as _annotations_pb2
from modelrunner.v1 import types_pb2 as _types_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PullModelRequest(_message.Message):
    __slots__ = ("reference", "insecure")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    INSECURE_FIELD_NUMBER: _ClassVar[int]
    reference: str
    insecure: bool
    def __init__(self, reference: _Optional[str] = ..., insecure: _Optional[bool] = ...) -> None: ...

class PushModelRequest(_message.Message):
    __slots__ = ("name", "insecure")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSECURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    insecure: bool
    def __init__(self, name: _Optional[str] = ..., insecure: _Optional[bool] = ...) -> None: ...

class GetRemoteModelRequest(_message.Message):
    __slots__ = ("reference", "insecure")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    INSECURE_FIELD_NUMBER: _ClassVar[int]
    reference: str
    insecure: bool
    def __init__(self, reference: _Optional[str] = ..., insecure: _Optional[bool] = ...) -> None: ...
