"""The one canonical byte encoding that every QBFL hash and signature covers (never protobuf).

A record is

    magic 0x51 ('Q') | version u8 | type tag u16 BE | field count u8 | fields

and a field is ``tag u8 | length u32 BE | value``. Fields appear in strictly increasing tag
order, optional fields are omitted when absent, and every value kind has exactly one valid
byte form, so equal values always encode to equal bytes and ``decode(encode(x)) == x``.
The decoder rejects trailing bytes, unknown tags, missing required fields, oversize lengths,
list counts over a field's limit and non-canonical forms with `EncodingError`. It runs in time
linear in the input (one offset walks one memoryview; nothing is re-sliced per item) and checks
every count before it allocates, because its input comes from any peer on the network.
docs/ledger.md describes the format byte by byte.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from itertools import pairwise
from typing import Any, ClassVar, TypeVar

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
# Count limits of list fields (Field.max_count). A roster, and so every id list, holds at most
# MAX_IDS node ids; a committee at most MAX_COMMITTEE_SIZE members (the paper's Nc is 5, and
# detectable QBA costs Nc·(Nc−1)·(Nc−2) QDS operations per round, so 1 024 is far beyond use).
MAX_IDS = 100_000
MAX_COMMITTEE_SIZE = 1024
IDS_MAX_LEN = COUNT.size + UINT.size * MAX_IDS  # the byte length of a full id list
_NEGATIVE_ZERO = FLOAT64.pack(-0.0)

_R = TypeVar("_R")


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


# The fewest bytes one item of a list kind takes: a count c needs at least c times this many
# bytes after the count, so a count the field cannot hold is refused before any allocation.
_MIN_ITEM_BYTES = {
    FieldKind.UINT_SEQ: UINT.size,
    FieldKind.UINT_SET: UINT.size,
    FieldKind.FLOAT32_ARRAY: 4,
    FieldKind.BYTES_SEQ: COUNT.size,
}
LIST_KINDS = frozenset(_MIN_ITEM_BYTES)


@dataclass(frozen=True)
class Field:
    """One field of a record schema.

    `max_len` bounds the value's bytes; `max_count` (list kinds only) bounds the number of
    items, checked against the count prefix before anything is allocated. Without `max_count`
    a list is bounded by `max_len` alone (`count_limit`).
    """

    tag: int
    name: str
    kind: FieldKind
    optional: bool = False
    max_len: int = DEFAULT_MAX_FIELD_LEN
    max_count: int | None = None

    def __post_init__(self) -> None:
        if self.max_len < 0:
            raise ValueError(f"{self.name}: max_len must be >= 0")
        if self.max_count is not None and (self.kind not in LIST_KINDS or self.max_count < 0):
            raise ValueError(f"{self.name}: max_count needs a list kind and a count >= 0")

    @property
    def count_limit(self) -> int:
        """The most items this list field accepts: max_count, or what max_len can hold."""
        implied = max(0, (self.max_len - COUNT.size) // _MIN_ITEM_BYTES[self.kind])
        return implied if self.max_count is None else min(self.max_count, implied)


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
        _check_count(field, len(items))
        return COUNT.pack(len(items)) + b"".join(UINT.pack(v) for v in items)
    if kind is FieldKind.FLOAT32_ARRAY:
        if not isinstance(value, bytes) or len(value) % 4:
            raise EncodingError(f"{name}: expected float32 bytes (a multiple of 4 long)")
        _check_count(field, len(value) // 4)
        return COUNT.pack(len(value) // 4) + value
    if kind is FieldKind.BYTES_SEQ:
        parts = []
        for item in value:
            if not isinstance(item, bytes):
                raise EncodingError(f"{name}: expected a sequence of bytes")
            parts.append(COUNT.pack(len(item)) + item)
        _check_count(field, len(parts))
        return COUNT.pack(len(parts)) + b"".join(parts)
    raise AssertionError(f"unhandled field kind {kind}")  # pragma: no cover


def _check_count(field: Field, count: int) -> None:
    # The encoder refuses what every decoder would refuse: an honest node never sends it.
    if count > field.count_limit:
        raise EncodingError(f"{field.name}: {count} items exceed the limit {field.count_limit}")


def _decode_value(field: Field, raw: memoryview) -> Any:
    """One field's value from its bytes; `raw` is a view into the record (copied only here)."""
    kind, name = field.kind, field.name
    if kind is FieldKind.UINT:
        if len(raw) != UINT.size:
            raise EncodingError(f"{name}: an int takes 8 bytes, got {len(raw)}")
        return UINT.unpack(raw)[0]
    if kind is FieldKind.BOOL:
        if bytes(raw) not in (b"\x00", b"\x01"):
            raise EncodingError(f"{name}: a bool is one byte 0x00 or 0x01")
        return raw[0] == 1
    if kind is FieldKind.FLOAT64:
        if len(raw) != FLOAT64.size:
            raise EncodingError(f"{name}: a float takes 8 bytes, got {len(raw)}")
        value = FLOAT64.unpack(raw)[0]
        if math.isnan(value) or bytes(raw) == _NEGATIVE_ZERO:
            raise EncodingError(f"{name}: NaN and -0.0 are not canonical floats")
        return value
    if kind is FieldKind.BYTES:
        return bytes(raw)
    if kind is FieldKind.STR:
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as exc:
            raise EncodingError(f"{name}: invalid UTF-8") from exc
    if kind in LIST_KINDS:
        return _decode_list(field, raw)
    raise AssertionError(f"unhandled field kind {kind}")  # pragma: no cover


