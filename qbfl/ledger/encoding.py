"""The one canonical byte encoding that every QBFL hash and signature covers (never protobuf).

A record is

    magic 0x51 ('Q') | version u8 | type tag u16 BE | field count u8 | fields

and a field is ``tag u8 | length u32 BE | value``. Fields appear in strictly increasing tag
order, optional fields are omitted when absent, and every value kind has exactly one valid
byte form, so equal values always encode to equal bytes and ``decode(encode(x)) == x``.
The decoder rejects trailing bytes, unknown tags, missing required fields, oversize lengths
and non-canonical forms with `EncodingError`. docs/ledger.md describes the format byte by byte.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from itertools import pairwise
from typing import Any, ClassVar

from qbfl.errors import QbflError

MAGIC = 0x51
VERSION = 1
HEADER = struct.Struct(">BBHB")
FIELD_HEADER = struct.Struct(">BI")
COUNT = struct.Struct(">I")
UINT = struct.Struct(">Q")
FLOAT64 = struct.Struct(">d")

UINT_MAX = (1 << 64) - 1
# Limits keep a hostile peer from making a decoder allocate without bound.
DEFAULT_MAX_FIELD_LEN = 1 << 20
MAX_UPDATE_BYTES = 64 << 20  # 16 Mi float32 parameters; Table 1's models need < 0.25 MB
MAX_RECORD_BYTES = 128 << 20
SIGNATURE_MAX_LEN = 8 << 10  # ML-DSA-44 signs in 2 420 bytes; room for ML-DSA-87 (4 627)
_NEGATIVE_ZERO = FLOAT64.pack(-0.0)


class EncodingError(QbflError, ValueError):
    """Bytes are not the canonical encoding of the expected record."""


class FieldKind(Enum):
    """How one field's value is laid out; each kind has a single canonical byte form."""

    UINT = "uint"  # 8 bytes, big-endian, unsigned
    BOOL = "bool"  # 1 byte, 0x00 or 0x01
    FLOAT64 = "float64"  # 8 bytes IEEE-754 big-endian; NaN and -0.0 rejected
    BYTES = "bytes"  # raw bytes
    STR = "str"  # UTF-8
    UINT_SEQ = "uint_seq"  # count u32 | count × u64
    UINT_SET = "uint_set"  # as UINT_SEQ, strictly increasing (sorted, unique)
    FLOAT32_ARRAY = "float32_array"  # count u32 | count × float32 little-endian
    BYTES_SEQ = "bytes_seq"  # count u32 | count × (length u32 | bytes)


@dataclass(frozen=True)
class Field:
    """One field of a record schema."""

    tag: int
    name: str
    kind: FieldKind
    optional: bool = False
    max_len: int = DEFAULT_MAX_FIELD_LEN


@dataclass(frozen=True)
class RecordSchema:
    """A record type: its type tag and its fields in tag order."""

    type_tag: int
    name: str
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        tags = [f.tag for f in self.fields]
        if tags != sorted(set(tags)) or not all(0 < t < 256 for t in tags):
            raise ValueError(f"{self.name}: field tags must be unique, increasing, in 1..255")
        if not 0 < self.type_tag < 1 << 16:
            raise ValueError(f"{self.name}: type tag must be in 1..65535")


def is_strictly_increasing(values: Iterable[int]) -> bool:
    """True for sorted, duplicate-free ids: the one canonical order of id sets."""
    return all(a < b for a, b in pairwise(values))


