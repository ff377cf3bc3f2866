"""The one interface through which QDS and QBA draw pairwise secret key bits (from QKD pools or a seeded stand-in)."""

from __future__ import annotations

from typing import Protocol

import blake3

from qbfl.errors import QbflError


class UnknownKeyPair(QbflError, ValueError):
    """No pairwise key exists for the two nodes named: one is outside the roster, or both are one node."""


class PairwiseKeySupply(Protocol):
    """Secret bits shared by exactly two nodes; each call consumes them (one-time keys).

    `take(a, b, nbits)` and `take(b, a, nbits)` draw from the same pair's pool: the pair is
    unordered. Bits are returned as a Python int holding `nbits` bits (LSB first).
    Raises `qbfl.errors.KeyPoolExhausted` when the pool is short and `UnknownKeyPair` when the two
    nodes share no pool.
    """

    def take(self, a: int, b: int, nbits: int) -> int: ...

    def consumed_bits(self) -> int: ...


class SeededKeySupply:
    """Deterministic, unlimited pairwise keys from a seed (blake3 XOF): for tests and benchmarks
    where key distribution is assumed done, as the paper assumes (Section 5.1)."""

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._offsets: dict[tuple[int, int], int] = {}
        self._consumed = 0

    def take(self, a: int, b: int, nbits: int) -> int:
        if a == b:
            raise UnknownKeyPair(f"a key pair needs two different nodes, got {a} twice")
        if nbits <= 0:
            raise ValueError("nbits must be positive")
        pair = (min(a, b), max(a, b))
        offset = self._offsets.get(pair, 0)
        nbytes = (nbits + 7) // 8
        start = offset // 8 + (1 if offset % 8 else 0)
        h = blake3.blake3(f"qbfl-seeded-keys/{self._seed}/{pair[0]}/{pair[1]}".encode())
        raw = h.digest(length=nbytes, seek=start)
        self._offsets[pair] = (start + nbytes) * 8
        self._consumed += nbits
        return int.from_bytes(raw, "little") & ((1 << nbits) - 1)

    def consumed_bits(self) -> int:
        return self._consumed
