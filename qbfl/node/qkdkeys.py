"""QDS key material between processes: each operation names its QKD chunks, signed by its signer.

In one process a trusted `TripleKeyDealer` hands Alice, Bob and Charlie their shares. Between
processes each node holds only its own pairwise chunks (qbfl.crypto.keychunks), so:

- the signer of (path; Bob b, Charlie c) allocates a fresh chunk of its half with b and one with
  c, and signs `OperationKeys` naming both (with their commitment proofs); the signature is what
  makes a reference transferable evidence;
- Bob reveals the chunk named for him only once, takes the proven commitment of Charlie's chunk as
  the partner commitment, and forwards the signed reference to Charlie, who does the same;
- if the chunk named for Charlie was already used, the signer used it twice (only the signer
  allocates from its half): Charlie answers Bob with both signed references (`ReuseProof`)
  instead of key bits, and Bob abandons the operation without blaming Charlie. Without that, a
  faulty signer could make honest members exclude each other and split their outputs.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from qbfl.consensus.qba import TripleId
from qbfl.crypto.keychunks import (
    ChunkProofInvalid,
    ChunkRef,
    ChunkUnavailable,
    KeyReceipt,
    ReceiptCache,
    chunk_commitment,
    split_chunk,
)
from qbfl.crypto.qds import QdsParams, SignerKeys, TripleKeys, VerifierKeys
from qbfl.errors import InvalidSignature, KeyPoolExhausted, QbflError
from qbfl.ledger.encoding import CanonicalRecord, EncodingError, Field, FieldKind, RecordSchema
from qbfl.ledger.signer import Signer, verify_signature
from qbfl.node.qkdlink import QkdLinks

KEYS_CONTEXT = b"qbfl/qds-operation-keys/v1"
_NO_SHARE = VerifierKeys(0, 0, b"")


class KeyReferenceInvalid(QbflError):
    """An operation's key reference is not what its signer signed, or names the wrong chunks."""


class ChunkReused(ChunkUnavailable):
    """The chunk named for this verifier was already revealed: `evidence` is the signed reference
    that used it first (with the current one, proof that the signer reused its key)."""

    def __init__(self, message: str, evidence: bytes) -> None:
        super().__init__(message)
        self.evidence = evidence


@dataclass(frozen=True)
class OperationKeys(CanonicalRecord):
    """Which chunks one QDS operation uses, signed by the operation's signer (path[-1])."""

    network: bytes
    round: int
    view: int
    path: tuple[int, ...]
    bob: int
    charlie: int
    bob_chunk: bytes  # ChunkRef of pair (signer, bob)
    charlie_chunk: bytes  # ChunkRef of pair (signer, charlie)
    signature: bytes | None = None

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        38,
        "OperationKeys",
        (
            Field(1, "network", FieldKind.BYTES, max_len=32),
            Field(2, "round", FieldKind.UINT),
            Field(3, "view", FieldKind.UINT),
            Field(4, "path", FieldKind.UINT_SEQ, max_len=4 + 8 * 64, max_count=64),
            Field(5, "bob", FieldKind.UINT),
            Field(6, "charlie", FieldKind.UINT),
            Field(7, "bob_chunk", FieldKind.BYTES, max_len=24 << 10),
            Field(8, "charlie_chunk", FieldKind.BYTES, max_len=24 << 10),
            Field(9, "signature", FieldKind.BYTES, optional=True, max_len=8 << 10),
        ),
    )

    @property
    def triple(self) -> TripleId:
        return TripleId(tuple(self.path), self.bob, self.charlie)

    def payload(self) -> bytes:
        return dataclasses.replace(self, signature=None).encode()

    def verify(self, public_keys: Mapping[int, bytes]) -> None:
        signer = self.path[-1] if self.path else None
        key = public_keys.get(signer) if signer is not None else None
        if key is None or self.signature is None:
            raise KeyReferenceInvalid("key reference without its signer's signature")
        try:
            verify_signature(key, self.payload(), self.signature, context=KEYS_CONTEXT)
        except InvalidSignature as exc:
            raise KeyReferenceInvalid(f"key reference of {self.triple}: {exc}") from exc


