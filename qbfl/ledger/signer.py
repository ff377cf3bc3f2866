"""The signing interface the ledger needs (a key that signs with a context), and ML-DSA verification."""

from __future__ import annotations

from typing import Protocol

import blake3

from qbfl.crypto.signing import verify

HASH_LEN = 32


class Signer(Protocol):
    """An ML-DSA private key as qbfl.crypto.signing.SigningKey provides it."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes, *, context: bytes = b"") -> bytes: ...


def verify_signature(
    public_key: bytes, message: bytes, signature: bytes, *, context: bytes
) -> None:
    """Raise qbfl.errors.InvalidSignature unless `signature` signs `message` under `context`."""
    verify(public_key, message, signature, context=context)


def digest(data: bytes) -> bytes:
    """Blake3-256 of `data` (DESIGN §6: Blake3 for block hashes and update digests)."""
    return blake3.blake3(data).digest()
