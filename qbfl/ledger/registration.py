"""A node's registration with the publisher: id, public key and address, signed by that key (§4.1)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from qbfl.errors import InvalidSignature
from qbfl.ledger.encoding import CanonicalRecord, Field, FieldKind, RecordSchema
from qbfl.ledger.genesis import RosterEntry
from qbfl.ledger.signer import HASH_LEN, Signer, verify_signature

REGISTRATION_CONTEXT = b"qbfl/registration/v1"


@dataclass(frozen=True)
class Registration(CanonicalRecord):
    """ "I am node `node_id`, reachable at `address`, and I hold the key of `public_key`".

    The signature by that very key is the proof of possession: nobody can register a key they do
    not hold. `task_hash` binds the registration to one task, so it cannot be replayed to another
    publisher or task.
    """

    node_id: int
    public_key: bytes
    address: str
    task_hash: bytes
    signature: bytes | None = None

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        33,
        "Registration",
        (
            Field(1, "node_id", FieldKind.UINT),
            Field(2, "public_key", FieldKind.BYTES, max_len=4096),
            Field(3, "address", FieldKind.STR, max_len=512),
            Field(4, "task_hash", FieldKind.BYTES, max_len=HASH_LEN),
            Field(5, "signature", FieldKind.BYTES, optional=True, max_len=8 << 10),
        ),
    )

    def signing_payload(self) -> bytes:
        return dataclasses.replace(self, signature=None).encode()

    def signed(self, key: Signer) -> Registration:
        if key.public_key != self.public_key:
            raise ValueError("a registration must be signed by the key it registers")
        signature = key.sign(self.signing_payload(), context=REGISTRATION_CONTEXT)
        return dataclasses.replace(self, signature=signature)

    def verify(self, *, task_hash: bytes) -> None:
        """Raise InvalidSignature unless this is signed by its own key for `task_hash`."""
        if self.task_hash != task_hash:
            raise InvalidSignature(
                f"registration of node {self.node_id} is for another task "
                f"({self.task_hash.hex()[:16]}…, expected {task_hash.hex()[:16]}…)"
            )
        if self.signature is None:
            raise InvalidSignature(f"registration of node {self.node_id} is not signed")
        verify_signature(
            self.public_key, self.signing_payload(), self.signature, context=REGISTRATION_CONTEXT
        )

    def roster_entry(self) -> RosterEntry:
        return RosterEntry(self.node_id, self.public_key, self.address)
