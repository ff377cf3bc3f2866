"""Round messages that nodes exchange besides ledger records (proposal, QBA envelope, vote, sync).

Each has `encode()`/`decode()` in the ledger's canonical encoding (record types 16–20; nested
records are stored as BYTES holding their own full encoding, as in a block): a transport sends
these bytes, never a protobuf serialisation of the fields (STYLE §3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from qbfl.consensus.qbawire import decode_qba_message, encode_qba_message
from qbfl.errors import QbflError
from qbfl.ledger.block import VOTE_MAX_LEN, Block, CommitteeVote, ConsensusMessage
from qbfl.ledger.encoding import (
    IDS_MAX_LEN,
    MAX_IDS,
    MAX_RECORD_BYTES,
    MAX_UPDATE_BYTES,
    CanonicalRecord,
    Field,
    FieldKind,
    RecordSchema,
    build_record,
    decode_record,
)

# Blocks per SyncResponse (catch-up answers at most this many; a node further behind asks again
# from its new head). Defined here, where the decoder enforces it; catchup.py re-exports it.
MAX_SYNC_BLOCKS = 64
_MESSAGE_MAX_LEN = IDS_MAX_LEN + 128  # a ConsensusMessage record: its id set plus fixed fields


class InvalidMessage(QbflError):
    """A round message breaks the protocol (wrong sender or role, equivocation, wrong value)."""


@dataclass(frozen=True)
class Proposal(CanonicalRecord):
    """The leader's aggregate for one (round, view), sent to the committee beside the QBA broadcast.

    `inputs` names the submissions the leader aggregated over: members recompute Alg. 2 over
    exactly these (they must hold every one), so an honest member never compares against a
    different input set (the paper assumes consistent updates, §4.5; this makes it checkable).
    """

    round: int
    view: int
    inputs: tuple[int, ...]  # sorted client ids
    update: bytes  # the leader's aggregate, float32 little-endian
    message: ConsensusMessage

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        16,
        "Proposal",
        (
            Field(1, "round", FieldKind.UINT),
            Field(2, "view", FieldKind.UINT),
            Field(3, "inputs", FieldKind.UINT_SET, max_len=IDS_MAX_LEN, max_count=MAX_IDS),
            Field(4, "update", FieldKind.FLOAT32_ARRAY, max_len=4 + MAX_UPDATE_BYTES),
            Field(5, "message", FieldKind.BYTES, max_len=_MESSAGE_MAX_LEN),
        ),
    )

    def _values(self) -> dict[str, Any]:
        return {**super()._values(), "message": self.message.encode()}

    @classmethod
    def decode(cls, data: bytes) -> Proposal:
        values = decode_record(cls.SCHEMA, data)
        values["message"] = ConsensusMessage.decode(values["message"])
        return build_record(cls, values)


@dataclass(frozen=True)
class KeyedPayload:
    """A QBA message with the key reference its QDS operation travels with between processes
    (which QKD chunks the operation uses, signed by its signer: qbfl.node.qbakeys). In one
    process the key dealer needs none and payloads travel bare."""

    message: object
    key_ref: bytes


MAX_KEY_REF_BYTES = 64 << 10


@dataclass(frozen=True)
class QbaEnvelope(CanonicalRecord):
    """One QBA protocol message of a (round, view), opaque to the round logic.

    Only payloads of qbfl.consensus.qba.messages encode (qbawire.py), bare or inside a
    KeyedPayload (field 4 carries its key reference); anything else (a test's stand-in
    broadcast) raises EncodingError on encode().
    """

    round: int
    view: int
    payload: object

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        17,
        "QbaEnvelope",
        (
            Field(1, "round", FieldKind.UINT),
            Field(2, "view", FieldKind.UINT),
            Field(3, "payload", FieldKind.BYTES),
            Field(4, "key_ref", FieldKind.BYTES, optional=True, max_len=MAX_KEY_REF_BYTES),
        ),
    )

    def _values(self) -> dict[str, Any]:
        payload = self.payload
        if isinstance(payload, KeyedPayload):
            return {
                "round": self.round,
                "view": self.view,
                "payload": encode_qba_message(payload.message),
                "key_ref": payload.key_ref,
            }
        return {"round": self.round, "view": self.view, "payload": encode_qba_message(payload)}

    @classmethod
    def decode(cls, data: bytes) -> QbaEnvelope:
        values = decode_record(cls.SCHEMA, data)
        message = decode_qba_message(values["payload"])
        key_ref = values.pop("key_ref")
        values["payload"] = message if key_ref is None else KeyedPayload(message, key_ref)
        return build_record(cls, values)


@dataclass(frozen=True)
class VoteMessage(CanonicalRecord):
    """A member's ML-DSA vote on the message it signed (Alg. 3 lines 11–13)."""

    round: int
    view: int
    message: ConsensusMessage
    vote: CommitteeVote

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        18,
        "VoteMessage",
        (
            Field(1, "round", FieldKind.UINT),
            Field(2, "view", FieldKind.UINT),
            Field(3, "message", FieldKind.BYTES, max_len=_MESSAGE_MAX_LEN),
            Field(4, "vote", FieldKind.BYTES, max_len=VOTE_MAX_LEN),
        ),
    )

    def _values(self) -> dict[str, Any]:
        return {
            **super()._values(),
            "message": self.message.encode(),
            "vote": self.vote.encode(),
        }

    @classmethod
    def decode(cls, data: bytes) -> VoteMessage:
        values = decode_record(cls.SCHEMA, data)
        values["message"] = ConsensusMessage.decode(values["message"])
        values["vote"] = CommitteeVote.decode(values["vote"])
        return build_record(cls, values)


@dataclass(frozen=True)
class SyncRequest(CanonicalRecord):
    """Ask a peer for its blocks from `from_height` on (catch-up after missing blocks)."""

    from_height: int

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        19, "SyncRequest", (Field(1, "from_height", FieldKind.UINT),)
    )


@dataclass(frozen=True)
class SyncResponse(CanonicalRecord):
    """Blocks in height order answering a SyncRequest."""

    blocks: tuple[Block, ...]

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        20,
        "SyncResponse",
        (
            Field(
                1,
                "blocks",
                FieldKind.BYTES_SEQ,
                max_len=MAX_RECORD_BYTES,
                max_count=MAX_SYNC_BLOCKS,
            ),
        ),
    )

    def _values(self) -> dict[str, Any]:
        return {"blocks": [b.encode() for b in self.blocks]}

    @classmethod
    def decode(cls, data: bytes) -> SyncResponse:
        values = decode_record(cls.SCHEMA, data)
        return build_record(cls, {"blocks": tuple(Block.decode(raw) for raw in values["blocks"])})
