"""Seeded mutation fuzzing of every canonical decoder a peer can reach (issue 10).

Each decoder in DECODERS gets valid encodings, mutated the ways a hostile peer would: bit flips,
truncation, appended bytes, inflated field lengths and list counts, duplicated and dropped fields,
nested records mutated in place, nested records swapped for other record types, and lists blown up
to ~4 MB. Asserted for every input:

- only project errors escape (QbflError: EncodingError and friends), never IndexError,
  struct.error, a bare ValueError/TypeError, OverflowError, MemoryError or RecursionError;
- time: a ~4 MB hostile input decodes or fails in under FAST_S (linear decoding);
- memory: the tracemalloc peak of one decode stays under `memory_bound(len(input))` =
  4 × input + 8 MiB (one copy of each field's bytes plus Python objects for at most MAX_IDS
  items), and decoding 55 distinct inputs and dropping them retains under RETAINED_BOUND.

DECODERS is the one registry: add a (name, decode, samples) entry for every new record a peer
can send, and every test here covers it. The default run takes ~15 s; `-m slow` runs 20× more.
"""

from __future__ import annotations

import gc
import random
import struct
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from qbfl.consensus.envelope import SignedPayload
from qbfl.consensus.inmemory import synthetic_genesis
from qbfl.consensus.qba import Accepted, Forwarded, KeysRevealed, SignedValue, TripleId
from qbfl.consensus.qbawire import QBA_SCHEMAS
from qbfl.consensus.wire import Proposal, QbaEnvelope, SyncRequest, SyncResponse, VoteMessage
from qbfl.errors import QbflError
from qbfl.ledger.block import Block, CommitteeVote, ConsensusMessage, UpdateSubmission, make_block
from qbfl.ledger.encoding import (
    COUNT,
    FIELD_HEADER,
    HEADER,
    LIST_KINDS,
    MAGIC,
    UINT,
    Field,
    FieldKind,
    RecordSchema,
)
from qbfl.ledger.genesis import DpSettings, GenesisBlock, RosterEntry, TaskSpec
from qbfl.ledger.registration import Registration

FAST_S = 1.0  # per 4 MB hostile input; the quadratic decoder took ~90 s
HOSTILE_BYTES = 4_000_000
RETAINED_BOUND = 512 << 10  # bytes kept after decoding (and dropping) 55 distinct inputs


def memory_bound(input_len: int) -> int:
    """The most a single decode may hold at its peak (tracemalloc), stated in the module doc."""
    return 4 * input_len + (8 << 20)


@dataclass(frozen=True)
class DecoderCase:
    """One decoder a peer can reach, and valid encodings to start mutating from."""

    name: str
    decode: Callable[[bytes], object]
    samples: Callable[[random.Random], list[bytes]]


# --- valid samples ---------------------------------------------------------------------------


def _hash(rng: random.Random) -> bytes:
    return rng.randbytes(32)


def _floats(rng: random.Random, n: int) -> bytes:
    return np.asarray([rng.uniform(-1, 1) for _ in range(n)], dtype="<f4").tobytes()


def _ids(rng: random.Random, n: int) -> tuple[int, ...]:
    return tuple(sorted(rng.sample(range(1000), n)))


def _message(rng: random.Random) -> ConsensusMessage:
    return ConsensusMessage(rng.randrange(1, 99), rng.randrange(4), _ids(rng, 4), _hash(rng))


def _vote(rng: random.Random, member: int | None = None) -> CommitteeVote:
    return CommitteeVote(rng.randrange(50) if member is None else member, rng.randbytes(64))


def _block(rng: random.Random) -> Block:
    committee = tuple(rng.sample(range(50), 5))
    return make_block(
        height=rng.randrange(1, 99),
        round=rng.randrange(1, 99),
        view=rng.randrange(3),
        prev_hash=_hash(rng),
        committee=committee,
        selected=_ids(rng, 3),
        update=_floats(rng, 6),
        votes=tuple(_vote(rng, m) for m in committee[:3]),
    )


def _triple(rng: random.Random) -> TripleId:
    # well formed (encoders refuse anything else): the leader first, Bob and Charlie off the path
    ids = rng.sample(range(1, 9), 4)
    path = (0, *ids[: rng.randrange(0, 3)])
    return TripleId(path, ids[-2], ids[-1])


