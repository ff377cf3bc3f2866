"""What a node signs when it sends a message to one peer: kind, network, sender, recipient and body.

The transport (gRPC) carries (sender, recipient, body, signature); the receiver rebuilds the
canonical `SignedPayload` from those fields, the kind implied by the RPC and its own network id
(the genesis hash), and checks the ML-DSA signature with the sender's roster key. Binding all
five values means a captured message cannot be replayed to another node, on another network, or
as another kind of message (STYLE §3: canonical bytes, never a protobuf serialisation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from qbfl.errors import InvalidSignature, QbflError
from qbfl.ledger.encoding import (
    MAX_RECORD_BYTES,
    CanonicalRecord,
    Field,
    FieldKind,
    RecordSchema,
)
from qbfl.ledger.signer import HASH_LEN, Signer, verify_signature


class MessageKind(Enum):
    """One per RPC: the value is part of the ML-DSA context, so kinds never share signatures."""

    SUBMISSION = "submission"
    PROPOSAL = "proposal"
    QBA = "qba"
    VOTE = "vote"
    BLOCK = "block"
    SYNC_REQUEST = "sync-request"
    SYNC_RESPONSE = "sync-response"
    QKD = "qkd"
    REGISTRATION = "registration"

    @property
    def context(self) -> bytes:
        """FIPS 204 context string of this kind (domain separation)."""
        return f"qbfl/net/{self.value}/v1".encode()


class UnknownSender(QbflError):
    """A message names a sender that is not on the roster (or not allowed for this kind)."""


@dataclass(frozen=True)
class SignedPayload(CanonicalRecord):
    """The bytes a sender signs for one message; never sent as such (the receiver rebuilds them)."""

    network: bytes  # genesis hash (the task hash before genesis, for registration)
    kind: str
    sender: int
    recipient: int
    body: bytes

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        32,
        "SignedPayload",
        (
            Field(1, "network", FieldKind.BYTES, max_len=HASH_LEN),
            Field(2, "kind", FieldKind.STR, max_len=32),
            Field(3, "sender", FieldKind.UINT),
            Field(4, "recipient", FieldKind.UINT),
            Field(5, "body", FieldKind.BYTES, max_len=MAX_RECORD_BYTES),
        ),
    )


def seal(
    key: Signer, *, network: bytes, kind: MessageKind, sender: int, recipient: int, body: bytes
) -> bytes:
    """The signature that makes (sender → recipient, kind, body) verifiable on `network`."""
    payload = SignedPayload(network, kind.value, sender, recipient, body).encode()
    return key.sign(payload, context=kind.context)


def authenticate(
    public_keys: Mapping[int, bytes],
    *,
    network: bytes,
    kind: MessageKind,
    sender: int,
    recipient: int,
    body: bytes,
    signature: bytes,
) -> None:
    """Raise UnknownSender or InvalidSignature unless `sender` (a roster id) signed exactly this."""
    key = public_keys.get(sender)
    if key is None:
        raise UnknownSender(f"sender {sender} is not on the roster")
    if not signature:
        raise InvalidSignature(f"message from {sender} is not signed")
    payload = SignedPayload(network, kind.value, sender, recipient, body).encode()
    verify_signature(key, payload, signature, context=kind.context)