@dataclass(frozen=True)
class ReuseProof(CanonicalRecord):
    """Charlie's answer when the signer named a chunk she had already revealed."""

    current: bytes  # OperationKeys of this operation
    earlier: bytes  # OperationKeys that used the same chunk first

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        39,
        "ReuseProof",
        (
            Field(1, "current", FieldKind.BYTES, max_len=64 << 10),
            Field(2, "earlier", FieldKind.BYTES, max_len=64 << 10),
        ),
    )


def _chunk_of(keys: OperationKeys, verifier: int) -> bytes:
    return keys.bob_chunk if verifier == keys.bob else keys.charlie_chunk


class KeyEvidence:
    """Per node: the signed reference that made it reveal each chunk (for ReuseProofs), bounded."""

    def __init__(self, capacity: int = 65536) -> None:
        self._first: dict[tuple[tuple[int, int], bytes, int], bytes] = {}
        self._capacity = capacity
        self._lock = threading.Lock()

    def remember(self, pair: tuple[int, int], epochs: bytes, index: int, keys: bytes) -> None:
        with self._lock:
            if len(self._first) >= self._capacity:
                self._first.pop(next(iter(self._first)))
            self._first.setdefault((pair, epochs, index), keys)

    def first_use(self, pair: tuple[int, int], epochs: bytes, index: int) -> bytes | None:
        with self._lock:
            return self._first.get((pair, epochs, index))