def _qba_payloads(rng: random.Random) -> list[object]:
    t, doc = _triple(rng), rng.randbytes(40)
    big = rng.getrandbits(256)
    return [
        SignedValue(t, t.signer, t.bob, doc, big),
        Forwarded(t, t.bob, t.charlie, doc, big, rng.getrandbits(128), rng.getrandbits(256)),
        KeysRevealed(t, t.charlie, t.bob, rng.getrandbits(128), rng.getrandbits(256)),
        Accepted(t, t.bob, t.charlie),
    ]


_GENESIS, _ = synthetic_genesis(
    5, 6, seed=3, committee_size=3, dp=DpSettings(3.0, 1e-5, 1.0), round_timeout_s=30.0
)


def _genesis_samples(rng: random.Random) -> list[bytes]:
    return [_GENESIS.encode()]


DECODERS: tuple[DecoderCase, ...] = (
    DecoderCase(
        "UpdateSubmission",
        UpdateSubmission.decode,
        lambda rng: [
            UpdateSubmission(3, 1, _floats(rng, 8), _hash(rng)).encode(),
            UpdateSubmission(
                3, 1, _floats(rng, 8), _hash(rng), view=2, signature=b"s" * 64
            ).encode(),
        ],
    ),
    DecoderCase("ConsensusMessage", ConsensusMessage.decode, lambda r: [_message(r).encode()]),
    DecoderCase("CommitteeVote", CommitteeVote.decode, lambda r: [_vote(r).encode()]),
    DecoderCase("Block", Block.decode, lambda r: [_block(r).encode()]),
    DecoderCase("TaskSpec", TaskSpec.decode, lambda r: [_GENESIS.task.encode()]),
    DecoderCase("DpSettings", DpSettings.decode, lambda r: [DpSettings(2.0, 1e-6, 0.5).encode()]),
    DecoderCase(
        "RosterEntry",
        RosterEntry.decode,
        lambda r: [RosterEntry(7, r.randbytes(40), "h:1").encode()],
    ),
    DecoderCase("GenesisBlock", GenesisBlock.decode, _genesis_samples),
    DecoderCase(
        "Proposal",
        Proposal.decode,
        lambda r: [Proposal(3, 0, _ids(r, 5), _floats(r, 6), _message(r)).encode()],
    ),
    DecoderCase(
        "QbaEnvelope",
        QbaEnvelope.decode,
        lambda r: [QbaEnvelope(3, 1, p).encode() for p in _qba_payloads(r)],
    ),
    DecoderCase(
        "VoteMessage",
        VoteMessage.decode,
        lambda r: [VoteMessage(3, 1, _message(r), _vote(r)).encode()],
    ),
    DecoderCase("SyncRequest", SyncRequest.decode, lambda r: [SyncRequest(5).encode()]),
    DecoderCase(
        "SyncResponse",
        SyncResponse.decode,
        lambda r: [SyncResponse((_block(r), _block(r))).encode(), SyncResponse(()).encode()],
    ),
    # the network's own records: what a node's gRPC edge and the publisher decode
    DecoderCase(
        "Registration",
        Registration.decode,
        lambda r: [
            Registration(4, r.randbytes(40), "127.0.0.1:51004", _hash(r), r.randbytes(64)).encode()
        ],
    ),
    DecoderCase(
        "SignedPayload",
        SignedPayload.decode,
        lambda r: [SignedPayload(_hash(r), "qba", 3, 4, r.randbytes(50)).encode()],
    ),
)

# Schemas by record type, to find the list fields and nested records inside any sample.
_RECORDS: list[type] = [
    UpdateSubmission,
    ConsensusMessage,
    CommitteeVote,
    Block,
    TaskSpec,
    DpSettings,
    RosterEntry,
    GenesisBlock,
    Proposal,
    QbaEnvelope,
    VoteMessage,
    SyncRequest,
    SyncResponse,
    Registration,
    SignedPayload,
]
SCHEMAS: dict[int, RecordSchema] = {
    **{cls.SCHEMA.type_tag: cls.SCHEMA for cls in _RECORDS},  # type: ignore[attr-defined]
    **{schema.type_tag: schema for schema in QBA_SCHEMAS.values()},
}


