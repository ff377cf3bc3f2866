"""Property and rejection tests for the canonical record encoding."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbfl.ledger.encoding import (
    EncodingError,
    Field,
    FieldKind,
    RecordSchema,
    decode_record,
    encode_record,
    record_type,
)

SCHEMA = RecordSchema(
    100,
    "Sample",
    (
        Field(1, "n", FieldKind.UINT),
        Field(2, "flag", FieldKind.BOOL),
        Field(3, "x", FieldKind.FLOAT64),
        Field(4, "blob", FieldKind.BYTES, max_len=64),
        Field(5, "name", FieldKind.STR, optional=True),
        Field(6, "seq", FieldKind.UINT_SEQ),
        Field(7, "ids", FieldKind.UINT_SET),
        Field(8, "arr", FieldKind.FLOAT32_ARRAY),
        Field(9, "parts", FieldKind.BYTES_SEQ),
    ),
)

u64 = st.integers(0, 2**64 - 1)
values = st.fixed_dictionaries(
    {
        "n": u64,
        "flag": st.booleans(),
        "x": st.floats(allow_nan=False).map(lambda v: v + 0.0),
        "blob": st.binary(max_size=64),
        "name": st.none() | st.text(max_size=20),
        "seq": st.lists(u64, max_size=8).map(tuple),
        "ids": st.sets(u64, max_size=8).map(lambda s: tuple(sorted(s))),
        "arr": st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4]),
        "parts": st.lists(st.binary(max_size=10), max_size=5).map(tuple),
    }
)


@settings(max_examples=100, deadline=None)
@given(values)
def test_decode_inverts_encode(v: dict) -> None:
    assert decode_record(SCHEMA, encode_record(SCHEMA, v)) == v


@settings(max_examples=100, deadline=None)
@given(values, values)
def test_encode_is_injective(a: dict, b: dict) -> None:
    assert (encode_record(SCHEMA, a) == encode_record(SCHEMA, b)) == (a == b)


@settings(max_examples=100, deadline=None)
@given(values, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_rejected(v: dict, extra: bytes) -> None:
    with pytest.raises(EncodingError, match="trailing"):
        decode_record(SCHEMA, encode_record(SCHEMA, v) + extra)


@settings(max_examples=100, deadline=None)
@given(values, st.data())
def test_every_truncation_rejected(v: dict, data: st.DataObject) -> None:
    raw = encode_record(SCHEMA, v)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(EncodingError):
        decode_record(SCHEMA, raw[:cut])


def _sample() -> dict:
    return {
        "n": 7,
        "flag": True,
        "x": 1.5,
        "blob": b"ab",
        "name": "q",
        "seq": (3, 1),
        "ids": (1, 3),
        "arr": struct.pack("<2f", 1.0, 2.0),
        "parts": (b"x",),
    }


def _fields(raw: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 5
    while pos < len(raw):
        tag, length = struct.unpack_from(">BI", raw, pos)
        out.append((tag, raw[pos + 5 : pos + 5 + length]))
        pos += 5 + length
    return out


def _assemble(fields: list[tuple[int, bytes]], type_tag: int = 100) -> bytes:
    head = struct.pack(">BBHB", 0x51, 1, type_tag, len(fields))
    return head + b"".join(struct.pack(">BI", t, len(b)) + b for t, b in fields)


def test_reassembly_matches_encoder() -> None:
    raw = encode_record(SCHEMA, _sample())
    assert _assemble(_fields(raw)) == raw
    assert record_type(raw) == 100


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: [*f, (10, b"")], "unknown field tag"),
        (lambda f: [f[1], f[0], *f[2:]], "out of order"),
        (lambda f: [f[0], f[0], *f[1:]], "out of order"),
        (lambda f: f[1:], "missing required"),
        (
            lambda f: [
                (6, struct.pack(">I", 2) + struct.pack(">Q", 1)) if t == 6 else (t, b) for t, b in f
            ],
            "disagrees",
        ),
        (
            lambda f: [
                (7, struct.pack(">I", 2) + struct.pack(">2Q", 3, 1)) if t == 7 else (t, b)
                for t, b in f
            ],
            "sorted",
        ),
        (
            lambda f: [
                (7, struct.pack(">I", 2) + struct.pack(">2Q", 3, 3)) if t == 7 else (t, b)
                for t, b in f
            ],
            "sorted",
        ),
        (lambda f: [(2, b"\x02") if t == 2 else (t, b) for t, b in f], "bool"),
        (
            lambda f: [(3, struct.pack(">d", float("nan"))) if t == 3 else (t, b) for t, b in f],
            "NaN",
        ),
        (lambda f: [(3, struct.pack(">d", -0.0)) if t == 3 else (t, b) for t, b in f], "-0.0"),
        (lambda f: [(1, b"\x00" * 7) if t == 1 else (t, b) for t, b in f], "8 bytes"),
        (lambda f: [(4, b"z" * 65) if t == 4 else (t, b) for t, b in f], "over the limit"),
        (lambda f: [(5, b"\xff") if t == 5 else (t, b) for t, b in f], "UTF-8"),
        (
            lambda f: [(8, struct.pack(">I", 3) + b"\x00" * 8) if t == 8 else (t, b) for t, b in f],
            "disagrees",
        ),
        (
            lambda f: [
                (9, struct.pack(">I", 1) + struct.pack(">I", 9) + b"x") if t == 9 else (t, b)
                for t, b in f
            ],
            "runs past",
        ),
    ],
)
def test_non_canonical_forms_rejected(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    fields = _fields(encode_record(SCHEMA, _sample()))
    with pytest.raises(EncodingError, match=message):
        decode_record(SCHEMA, _assemble(mutate(fields)))


def test_header_checks() -> None:
    raw = encode_record(SCHEMA, _sample())
    with pytest.raises(EncodingError, match="magic"):
        decode_record(SCHEMA, b"\x50" + raw[1:])
    with pytest.raises(EncodingError, match="version"):
        decode_record(SCHEMA, raw[:1] + b"\x02" + raw[2:])
    with pytest.raises(EncodingError, match="expected a Sample"):
        decode_record(SCHEMA, raw[:2] + struct.pack(">H", 101) + raw[4:])
    with pytest.raises(EncodingError, match="length runs past"):
        decode_record(SCHEMA, raw[:5] + struct.pack(">BI", 1, 1_000) + raw[10:])


def test_encoder_rejects_bad_values() -> None:
    for key, bad in [
        ("n", -1),
        ("n", 2**64),
        ("n", True),
        ("ids", (2, 1)),
        ("x", float("nan")),
        ("arr", b"abc"),
        ("blob", "text"),
    ]:
        with pytest.raises(EncodingError):
            encode_record(SCHEMA, {**_sample(), key: bad})
    with pytest.raises(EncodingError, match="required"):
        encode_record(SCHEMA, {**_sample(), "n": None})
    with pytest.raises(EncodingError, match="unknown"):
        encode_record(SCHEMA, {**_sample(), "zzz": 1})


def test_negative_zero_encodes_as_zero() -> None:
    a = encode_record(SCHEMA, {**_sample(), "x": -0.0})
    assert a == encode_record(SCHEMA, {**_sample(), "x": 0.0})


def test_schema_rejects_bad_tags() -> None:
    with pytest.raises(ValueError):
        RecordSchema(1, "Bad", (Field(2, "a", FieldKind.UINT), Field(1, "b", FieldKind.UINT)))
