"""Signed protocol records as frozen dataclasses: client updates, consensus messages, votes and blocks."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from qbfl.errors import InvalidUpdate
from qbfl.ledger.encoding import (
    IDS_MAX_LEN,
    MAX_COMMITTEE_SIZE,
    MAX_IDS,
    MAX_UPDATE_BYTES,
    SIGNATURE_MAX_LEN,
    CanonicalRecord,
    EncodingError,
    Field,
    FieldKind,
    RecordSchema,
    build_record,
    decode_record,
    is_strictly_increasing,
)
from qbfl.ledger.signer import HASH_LEN, Signer, digest, verify_signature

# Domain-separation contexts for ML-DSA (FIPS 204 ctx): a signature made for one kind of
# record can never be replayed as another.
UPDATE_CONTEXT = b"qbfl/update/v1"
VOTE_CONTEXT = b"qbfl/vote/v1"
BLOCK_CONTEXT = b"qbfl/block/v1"

# A CommitteeVote record: header (5), member id field (13), signature field header (5) and
# signature; rounded up so that a block can carry MAX_COMMITTEE_SIZE maximal votes.
VOTE_MAX_LEN = 64 + SIGNATURE_MAX_LEN


def check_update(update: bytes, expected_param_count: int) -> np.ndarray:
    """Return `update` as float32 values; raise InvalidUpdate on a wrong size or NaN/Inf."""
    if len(update) != 4 * expected_param_count:
        raise InvalidUpdate(
            f"update has {len(update)} bytes, expected {4 * expected_param_count} "
            f"({expected_param_count} float32 parameters)"
        )
    values = np.frombuffer(update, dtype="<f4")
    if not np.isfinite(values).all():
        raise InvalidUpdate("update contains NaN or Inf")
    return values


@dataclass(frozen=True)
class UpdateSubmission(CanonicalRecord):
    """A client's model update d_i = w_i − w_{t−1} for one round, signed by the client (§4.3)."""

    round: int
    client_id: int
    update: bytes  # float32 little-endian, canonical parameter order
    base_block_hash: bytes  # the block whose parameters the client trained from
    view: int | None = None
    signature: bytes | None = None

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        1,
        "UpdateSubmission",
        (
            Field(1, "round", FieldKind.UINT),
            Field(2, "view", FieldKind.UINT, optional=True),
            Field(3, "client_id", FieldKind.UINT),
            Field(4, "update", FieldKind.FLOAT32_ARRAY, max_len=4 + MAX_UPDATE_BYTES),
            Field(5, "base_block_hash", FieldKind.BYTES, max_len=HASH_LEN),
            Field(6, "signature", FieldKind.BYTES, optional=True, max_len=SIGNATURE_MAX_LEN),
        ),
    )

    def signing_payload(self) -> bytes:
        return dataclasses.replace(self, signature=None).encode()

    def signed(self, key: Signer) -> UpdateSubmission:
        return dataclasses.replace(
            self, signature=key.sign(self.signing_payload(), context=UPDATE_CONTEXT)
        )

    def verify(self, public_key: bytes, *, expected_param_count: int) -> None:
        """Raise InvalidSignature or InvalidUpdate unless this is a well-formed signed update."""
        from qbfl.errors import InvalidSignature

        if self.signature is None:
            raise InvalidSignature(f"update from client {self.client_id} is not signed")
        verify_signature(public_key, self.signing_payload(), self.signature, context=UPDATE_CONTEXT)
        check_update(self.update, expected_param_count)


@dataclass(frozen=True)
class ConsensusMessage(CanonicalRecord):
    """The QBA value of one (round, view): sorted selected ids and blake3 of the aggregate (§4.5)."""

    round: int
    view: int
    selected: tuple[int, ...]
    update_hash: bytes

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        2,
        "ConsensusMessage",
        (
            Field(1, "round", FieldKind.UINT),
            Field(2, "view", FieldKind.UINT),
            Field(3, "selected", FieldKind.UINT_SET, max_len=IDS_MAX_LEN, max_count=MAX_IDS),
            Field(4, "update_hash", FieldKind.BYTES, max_len=HASH_LEN),
        ),
    )

    def sign_vote(self, member_id: int, key: Signer) -> CommitteeVote:
        """Alg. 3 line 12: σ_i ← Sign(msg_i, i)."""
        return CommitteeVote(member_id, key.sign(self.encode(), context=VOTE_CONTEXT))

    def verify_vote(self, vote: CommitteeVote, public_key: bytes) -> None:
        verify_signature(public_key, self.encode(), vote.signature, context=VOTE_CONTEXT)


@dataclass(frozen=True)
class CommitteeVote(CanonicalRecord):
    """A committee member's ML-DSA signature over a ConsensusMessage (Alg. 3 lines 11–13)."""

    member_id: int
    signature: bytes

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        3,
        "CommitteeVote",
        (
            Field(1, "member_id", FieldKind.UINT),
            Field(2, "signature", FieldKind.BYTES, max_len=SIGNATURE_MAX_LEN),
        ),
    )