# --- a lenient view of record bytes, to mutate structure ----------------------------------------


@dataclass
class RawRecord:
    type_tag: int
    fields: list[tuple[int, bytes]]

    def encode(self, nfields: int | None = None) -> bytes:
        count = len(self.fields) if nfields is None else nfields
        body = b"".join(FIELD_HEADER.pack(t, len(v)) + v for t, v in self.fields)
        return HEADER.pack(MAGIC, 1, self.type_tag, count & 0xFF) + body


def parse(data: bytes) -> RawRecord | None:
    """The record's fields, or None when the bytes are not a well-formed record."""
    if len(data) < HEADER.size or data[0] != MAGIC:
        return None
    _, _, type_tag, nfields = HEADER.unpack_from(data)
    fields, pos = [], HEADER.size
    for _ in range(nfields):
        if len(data) - pos < FIELD_HEADER.size:
            return None
        tag, length = FIELD_HEADER.unpack_from(data, pos)
        pos += FIELD_HEADER.size
        if length > len(data) - pos:
            return None
        fields.append((tag, data[pos : pos + length]))
        pos += length
    return RawRecord(type_tag, fields) if pos == len(data) else None


def _kind(type_tag: int, tag: int) -> FieldKind | None:
    field = _field(type_tag, tag)
    return field.kind if field else None