def _decode_list(field: Field, raw: memoryview) -> Any:
    """A list field: the count is checked against the field's limit and against the bytes that
    follow it before anything is allocated; then one offset walks the view (linear time)."""
    kind, name = field.kind, field.name
    if len(raw) < COUNT.size:
        raise EncodingError(f"{name}: truncated count")
    (count,) = COUNT.unpack_from(raw)
    if count > field.count_limit:
        raise EncodingError(f"{name}: {count} items exceed the limit {field.count_limit}")
    body = raw[COUNT.size :]
    if kind is FieldKind.BYTES_SEQ:
        return _decode_bytes_seq(name, count, body)
    if len(body) != count * _MIN_ITEM_BYTES[kind]:
        raise EncodingError(f"{name}: count {count} disagrees with {len(body)} bytes")
    if kind is FieldKind.FLOAT32_ARRAY:
        return bytes(body)
    items = tuple(v for (v,) in UINT.iter_unpack(body))
    if kind is FieldKind.UINT_SET and not is_strictly_increasing(items):
        raise EncodingError(f"{name}: ids must be sorted and unique")
    return items


def _decode_bytes_seq(name: str, count: int, body: memoryview) -> tuple[bytes, ...]:
    end = len(body)
    # Each item carries at least its 4-byte length: refuse a count the bytes cannot hold.
    if count * COUNT.size > end:
        raise EncodingError(f"{name}: count {count} needs more than the field's {end} bytes")
    out: list[bytes] = []
    pos = 0
    for _ in range(count):
        if end - pos < COUNT.size:
            raise EncodingError(f"{name}: truncated item length")
        (length,) = COUNT.unpack_from(body, pos)
        pos += COUNT.size
        if length > end - pos:
            raise EncodingError(f"{name}: item length {length} runs past the field")
        out.append(bytes(body[pos : pos + length]))
        pos += length
    if pos != end:
        raise EncodingError(f"{name}: {end - pos} trailing bytes after the last item")
    return tuple(out)


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
        values[field.name] = _decode_value(field, view[pos : pos + length])
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
        return build_record(cls, decode_record(cls.SCHEMA, data))


def build_record(cls: Callable[..., _R], values: Mapping[str, Any]) -> _R:
    """`cls(**values)` for decoded values; a constructor's ValueError or TypeError becomes
    EncodingError. Bytes that decode field by field but break the record's own invariants
    (a DP δ of 2, an infinite learning rate) are still bad bytes from a peer, and a decoder
    must fail with the project's error type, never a bare ValueError."""
    try:
        return cls(**values)
    except EncodingError:
        raise
    except (ValueError, TypeError) as exc:
        raise EncodingError(f"{getattr(cls, '__name__', cls)}: {exc}") from exc


def record_type(data: bytes) -> int:
    """The type tag of an encoded record, read from its header (e.g. genesis vs block)."""
    if len(data) < HEADER.size or data[0] != MAGIC:
        raise EncodingError("not a QBFL record")
    return int(HEADER.unpack_from(data)[2])


def uint_tuple(values: Sequence[int]) -> tuple[int, ...]:
    """Normalise a sequence of ids to the tuple form decoded records carry."""
    return tuple(int(v) for v in values)