@dataclass(frozen=True)
class Block(CanonicalRecord):
    """One accepted round: the aggregate, who contributed, who decided, linked by Blake3 (§4, §4.5).

    `block_hash` is blake3 over the canonical encoding of every field (votes and the optional
    leader signature included), so it changes if any stored byte does.
    """

    height: int
    round: int
    view: int
    prev_hash: bytes
    leader: int
    committee: tuple[int, ...]  # in selection order; committee[0] is the leader (Alg. 1)
    selected: tuple[int, ...]  # sorted, unique
    update: bytes  # aggregated float32 little-endian, canonical parameter order
    update_hash: bytes
    votes: tuple[CommitteeVote, ...]  # sorted by member id, one per member
    leader_signature: bytes | None = None

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        4,
        "Block",
        (
            Field(1, "height", FieldKind.UINT),
            Field(2, "round", FieldKind.UINT),
            Field(3, "view", FieldKind.UINT),
            Field(4, "prev_hash", FieldKind.BYTES, max_len=HASH_LEN),
            Field(5, "leader", FieldKind.UINT),
            Field(
                6,
                "committee",
                FieldKind.UINT_SEQ,
                max_len=4 + 8 * MAX_COMMITTEE_SIZE,
                max_count=MAX_COMMITTEE_SIZE,
            ),
            Field(7, "selected", FieldKind.UINT_SET, max_len=IDS_MAX_LEN, max_count=MAX_IDS),
            Field(8, "update", FieldKind.FLOAT32_ARRAY, max_len=4 + MAX_UPDATE_BYTES),
            Field(9, "update_hash", FieldKind.BYTES, max_len=HASH_LEN),
            # One vote per committee member at most.
            Field(
                10,
                "votes",
                FieldKind.BYTES_SEQ,
                max_len=4 + MAX_COMMITTEE_SIZE * (4 + VOTE_MAX_LEN),
                max_count=MAX_COMMITTEE_SIZE,
            ),
            Field(
                11, "leader_signature", FieldKind.BYTES, optional=True, max_len=SIGNATURE_MAX_LEN
            ),
        ),
    )

    def _values(self) -> dict[str, Any]:
        values = super()._values()
        ids = [v.member_id for v in self.votes]
        if not is_strictly_increasing(ids):
            raise EncodingError("Block.votes must be sorted by member id, one per member")
        values["votes"] = [v.encode() for v in self.votes]
        return values

    @classmethod
    def decode(cls, data: bytes) -> Block:
        values = decode_record(cls.SCHEMA, data)
        votes = tuple(CommitteeVote.decode(raw) for raw in values["votes"])
        ids = [v.member_id for v in votes]
        if not is_strictly_increasing(ids):
            raise EncodingError("Block.votes must be sorted by member id, one per member")
        values["votes"] = votes
        return build_record(cls, values)

    @functools.cached_property
    def block_hash(self) -> bytes:
        return digest(self.encode())

    def consensus_message(self) -> ConsensusMessage:
        """The value the committee agreed on and signed (DESIGN §5 step 4)."""
        return ConsensusMessage(self.round, self.view, self.selected, self.update_hash)

    @functools.cached_property
    def committee_seed(self) -> bytes:
        """Seed of the next round's committee draw (Alg. 1's h).

        The paper seeds Alg. 1 with the latest block's hash, but ML-DSA signatures are
        randomised, so a leader could re-sign until the block hash draws a committee it likes.
        The seed therefore covers only what the committee agreed on — the previous seed's
        chain (prev_hash) and the consensus message — never a signature.
        """
        return digest(COMMITTEE_SEED_DOMAIN + self.prev_hash + self.consensus_message().encode())

    def leader_payload(self) -> bytes:
        return dataclasses.replace(self, leader_signature=None).encode()

    def signed_by_leader(self, key: Signer) -> Block:
        return dataclasses.replace(
            self, leader_signature=key.sign(self.leader_payload(), context=BLOCK_CONTEXT)
        )


COMMITTEE_SEED_DOMAIN = b"qbfl/committee-seed/v1"


def make_block(
    *,
    height: int,
    round: int,
    view: int,
    prev_hash: bytes,
    committee: tuple[int, ...],
    selected: tuple[int, ...],
    update: bytes,
    votes: tuple[CommitteeVote, ...] = (),
) -> Block:
    """Build a block from its content: the leader is committee[0], votes are put in id order."""
    if not committee:
        raise ValueError("a block needs a non-empty committee")
    return Block(
        height=height,
        round=round,
        view=view,
        prev_hash=prev_hash,
        leader=committee[0],
        committee=tuple(committee),
        selected=tuple(sorted(selected)),
        update=update,
        update_hash=digest(update),
        votes=tuple(sorted(votes, key=lambda v: v.member_id)),
    )
