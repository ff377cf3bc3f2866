"""The one place where generated protobuf types meet the core's dataclasses (Flower's serde).

Protobuf only frames messages: every value that is signed or hashed travels as the canonical
bytes of a core record. Nothing outside qbfl.net, qbfl.node and qbfl.publisher sees a `*_pb2` type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qbfl._proto.v1 import common_pb2
from qbfl.consensus.envelope import MessageKind, authenticate, seal
from qbfl.consensus.events import Message
from qbfl.consensus.wire import Proposal, QbaEnvelope, SyncRequest, SyncResponse, VoteMessage
from qbfl.errors import InvalidSignature, QbflError
from qbfl.ledger.block import Block, UpdateSubmission
from qbfl.ledger.signer import Signer


class MisaddressedMessage(QbflError):
    """A message signed for another recipient: a replay or a routing mistake."""


class Unauthenticated(QbflError):
    """The envelope's signature does not prove who sent it (→ UNAUTHENTICATED)."""


# Message class → the kind (and so the RPC and the signature context) it travels as.
KIND_OF: dict[type, MessageKind] = {
    UpdateSubmission: MessageKind.SUBMISSION,
    Proposal: MessageKind.PROPOSAL,
    QbaEnvelope: MessageKind.QBA,
    VoteMessage: MessageKind.VOTE,
    Block: MessageKind.BLOCK,
    SyncRequest: MessageKind.SYNC_REQUEST,
    SyncResponse: MessageKind.SYNC_RESPONSE,
}
DECODER_OF: dict[MessageKind, Any] = {kind: cls for cls, kind in KIND_OF.items()}

# Multicast kinds: a block is self-verifying, a submission is signed by its client and bound to
# its round and base block, a proposal is the leader's to its whole committee — delivering any of
# them to another node than intended tells it nothing it may not know and changes nothing it
# would not accept from the signer directly. So one envelope signature, with this recipient,
# serves all recipients (a client's 5 submissions, a leader's 49 block copies: 1 ML-DSA signature
# each instead of 5 or 49). QBA messages, votes and sync traffic stay addressed.
ANY_RECIPIENT = (1 << 64) - 1
MULTICAST_KINDS = frozenset({MessageKind.BLOCK, MessageKind.SUBMISSION, MessageKind.PROPOSAL})


@dataclass(frozen=True)
class Received:
    """An authenticated message: who sent it and the canonical bytes of its body."""

    sender: int
    kind: MessageKind
    body: bytes


def kind_of(message: Message) -> MessageKind:
    try:
        return KIND_OF[type(message)]
    except KeyError:
        raise TypeError(f"no wire kind for {type(message).__name__}") from None


def envelope_to_proto(
    key: Signer,
    *,
    network: bytes,
    kind: MessageKind,
    sender: int,
    recipient: int,
    body: bytes,
) -> common_pb2.Envelope:
    """Sign (network, kind, sender, recipient, body) and frame it for the wire."""
    signature = seal(key, network=network, kind=kind, sender=sender, recipient=recipient, body=body)
    return common_pb2.Envelope(sender=sender, recipient=recipient, body=body, signature=signature)


def envelope_from_proto(
    envelope: common_pb2.Envelope,
    *,
    public_keys: dict[int, bytes],
    network: bytes,
    kind: MessageKind,
    me: int,
) -> Received:
    """Authenticate a received envelope addressed to `me` (or to any recipient, for blocks).

    Raises UnknownSender / InvalidSignature (→ UNAUTHENTICATED) or MisaddressedMessage.
    """
    recipient = envelope.recipient
    if recipient != me and not (kind in MULTICAST_KINDS and recipient == ANY_RECIPIENT):
        raise MisaddressedMessage(f"message for node {recipient} delivered to node {me}")
    try:
        authenticate(
            public_keys,
            network=network,
            kind=kind,
            sender=envelope.sender,
            recipient=recipient,
            body=envelope.body,
            signature=envelope.signature,
        )
    except InvalidSignature as exc:
        raise Unauthenticated(f"envelope from {envelope.sender}: {exc}") from exc
    return Received(envelope.sender, kind, envelope.body)


def decode_message(kind: MessageKind, body: bytes) -> Message:
    """The core record a body of `kind` encodes; EncodingError (→ INVALID_ARGUMENT) if it does not."""
    message: Message = DECODER_OF[kind].decode(body)
    return message
