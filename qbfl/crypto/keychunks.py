"""One endpoint's QKD key with one peer, cut into QDS-sized chunks that are used at most once.

Two processes share a pair's key only as the output of their own BB84 sessions. A QDS operation
(App. A.1) takes X ∥ Y (3n bits) for Bob from the pair (signer, Bob) and for Charlie from
(signer, Charlie); since no dealer hands them out any more, every operation names the chunks it
uses (a `ChunkRef`), and each verifier needs a commitment to the other verifier's chunk to prove
wrong key bits (docs/qba.md, "Key commitments"). Both come from here:

- a session's key is cut into chunks of CHUNK_BITS; chunk i of a pair is committed to as
  blake3(domain ‖ pair ‖ epochs ‖ i ‖ bits)[:16] and the session's commitments are hashed into a
  Merkle root;
- both endpoints sign that root at the end of the session (`KeyReceipt`), each only after
  computing it from its own copy of the key, so a receipt carrying both signatures proves what
  both endpoints hold — a third member can check a revealed chunk against it without ever
  seeing the key;
- an endpoint reveals a chunk at most once (`reveal`), and a signer allocates each chunk once
  (`allocate`): a one-time key is used once, whatever peers ask for.

An `epoch` (random per process start) names each endpoint's key store: after a restart the old
chunks are gone on one side, so receipts and references carry both epochs and anything from
another epoch is unknown here.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import blake3

from qbfl.errors import InvalidSignature, KeyPoolExhausted, QbflError
from qbfl.ledger.encoding import CanonicalRecord, Field, FieldKind, RecordSchema
from qbfl.ledger.signer import Signer, verify_signature

QDS_N = 128
CHUNK_BITS = 3 * QDS_N  # X (n bits) ∥ Y (2n bits) of one verifier in one QDS operation
CHUNK_BYTES = CHUNK_BITS // 8
RECEIPT_CONTEXT = b"qbfl/qkd-receipt/v1"
_LEAF = b"qbfl/qkd-chunk/v1"
_NODE = b"qbfl/qkd-merkle/v1"
MAX_CHUNKS_PER_SESSION = 1 << 16
MAX_PROOF_DEPTH = 17


class ChunkUnavailable(KeyPoolExhausted):
    """A referenced chunk is unknown here, from another epoch, or already revealed/allocated."""


class ChunkProofInvalid(QbflError):
    """A chunk reference does not prove its commitment (bad receipt signatures or Merkle path)."""


def chunk_commitment(
    pair: tuple[int, int], epochs: tuple[bytes, bytes], index: int, bits: int
) -> bytes:
    """What both endpoints commit to for chunk `index` of `pair` (hides the bits computationally)."""
    data = (
        _LEAF
        + pair[0].to_bytes(8, "big")
        + pair[1].to_bytes(8, "big")
        + epochs[0]
        + epochs[1]
        + index.to_bytes(8, "big")
        + bits.to_bytes(CHUNK_BYTES, "little")
    )
    return blake3.blake3(data).digest(16)


def _node(left: bytes, right: bytes) -> bytes:
    return blake3.blake3(_NODE + left + right).digest(32)


def merkle_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """All levels of the tree, leaves first; an odd node is paired with itself."""
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    levels = [[blake3.blake3(leaf).digest(32) for leaf in leaves]]
    while len(levels[-1]) > 1:
        level = levels[-1]
        levels.append(
            [
                _node(level[i], level[i + 1 if i + 1 < len(level) else i])
                for i in range(0, len(level), 2)
            ]
        )
    return levels


def merkle_path(levels: list[list[bytes]], index: int) -> tuple[bytes, ...]:
    path = []
    for level in levels[:-1]:
        sibling = index ^ 1
        path.append(level[sibling if sibling < len(level) else index])
        index //= 2
    return tuple(path)


def merkle_check(leaf: bytes, index: int, path: Sequence[bytes], root: bytes, count: int) -> bool:
    if not 0 <= index < count or len(path) > MAX_PROOF_DEPTH:
        return False
    node = blake3.blake3(leaf).digest(32)
    width = count
    for sibling in path:
        if len(sibling) != 32:
            return False
        node = _node(node, sibling) if index % 2 == 0 else _node(sibling, node)
        index //= 2
        width = (width + 1) // 2
    return width == 1 and node == root


@dataclass(frozen=True)
class KeyReceipt(CanonicalRecord):
    """Both endpoints' signatures on the commitments of one QKD session's chunks."""

    low: int
    high: int
    epoch_low: bytes
    epoch_high: bytes
    session: int
    first: int  # index of the session's first chunk in the pair's chunk sequence
    count: int
    root: bytes  # Merkle root of the chunk commitments
    transcript: bytes  # hash of the session's frames as both endpoints saw them
    sig_low: bytes | None = None
    sig_high: bytes | None = None

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        34,
        "KeyReceipt",
        (
            Field(1, "low", FieldKind.UINT),
            Field(2, "high", FieldKind.UINT),
            Field(3, "epoch_low", FieldKind.BYTES, max_len=16),
            Field(4, "epoch_high", FieldKind.BYTES, max_len=16),
            Field(5, "session", FieldKind.UINT),
            Field(6, "first", FieldKind.UINT),
            Field(7, "count", FieldKind.UINT),
            Field(8, "root", FieldKind.BYTES, max_len=32),
            Field(9, "transcript", FieldKind.BYTES, max_len=32),
            Field(10, "sig_low", FieldKind.BYTES, optional=True, max_len=8 << 10),
            Field(11, "sig_high", FieldKind.BYTES, optional=True, max_len=8 << 10),
        ),
    )

    @property
    def pair(self) -> tuple[int, int]:
        return (self.low, self.high)

    @property
    def epochs(self) -> tuple[bytes, bytes]:
        return (self.epoch_low, self.epoch_high)

    def payload(self) -> bytes:
        return dataclasses.replace(self, sig_low=None, sig_high=None).encode()

    def sign(self, key: Signer, me: int) -> KeyReceipt:
        signature = key.sign(self.payload(), context=RECEIPT_CONTEXT)
        if me == self.low:
            return dataclasses.replace(self, sig_low=signature)
        if me == self.high:
            return dataclasses.replace(self, sig_high=signature)
        raise ValueError(f"node {me} is not an endpoint of pair {self.pair}")

    def verify(self, public_keys: Mapping[int, bytes]) -> None:
        """Raise unless both endpoints (roster keys) signed this receipt."""
        if not 0 < self.count <= MAX_CHUNKS_PER_SESSION or self.low >= self.high:
            raise ChunkProofInvalid(f"receipt of pair {self.pair} is malformed")
        for node, sig in ((self.low, self.sig_low), (self.high, self.sig_high)):
            key = public_keys.get(node)
            if key is None or sig is None:
                raise ChunkProofInvalid(
                    f"receipt of pair {self.pair} lacks node {node}'s signature"
                )
            try:
                verify_signature(key, self.payload(), sig, context=RECEIPT_CONTEXT)
            except InvalidSignature as exc:
                raise ChunkProofInvalid(f"receipt of pair {self.pair}: {exc}") from exc


@dataclass(frozen=True)
class ChunkRef(CanonicalRecord):
    """Which chunk of which pair an operation uses, with the proof of its commitment."""

    receipt: bytes  # the session's KeyReceipt, canonical bytes
    index: int  # position in the pair's chunk sequence
    commitment: bytes
    path: tuple[bytes, ...]

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        35,
        "ChunkRef",
        (
            Field(1, "receipt", FieldKind.BYTES, max_len=16 << 10),
            Field(2, "index", FieldKind.UINT),
            Field(3, "commitment", FieldKind.BYTES, max_len=16),
            Field(
                4,
                "path",
                FieldKind.BYTES_SEQ,
                max_len=4 + MAX_PROOF_DEPTH * 36,
                max_count=MAX_PROOF_DEPTH,
            ),
        ),
    )

    def _values(self) -> dict[str, object]:
        return {**super()._values(), "path": list(self.path)}


class ReceiptCache:
    """Receipts whose two signatures were already checked (by canonical bytes), bounded."""

    def __init__(self, public_keys: Mapping[int, bytes], capacity: int = 4096) -> None:
        self._keys = public_keys
        self._seen: dict[bytes, KeyReceipt] = {}
        self._capacity = capacity
        self._lock = threading.Lock()

    def verified(self, raw: bytes) -> KeyReceipt:
        with self._lock:
            held = self._seen.get(raw)
        if held is not None:
            return held
        receipt = KeyReceipt.decode(raw)
        receipt.verify(self._keys)
        with self._lock:
            if len(self._seen) >= self._capacity:
                self._seen.pop(next(iter(self._seen)))
            self._seen[raw] = receipt
        return receipt

    def commitment_of(self, ref: ChunkRef) -> tuple[KeyReceipt, bytes]:
        """The receipt and the proven commitment of `ref` (ChunkProofInvalid if it proves nothing)."""
        receipt = self.verified(ref.receipt)
        local = ref.index - receipt.first
        if not 0 <= local < receipt.count or len(ref.commitment) != 16:
            raise ChunkProofInvalid(f"chunk {ref.index} is outside its receipt")
        if not merkle_check(ref.commitment, local, ref.path, receipt.root, receipt.count):
            raise ChunkProofInvalid(f"chunk {ref.index}: the Merkle path does not reach the root")
        return receipt, ref.commitment


@dataclass
class _Session:
    receipt: KeyReceipt
    levels: list[list[bytes]]
    confirmed: bool  # the peer holds these chunks too: this endpoint may sign with them


class PairKeyStore:
    """This endpoint's chunks shared with one peer in one pair of epochs (thread-safe)."""

    def __init__(self, me: int, peer: int, my_epoch: bytes, peer_epoch: bytes) -> None:
        self.me, self.peer = me, peer
        self.pair = (min(me, peer), max(me, peer))
        self.epochs = (my_epoch, peer_epoch) if me < peer else (peer_epoch, my_epoch)
        self._chunks: dict[int, int] = {}  # index → bits, fresh only
        self._sessions: list[_Session] = []
        self._next = 0  # next chunk index (both endpoints count the same way)
        self._cursor = 0  # next index this endpoint may allocate as signer
        self._lock = threading.Lock()
        self.produced = 0
        self.used = 0
        self.sessions = 0

    @property
    def next_index(self) -> int:
        return self._next

    def cut(
        self, session: int, key_bits: bytes, n_bits: int, *, first: int, transcript: bytes
    ) -> tuple[KeyReceipt, list[int]]:
        """The unsigned receipt and chunks of a finished session's key (not stored yet).

        `first` is where both endpoints agreed the session's chunks start: never below an index
        this store already used, so no index ever names two different chunks in one epoch pair.
        """
        if first < self._next:
            raise KeyPoolExhausted(f"session {session} of {self.pair} would reuse chunk indices")
        count = min(n_bits // CHUNK_BITS, MAX_CHUNKS_PER_SESSION)
        if count == 0:
            raise KeyPoolExhausted(f"session {session} of pair {self.pair} made under one chunk")
        value = int.from_bytes(key_bits, "big")  # the packed key, MSB first
        total = len(key_bits) * 8
        chunks = [
            (value >> (total - (i + 1) * CHUNK_BITS)) & ((1 << CHUNK_BITS) - 1)
            for i in range(count)
        ]
        leaves = [
            chunk_commitment(self.pair, self.epochs, first + i, c) for i, c in enumerate(chunks)
        ]
        root = merkle_levels(leaves)[-1][0]
        receipt = KeyReceipt(
            self.pair[0], self.pair[1], *self.epochs, session, first, count, root, transcript
        )
        return receipt, chunks

    def add(self, receipt: KeyReceipt, chunks: list[int], *, confirmed: bool) -> None:
        """Keep a session's chunks once both endpoints signed its receipt. `confirmed`: the peer
        is known to hold them too (else `confirm` once it says so); only then may this endpoint
        sign with them, so it never names a chunk its peer cannot find."""
        with self._lock:
            if receipt.first < self._next or receipt.count != len(chunks):
                raise KeyPoolExhausted(f"session {receipt.session} of {self.pair} is out of order")
            leaves = [
                chunk_commitment(self.pair, self.epochs, receipt.first + i, c)
                for i, c in enumerate(chunks)
            ]
            self._sessions.append(_Session(receipt, merkle_levels(leaves), confirmed))
            for i, c in enumerate(chunks):
                self._chunks[receipt.first + i] = c
            self._next = receipt.first + len(chunks)
            self.produced += len(chunks)
            self.sessions += 1

    def confirm(self, session: int) -> None:
        with self._lock:
            for s in self._sessions:
                if s.receipt.session == session:
                    s.confirmed = True

    def _signer_parity(self, node: int) -> int:
        """Chunks a signer may use: the low endpoint the even ones, the high endpoint the odd
        ones. Both endpoints sign with the pair's key (each as leader of its own rounds); with
        disjoint halves no chunk can serve two operations, even one the peer never heard of."""
        return 0 if node == self.pair[0] else 1

    def _signable(self, index: int) -> bool:
        for s in self._sessions:
            r = s.receipt
            if r.first <= index < r.first + r.count:
                return s.confirmed
        return False

    def _proof(self, index: int) -> ChunkRef:
        for s in self._sessions:
            r = s.receipt
            if r.first <= index < r.first + r.count:
                commitment = chunk_commitment(self.pair, self.epochs, index, self._chunks[index])
                return ChunkRef(
                    r.encode(), index, commitment, merkle_path(s.levels, index - r.first)
                )
        raise ChunkUnavailable(f"chunk {index} of pair {self.pair} is not held here")

    @property
    def stock(self) -> int:
        """Fresh chunks this endpoint may still sign with (its half, confirmed sessions)."""
        with self._lock:
            mine = self._signer_parity(self.me)
            return sum(1 for i in self._chunks if i % 2 == mine and self._signable(i))

    def allocate(self) -> tuple[int, ChunkRef]:
        """As signer: the next fresh chunk of this endpoint's half (its bits, consumed) and the
        reference naming it."""
        with self._lock:
            mine = self._signer_parity(self.me)
            candidates = sorted(i for i in self._chunks if i % 2 == mine and self._signable(i))
            if not candidates:
                raise KeyPoolExhausted(
                    f"no QKD key left with node {self.peer} ({self.used} chunks used, "
                    f"{self.produced} produced): the link is refilling or down"
                )
            index = candidates[0]
            ref = self._proof(index)
            bits = self._chunks.pop(index)
            self.used += 1
            return bits, ref

    def reveal(self, index: int) -> tuple[int, ChunkRef]:
        """As Bob or Charlie: the chunk's bits, once; ChunkUnavailable if unknown, used, or not
        in the peer's half (the peer is the signer whenever this endpoint reveals)."""
        with self._lock:
            if index % 2 != self._signer_parity(self.peer) or index not in self._chunks:
                raise ChunkUnavailable(
                    f"chunk {index} of pair {self.pair} is unknown here or was already used"
                )
            ref = self._proof(index)
            bits = self._chunks.pop(index)
            self.used += 1
            return bits, ref

    def prune(self) -> None:
        """Forget sessions whose chunks are all used (their receipts are no longer needed)."""
        with self._lock:
            self._sessions = [
                s
                for s in self._sessions
                if any(
                    s.receipt.first <= i < s.receipt.first + s.receipt.count for i in self._chunks
                )
            ]


def split_chunk(bits: int, n: int = QDS_N) -> tuple[int, int]:
    """A chunk as (X, Y): the low n bits and the next 2n bits, as deal_triple_keys splits a draw."""
    return bits & ((1 << n) - 1), bits >> n