def _uint(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT_MAX:
        raise EncodingError(f"{name}: expected an unsigned 64-bit int, got {value!r}")
    return value


def _encode_value(field: Field, value: Any) -> bytes:
    kind, name = field.kind, field.name
    if kind is FieldKind.UINT:
        return UINT.pack(_uint(value, name))
    if kind is FieldKind.BOOL:
        if not isinstance(value, bool):
            raise EncodingError(f"{name}: expected a bool, got {value!r}")
        return b"\x01" if value else b"\x00"
    if kind is FieldKind.FLOAT64:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise EncodingError(f"{name}: expected a non-NaN float, got {value!r}")
        # -0.0 == 0.0 in Python, so both must map to one byte form.
        return FLOAT64.pack(float(value) + 0.0)
    if kind is FieldKind.BYTES:
        if not isinstance(value, bytes):
            raise EncodingError(f"{name}: expected bytes, got {type(value).__name__}")
        return value
    if kind is FieldKind.STR:
        if not isinstance(value, str):
            raise EncodingError(f"{name}: expected str, got {type(value).__name__}")
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates
            raise EncodingError(f"{name}: not encodable as UTF-8") from exc
    if kind in (FieldKind.UINT_SEQ, FieldKind.UINT_SET):
        items = [_uint(v, name) for v in value]
        if kind is FieldKind.UINT_SET and not is_strictly_increasing(items):
            raise EncodingError(f"{name}: ids must be sorted and unique")
        return COUNT.pack(len(items)) + b"".join(UINT.pack(v) for v in items)
    if kind is FieldKind.FLOAT32_ARRAY:
        if not isinstance(value, bytes) or len(value) % 4:
            raise EncodingError(f"{name}: expected float32 bytes (a multiple of 4 long)")
        return COUNT.pack(len(value) // 4) + value
    if kind is FieldKind.BYTES_SEQ:
        parts = []
        for item in value:
            if not isinstance(item, bytes):
                raise EncodingError(f"{name}: expected a sequence of bytes")
            parts.append(COUNT.pack(len(item)) + item)
        return COUNT.pack(len(parts)) + b"".join(parts)
    raise AssertionError(f"unhandled field kind {kind}")  # pragma: no cover


def _count(raw: bytes, name: str) -> tuple[int, bytes]:
    if len(raw) < COUNT.size:
        raise EncodingError(f"{name}: truncated count")
    return COUNT.unpack_from(raw)[0], raw[COUNT.size :]


def _decode_value(field: Field, raw: bytes) -> Any:
    kind, name = field.kind, field.name
    if kind is FieldKind.UINT:
        if len(raw) != UINT.size:
            raise EncodingError(f"{name}: an int takes 8 bytes, got {len(raw)}")
        return UINT.unpack(raw)[0]
    if kind is FieldKind.BOOL:
        if raw not in (b"\x00", b"\x01"):
            raise EncodingError(f"{name}: a bool is one byte 0x00 or 0x01")
        return raw == b"\x01"
    if kind is FieldKind.FLOAT64:
        if len(raw) != FLOAT64.size:
            raise EncodingError(f"{name}: a float takes 8 bytes, got {len(raw)}")
        value = FLOAT64.unpack(raw)[0]
        if math.isnan(value) or raw == _NEGATIVE_ZERO:
            raise EncodingError(f"{name}: NaN and -0.0 are not canonical floats")
        return value
    if kind is FieldKind.BYTES:
        return bytes(raw)
    if kind is FieldKind.STR:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EncodingError(f"{name}: invalid UTF-8") from exc
    if kind in (FieldKind.UINT_SEQ, FieldKind.UINT_SET):
        count, body = _count(raw, name)
        if len(body) != count * UINT.size:
            raise EncodingError(f"{name}: count {count} disagrees with {len(body)} bytes")
        items = tuple(v for (v,) in UINT.iter_unpack(body))
        if kind is FieldKind.UINT_SET and not is_strictly_increasing(items):
            raise EncodingError(f"{name}: ids must be sorted and unique")
        return items
    if kind is FieldKind.FLOAT32_ARRAY:
        count, body = _count(raw, name)
        if len(body) != count * 4:
            raise EncodingError(f"{name}: count {count} disagrees with {len(body)} bytes")
        return bytes(body)
    if kind is FieldKind.BYTES_SEQ:
        count, body = _count(raw, name)
        out = []
        for _ in range(count):
            length, body = _count(body, name)
            if length > len(body):
                raise EncodingError(f"{name}: item length {length} runs past the field")
            out.append(bytes(body[:length]))
            body = body[length:]
        if body:
            raise EncodingError(f"{name}: {len(body)} trailing bytes after the last item")
        return tuple(out)
    raise AssertionError(f"unhandled field kind {kind}")  # pragma: no cover


def encode_record(schema: RecordSchema, values: Mapping[str, Any]) -> bytes:
    """Encode `values` (field name → value; None for an absent optional field) under `schema`."""
    parts: list[bytes] = []
    for field in schema.fields:
        value = values.get(field.name)
        if value is None:
            if not field.optional:
                raise EncodingError(f"{schema.name}.{field.name} is required")
            continue
        raw = _encode_value(field, value)
        if len(raw) > field.max_len:
            raise EncodingError(
                f"{schema.name}.{field.name}: {len(raw)} bytes exceed the limit {field.max_len}"
            )
        parts.append(FIELD_HEADER.pack(field.tag, len(raw)) + raw)
    unknown = set(values) - {f.name for f in schema.fields}
    if unknown:
        raise EncodingError(f"{schema.name}: unknown fields {sorted(unknown)}")
    return HEADER.pack(MAGIC, VERSION, schema.type_tag, len(parts)) + b"".join(parts)


def decode_record(schema: RecordSchema, data: bytes) -> dict[str, Any]:
    """Decode canonical bytes of a `schema` record into field name → value (None if absent)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EncodingError(f"{schema.name}: expected bytes, got {type(data).__name__}")
    view = memoryview(data)
    if len(view) > MAX_RECORD_BYTES:
        raise EncodingError(f"{schema.name}: {len(view)} bytes exceed {MAX_RECORD_BYTES}")
    if len(view) < HEADER.size:
        raise EncodingError(f"{schema.name}: truncated header")
    magic, version, type_tag, nfields = HEADER.unpack_from(view)
    if magic != MAGIC:
        raise EncodingError(f"{schema.name}: bad magic byte {magic:#x}")
    if version != VERSION:
        raise EncodingError(f"{schema.name}: unsupported encoding version {version}")
    if type_tag != schema.type_tag:
        raise EncodingError(
            f"expected a {schema.name} (type {schema.type_tag}), got type {type_tag}"
        )
    by_tag = {f.tag: f for f in schema.fields}
    values: dict[str, Any] = {f.name: None for f in schema.fields}
    pos, last_tag = HEADER.size, 0
    for _ in range(nfields):
        if len(view) - pos < FIELD_HEADER.size:
            raise EncodingError(f"{schema.name}: truncated field header")
        tag, length = FIELD_HEADER.unpack_from(view, pos)
        pos += FIELD_HEADER.size
        field = by_tag.get(tag)
        if field is None:
            raise EncodingError(f"{schema.name}: unknown field tag {tag}")
        if tag <= last_tag:
            raise EncodingError(f"{schema.name}: field tags out of order at {field.name}")
        if length > field.max_len:
            raise EncodingError(f"{schema.name}.{field.name}: length {length} over the limit")
        if length > len(view) - pos:
            raise EncodingError(f"{schema.name}.{field.name}: length runs past the end")
        values[field.name] = _decode_value(field, bytes(view[pos : pos + length]))
        pos += length
        last_tag = tag
    if pos != len(view):
        raise EncodingError(f"{schema.name}: {len(view) - pos} trailing bytes")
    missing = [f.name for f in schema.fields if not f.optional and values[f.name] is None]
    if missing:
        raise EncodingError(f"{schema.name}: missing required fields {missing}")
    return values


class CanonicalRecord:
    """Mixin: encode()/decode() for a frozen dataclass whose fields map 1:1 onto its SCHEMA."""

    SCHEMA: ClassVar[RecordSchema]

    def encode(self) -> bytes:
        return encode_record(self.SCHEMA, self._values())

    def _values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.SCHEMA.fields}

    @classmethod
    def decode(cls, data: bytes) -> Any:
        return cls(**decode_record(cls.SCHEMA, data))


def record_type(data: bytes) -> int:
    """The type tag of an encoded record, read from its header (e.g. genesis vs block)."""
    if len(data) < HEADER.size or data[0] != MAGIC:
        raise EncodingError("not a QBFL record")
    return int(HEADER.unpack_from(data)[2])


def uint_tuple(values: Sequence[int]) -> tuple[int, ...]:
    """Normalise a sequence of ids to the tuple form decoded records carry."""
    return tuple(int(v) for v in values)