class NetworkTripleDealer:
    """One node's key source for one QBA session (the dealer interface QbaParticipant uses)."""

    def __init__(
        self,
        *,
        me: int,
        key: Signer,
        network: bytes,
        round: int,
        view: int,
        links: QkdLinks,
        evidence: KeyEvidence,
        public_keys: Mapping[int, bytes],
        params: QdsParams,
        wait_s: float,
    ) -> None:
        self.params = params
        self._me, self._key, self._network = me, key, network
        self._round, self._view = round, view
        self._links, self._evidence, self._keys_of = links, evidence, public_keys
        self._receipts: ReceiptCache = links.receipts or ReceiptCache(public_keys)
        self._wait_s = wait_s
        self._signed: dict[TripleId, bytes] = {}  # operation → its signed OperationKeys
        self._shares: dict[TripleId, TripleKeys] = {}
        self.allocated = 0

    @property
    def operations(self) -> int:
        return len(self._shares)

    # --- the signer ---------------------------------------------------------------------------

    def deal(self, triples: list[TripleId]) -> None:
        """As signer: allocate both chunks of every operation (waiting up to wait_s for QKD stock)."""
        mine = [t for t in triples if t.signer == self._me and t not in self._shares]
        need: dict[int, int] = {}
        for t in mine:
            need[t.bob] = need.get(t.bob, 0) + 1
            need[t.charlie] = need.get(t.charlie, 0) + 1
        for peer, count in need.items():
            if not self._links.wait_for(peer, count, self._wait_s):
                raise KeyPoolExhausted(
                    f"no QKD key with node {peer} for {count} QDS operations "
                    f"({self._links.status()['links'].get(str(peer), {}).get('last_error') or 'link not ready'})"
                )
        for t in mine:
            self._allocate(t)

    def _allocate(self, t: TripleId) -> None:
        store_b, store_c = self._links.store(t.bob), self._links.store(t.charlie)
        if store_b is None or store_c is None:
            raise KeyPoolExhausted(f"no QKD key store with {t.bob} or {t.charlie}")
        bits_b, ref_b = store_b.allocate()
        bits_c, ref_c = store_c.allocate()
        self.allocated += 2
        xb, yb = split_chunk(bits_b)
        xc, yc = split_chunk(bits_c)
        keys = OperationKeys(
            self._network,
            self._round,
            self._view,
            t.path,
            t.bob,
            t.charlie,
            ref_b.encode(),
            ref_c.encode(),
        )
        keys = dataclasses.replace(
            keys, signature=self._key.sign(keys.payload(), context=KEYS_CONTEXT)
        )
        self._signed[t] = keys.encode()
        self._shares[t] = TripleKeys(SignerKeys(xb ^ xc, yb ^ yc), _NO_SHARE, _NO_SHARE)

    def signed_keys(self, t: TripleId) -> bytes:
        """The signed reference that travels with `t`'s messages (signer's, or as learned)."""
        raw = self._signed.get(t)
        if raw is None:
            raise KeyReferenceInvalid(f"no key reference known for {t}")
        return raw

    # --- the verifiers ------------------------------------------------------------------------

    def learn(self, t: TripleId, raw: bytes) -> None:
        """Accept the signed reference that came with `t`'s SignedValue or Forwarded (first wins)."""
        if t in self._signed:
            return
        try:
            keys = OperationKeys.decode(raw)
        except EncodingError as exc:
            raise KeyReferenceInvalid(f"key reference of {t}: {exc}") from exc
        if (keys.network, keys.round, keys.view) != (
            self._network,
            self._round,
            self._view,
        ) or keys.triple != t:
            raise KeyReferenceInvalid(f"key reference names another operation than {t}")
        keys.verify(self._keys_of)
        self._signed[t] = raw

    def keys_for(self, t: TripleId) -> TripleKeys:
        shares = self._shares.get(t)
        if shares is not None:
            return shares
        if t.signer == self._me:  # the unbatched signer asks per operation, without deal()
            self.deal([t])
            return self._shares[t]
        if self._me not in (t.bob, t.charlie):
            raise KeyReferenceInvalid(f"node {self._me} has no share in {t}")
        raw = self.signed_keys(t)
        keys = OperationKeys.decode(raw)
        me_bob = self._me == t.bob
        partner = t.charlie if me_bob else t.bob
        mine = ChunkRef.decode(_chunk_of(keys, self._me))
        theirs = ChunkRef.decode(_chunk_of(keys, partner))
        my_receipt, _ = self._checked(mine, (t.signer, self._me))
        their_receipt, commitment = self._checked(theirs, (t.signer, partner))
        store = self._links.store(t.signer)
        if store is None or store.epochs != my_receipt.epochs:
            raise ChunkUnavailable(f"chunk {mine.index} with {t.signer} is from another key epoch")
        try:
            bits, _ = store.reveal(mine.index)
        except ChunkUnavailable as exc:
            earlier = self._evidence.first_use(store.pair, b"".join(store.epochs), mine.index)
            if earlier is not None and earlier != raw:
                raise ChunkReused(str(exc), earlier) from exc
            raise
        self._evidence.remember(store.pair, b"".join(store.epochs), mine.index, raw)
        x, y = split_chunk(bits)
        pair, epochs, index = their_receipt.pair, their_receipt.epochs, theirs.index

        def partner_check(px: int, py: int) -> bool:
            return chunk_commitment(pair, epochs, index, px | (py << self.params.n)) == commitment

        share = VerifierKeys(x, y, commitment, partner_check=partner_check)
        shares = TripleKeys(
            SignerKeys(0, 0), share if me_bob else _NO_SHARE, _NO_SHARE if me_bob else share
        )
        self._shares[t] = shares
        return shares

    def _checked(self, ref: ChunkRef, nodes: tuple[int, int]) -> tuple[KeyReceipt, bytes]:
        try:
            receipt, commitment = self._receipts.commitment_of(ref)
        except (ChunkProofInvalid, EncodingError) as exc:
            raise KeyReferenceInvalid(str(exc)) from exc
        if receipt.pair != (min(nodes), max(nodes)):
            raise KeyReferenceInvalid(
                f"chunk {ref.index} belongs to pair {receipt.pair}, not {nodes}"
            )
        return receipt, commitment

    def reuse_proof(self, t: TripleId, earlier: bytes) -> bytes:
        return ReuseProof(self.signed_keys(t), earlier).encode()

    def check_reuse_proof(self, t: TripleId, raw: bytes) -> bool:
        """As Bob: does Charlie's proof show that `t`'s signer named her chunk twice?"""
        try:
            proof = ReuseProof.decode(raw)
            current = OperationKeys.decode(proof.current)
            earlier = OperationKeys.decode(proof.earlier)
            if proof.current != self.signed_keys(t) or current.triple != t:
                return False
            earlier.verify(self._keys_of)
        except (QbflError, EncodingError):
            return False
        if earlier.path[-1] != t.signer or proof.earlier == proof.current:
            return False
        named = ChunkRef.decode(current.charlie_chunk)
        used = [
            c
            for c in (earlier.bob_chunk, earlier.charlie_chunk)
            if ChunkRef.decode(c).receipt == named.receipt
        ]
        return any(ChunkRef.decode(c).index == named.index for c in used)


DealerFactory = Callable[[int, int], NetworkTripleDealer]