def _bytes_seq_items(value: bytes) -> list[bytes] | None:
    if len(value) < 4:
        return None
    (count,) = COUNT.unpack_from(value)
    items, pos = [], 4
    for _ in range(count):
        if len(value) - pos < 4:
            return None
        (length,) = COUNT.unpack_from(value, pos)
        items.append(value[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return items if pos == len(value) else None


def _bytes_seq(items: Sequence[bytes]) -> bytes:
    return COUNT.pack(len(items)) + b"".join(COUNT.pack(len(i)) + i for i in items)


def huge_lists(field: Field, rng: random.Random) -> list[bytes]:
    """List values a hostile peer would send for `field`: ~HOSTILE_BYTES regardless of the
    field's limits (the inputs that were quadratic), and the most the limits allow — count_limit
    items spread over min(max_len, HOSTILE_BYTES) bytes — which the decoder must walk in full."""
    budget = min(field.max_len, HOSTILE_BYTES)
    if field.kind is FieldKind.BYTES_SEQ:
        size = rng.choice([0, 1, 7])
        n = (HOSTILE_BYTES - 4) // (4 + size)
        over = COUNT.pack(n) + (COUNT.pack(size) + b"\x01" * size) * n
        n = min(field.count_limit, (budget - 4) // 4)
        size = (budget - 4) // max(n, 1) - 4
        return [over, COUNT.pack(n) + (COUNT.pack(size) + b"\x01" * size) * n]
    if field.kind is FieldKind.FLOAT32_ARRAY:
        return [
            COUNT.pack(n) + b"\x00\x00\x80\x3f" * n
            for n in ((HOSTILE_BYTES - 4) // 4, min(field.count_limit, (budget - 4) // 4))
        ]
    return [  # sorted, so that a valid id set
        COUNT.pack(n) + np.arange(n, dtype=">u8").tobytes()
        for n in ((HOSTILE_BYTES - 4) // 8, min(field.count_limit, (budget - 4) // 8))
    ]


def _field(type_tag: int, tag: int) -> Field | None:
    schema = SCHEMAS.get(type_tag)
    return next((f for f in schema.fields if f.tag == tag), None) if schema else None


# --- mutations ------------------------------------------------------------------------------------


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 9)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _numbers(rng: random.Random, near: int) -> int:
    return (
        rng.choice([0, 1, near - 1, near + 1, 2 * near + 3, 1 << 16, 1 << 20, 1 << 31, 0xFFFF_FFFF])
        & 0xFFFF_FFFF
    )


def mutate(data: bytes, rng: random.Random, depth: int = 0) -> bytes:
    """One hostile variant of a valid encoding."""
    record = parse(data)
    choice = rng.randrange(12 if record and record.fields else 3)
    if choice == 0:
        return _flip(data, rng)
    if choice == 1:
        return data[: rng.randrange(len(data) + 1)]
    if choice == 2:
        return data + rng.randbytes(rng.randrange(1, 16))
    assert record is not None
    i = rng.randrange(len(record.fields))
    tag, value = record.fields[i]
    kind = _kind(record.type_tag, tag)
    if choice == 3:  # inflate (or shrink) a field's length, leaving the bytes as they are
        out = bytearray(data)
        pos = HEADER.size + sum(FIELD_HEADER.size + len(v) for _, v in record.fields[:i])
        struct.pack_into(">I", out, pos + 1, _numbers(rng, len(value)))
        return bytes(out)
    if choice == 4 and kind in LIST_KINDS and len(value) >= 4:  # inflate a list's count
        (count,) = COUNT.unpack_from(value)
        record.fields[i] = (tag, COUNT.pack(_numbers(rng, count)) + value[4:])
        return record.encode()
    if choice == 5:  # a field twice, or out of order
        record.fields.insert(i + rng.randrange(2), (tag, value))
        return record.encode()
    if choice == 6:  # a field dropped, or the field count lying
        if rng.random() < 0.5:
            del record.fields[i]
            return record.encode()
        return record.encode(nfields=len(record.fields) + rng.choice([-1, 1, 200]))
    if choice == 7 and depth < 3 and parse(value) is not None:  # a nested record, mutated
        record.fields[i] = (tag, mutate(value, rng, depth + 1))
        return record.encode()
    if choice == 8 and kind is FieldKind.BYTES_SEQ:  # an item of a nested list, mutated
        items = _bytes_seq_items(value)
        if items and depth < 3:
            j = rng.randrange(len(items))
            items[j] = mutate(items[j], rng, depth + 1)
            if rng.random() < 0.3:
                items += [items[j]] * rng.randrange(1, 80)  # duplicates; past a count limit
            record.fields[i] = (tag, _bytes_seq(items))
            return record.encode()
    if choice == 9:  # a nested record of another type, or an unknown type, in its place
        other = rng.choice(DECODERS).samples(rng)[0]
        record.fields[i] = (
            tag,
            other if rng.random() < 0.8 else other[:2] + b"\x01\x00" + other[4:],
        )
        return record.encode()
    if choice == 10:  # unknown tag, other type tag or version
        if rng.random() < 0.5:
            record.fields[i] = (rng.choice([0, 13, 99, 255]), value)
            return record.encode()
        out = bytearray(data)
        out[rng.randrange(1, 5)] ^= 1 << rng.randrange(8)
        return bytes(out)
    return _flip(data, rng)


def hostile_inputs(data: bytes, rng: random.Random) -> list[tuple[bytes, bool]]:
    """Every list field of a sample, and of its nested records, replaced by a ~4 MB list (and by
    the largest list its limits allow); each with True when the list is in a nested record."""
    record = parse(data)
    if record is None:
        return []
    out: list[tuple[bytes, bool]] = []

    def replaced(i: int, tag: int, value: bytes) -> bytes:
        copy = RawRecord(record.type_tag, list(record.fields))
        copy.fields[i] = (tag, value)
        return copy.encode()

    for i, (tag, value) in enumerate(record.fields):
        field = _field(record.type_tag, tag)
        if field is not None and field.kind in LIST_KINDS:
            out += [(replaced(i, tag, huge), False) for huge in huge_lists(field, rng)]
        if field is not None and field.kind is FieldKind.BYTES_SEQ:
            items = _bytes_seq_items(value) or []
            for item in items[:1]:
                out += [
                    (replaced(i, tag, _bytes_seq([inner])), True)
                    for inner, _ in hostile_inputs(item, rng)
                ]
        elif parse(value) is not None:
            out += [(replaced(i, tag, inner), True) for inner, _ in hostile_inputs(value, rng)]
    return out


# --- the checks -----------------------------------------------------------------------------------


def _decode_or_project_error(case: DecoderCase, data: bytes) -> None:
    try:
        case.decode(data)
    except QbflError:
        pass
    except Exception as exc:  # any other type is the bug this test exists to find
        raise AssertionError(
            f"{case.name}.decode raised {type(exc).__name__}: {exc}\ninput ({len(data)} bytes): "
            f"{data[:400].hex()}{'…' if len(data) > 400 else ''}"
        ) from exc


def _fuzz(case: DecoderCase, seed: int, rounds: int) -> None:
    rng = random.Random(f"{case.name}/{seed}")
    samples = case.samples(rng)
    for sample in samples:
        case.decode(sample)  # the starting points are valid
    for _ in range(rounds):
        data = rng.choice(samples)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            data = mutate(data, rng)
        _decode_or_project_error(case, data)


@pytest.mark.parametrize("case", DECODERS, ids=lambda c: c.name)
def test_mutations_raise_only_project_errors(case: DecoderCase) -> None:
    _fuzz(case, seed=0, rounds=1500)


@pytest.mark.slow
@pytest.mark.parametrize("case", DECODERS, ids=lambda c: c.name)
def test_many_more_mutations_raise_only_project_errors(case: DecoderCase) -> None:
    for seed in range(1, 11):
        _fuzz(case, seed=seed, rounds=3000)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", DECODERS, ids=lambda c: c.name)
def test_4mb_hostile_lists_fail_fast_in_bounded_memory(case: DecoderCase) -> None:
    rng = random.Random(f"{case.name}/hostile")
    cases = [h for sample in case.samples(rng) for h in hostile_inputs(sample, rng)]
    for data, nested in cases:
        start = time.thread_time()
        _decode_or_project_error(case, data)
        elapsed = time.thread_time() - start
        assert elapsed < FAST_S, f"{case.name}: {len(data)} bytes took {elapsed:.2f} s"
        if nested:  # the inner record's own entry measures its memory at the top level
            continue
        # Measured in a second run: tracemalloc slows allocation-heavy decoding ~15×.
        tracemalloc.start()
        try:
            _decode_or_project_error(case, data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < memory_bound(len(data)), f"{case.name}: peak {peak} for {len(data)} bytes"


def _grow_ids(data: bytes, k: int, n: int) -> bytes:
    """`data` with every id list, nested ones included, replaced by n ids unique to k: what a
    cache keyed on decoded content would have to keep."""
    record = parse(data)
    if record is None:
        return data
    for i, (tag, value) in enumerate(record.fields):
        kind = _kind(record.type_tag, tag)
        if kind in (FieldKind.UINT_SEQ, FieldKind.UINT_SET):
            ids = range(k * n, (k + 1) * n)
            record.fields[i] = (tag, COUNT.pack(n) + b"".join(UINT.pack(v) for v in ids))
        elif kind is FieldKind.BYTES_SEQ:
            items = _bytes_seq_items(value) or []
            record.fields[i] = (tag, _bytes_seq([_grow_ids(item, k, n) for item in items]))
        elif parse(value) is not None:
            record.fields[i] = (tag, _grow_ids(value, k, n))
    return record.encode()


def _distinct_inputs(case: DecoderCase, count: int) -> list[bytes]:
    rng = random.Random(f"{case.name}/distinct")
    return [_grow_ids(rng.choice(case.samples(rng)), k, 500) for k in range(count)]


@pytest.mark.parametrize("case", DECODERS, ids=lambda c: c.name)
def test_decoding_and_dropping_retains_nothing(case: DecoderCase) -> None:
    inputs = _distinct_inputs(case, 60)
    for data in inputs[:5]:  # warm up imports and interned objects
        _decode_or_project_error(case, data)
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for data in inputs[5:]:
            _decode_or_project_error(case, data)
        # Decoded records hold no reference cycles: dropping them frees them without a gc pass
        # (a full collection under tracemalloc costs ~0.5 s in this test session).
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < RETAINED_BOUND, f"{case.name} kept {after - before} bytes"


def test_every_reachable_record_is_in_the_registry() -> None:
    """Every record type with a decoder is fuzzed (QBA payloads through QbaEnvelope)."""
    fuzzed = {c.name for c in DECODERS}
    assert fuzzed == {cls.__name__ for cls in _RECORDS}
    for case in DECODERS:
        for sample in case.samples(random.Random(0)):
            record = parse(sample)
            assert record is not None and record.type_tag in SCHEMAS
    payload_types = {
        parse(parse(s).fields[2][1]).type_tag  # type: ignore[union-attr]
        for s in DECODERS[[c.name for c in DECODERS].index("QbaEnvelope")].samples(random.Random(0))
    }
    assert payload_types == {s.type_tag for s in QBA_SCHEMAS.values()}
