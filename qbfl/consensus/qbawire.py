"""Canonical bytes of the QBA messages (qbfl.consensus.qba.messages), encoded from outside that package.

The four QBA message dataclasses carry no schema of their own; these record types give each one
canonical bytes with the ledger's encoding (docs/consensus.md, "Wire encoding"). QDS values
(sig, x, y) are Python ints of up to a few hundred bits: they are written as minimal big-endian
unsigned bytes (zero is one 0x00 byte; any other leading zero byte is rejected).

Decoding refuses what no session could accept (`messages.shape_error`: a path longer than
QBA_MAX_PATH or repeating an id, Bob = Charlie or on the path, a sender or recipient the kind does
not fix, a document over QBA_DOC_MAX_BYTES); the participant checks the rest against its committee,
mode and n. Nothing is cached at decode time (docs/qba.md, "Bounds").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qbfl.consensus.qba.messages import (
    QBA_DOC_MAX_BYTES,
    QBA_MAX_PATH,
    Accepted,
    Forwarded,
    KeysRevealed,
    QbaMessage,
    SignedValue,
    TripleId,
    shape_error,
)
from qbfl.ledger.encoding import (
    EncodingError,
    Field,
    FieldKind,
    RecordSchema,
    decode_record,
    encode_record,
    record_type,
)

QDS_INT_MAX_LEN = 1024  # bytes per QDS value: 8 192 bits, far above 2n = 256 at n = 128
_PATH_MAX_LEN = 4 + 8 * QBA_MAX_PATH  # relay paths are at most f_c + 1 long (32 ids: 260 bytes)


def int_to_bytes(value: int, name: str) -> bytes:
    """Minimal big-endian bytes of a non-negative int (0 → b"\\x00")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EncodingError(f"{name}: expected a non-negative int, got {value!r}")
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def int_from_bytes(raw: bytes, name: str) -> int:
    if not raw or (len(raw) > 1 and raw[0] == 0):
        raise EncodingError(f"{name}: an int is minimal big-endian bytes (no leading zero)")
    return int.from_bytes(raw, "big")


_TRIPLE = (
    Field(1, "path", FieldKind.UINT_SEQ, max_len=_PATH_MAX_LEN),
    Field(2, "bob", FieldKind.UINT),
    Field(3, "charlie", FieldKind.UINT),
    Field(4, "sender", FieldKind.UINT),
    Field(5, "recipient", FieldKind.UINT),
)
_DOC = Field(6, "doc", FieldKind.BYTES, max_len=QBA_DOC_MAX_BYTES)
_SIG = Field(7, "sig", FieldKind.BYTES, max_len=QDS_INT_MAX_LEN)
_X = Field(8, "x", FieldKind.BYTES, max_len=QDS_INT_MAX_LEN)
_Y = Field(9, "y", FieldKind.BYTES, max_len=QDS_INT_MAX_LEN)
_INTS = ("sig", "x", "y")

QBA_SCHEMAS: dict[type, RecordSchema] = {
    SignedValue: RecordSchema(24, "QbaSignedValue", (*_TRIPLE, _DOC, _SIG)),
    Forwarded: RecordSchema(25, "QbaForwarded", (*_TRIPLE, _DOC, _SIG, _X, _Y)),
    KeysRevealed: RecordSchema(26, "QbaKeysRevealed", (*_TRIPLE, _X, _Y)),
    Accepted: RecordSchema(27, "QbaAccepted", _TRIPLE),
}
_BY_TAG: dict[int, tuple[RecordSchema, Callable[..., Any]]] = {
    schema.type_tag: (schema, cls) for cls, schema in QBA_SCHEMAS.items()
}


def encode_qba_message(message: object) -> bytes:
    """Canonical bytes of one QBA message; EncodingError for anything else."""
    schema = QBA_SCHEMAS.get(type(message))
    if schema is None:
        raise EncodingError(f"not a QBA message: {type(message).__name__}")
    problem = shape_error(message)
    if problem is not None:
        raise EncodingError(f"{schema.name}: {problem} (peers refuse it)")
    triple: TripleId = message.triple  # type: ignore[attr-defined]
    values: dict[str, Any] = {
        "path": triple.path,
        "bob": triple.bob,
        "charlie": triple.charlie,
        "sender": message.sender,  # type: ignore[attr-defined]
        "recipient": message.recipient,  # type: ignore[attr-defined]
    }
    names = {f.name for f in schema.fields}
    if "doc" in names:
        values["doc"] = message.doc  # type: ignore[attr-defined]
    for name in _INTS:
        if name in names:
            values[name] = int_to_bytes(getattr(message, name), name)
    return encode_record(schema, values)


def decode_qba_message(data: bytes) -> QbaMessage:
    """The QBA message whose canonical bytes are `data`; EncodingError if they are not."""
    entry = _BY_TAG.get(record_type(data))
    if entry is None:
        raise EncodingError(f"not a QBA message record (type {record_type(data)})")
    schema, cls = entry
    values = decode_record(schema, data)
    if not values["path"]:
        raise EncodingError(f"{schema.name}: a triple's path names at least the leader")
    triple = TripleId(values.pop("path"), values.pop("bob"), values.pop("charlie"))
    for name in _INTS:
        if name in values:
            values[name] = int_from_bytes(values[name], name)
    message: QbaMessage = cls(triple=triple, **values)
    problem = shape_error(message)
    if problem is not None:
        raise EncodingError(f"{schema.name}: {problem}")
    return message
