from qbfl._proto.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TaskRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TaskReply(_message.Message):
    __slots__ = ("task", "publisher_public_key", "task_hash")
    TASK_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    TASK_HASH_FIELD_NUMBER: _ClassVar[int]
    task: bytes
    publisher_public_key: bytes
    task_hash: bytes
    def __init__(self, task: _Optional[bytes] = ..., publisher_public_key: _Optional[bytes] = ..., task_hash: _Optional[bytes] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("registered", "expected")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    registered: int
    expected: int
    def __init__(self, registered: _Optional[int] = ..., expected: _Optional[int] = ...) -> None: ...

class GenesisRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GenesisReply(_message.Message):
    __slots__ = ("ready", "genesis", "registered", "expected")
    READY_FIELD_NUMBER: _ClassVar[int]
    GENESIS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    genesis: bytes
    registered: int
    expected: int
    def __init__(self, ready: _Optional[bool] = ..., genesis: _Optional[bytes] = ..., registered: _Optional[int] = ..., expected: _Optional[int] = ...) -> None: ...
