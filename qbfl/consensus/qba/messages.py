"""QBA wire messages (frozen dataclasses) and the mode enum; one QDS operation is four of these messages."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache


@lru_cache(maxsize=65536)
def _context(path: tuple[int, ...], bob: int, charlie: int) -> bytes:
    # each operation's context is needed by four checks; build the bytes once
    return ("qba/" + ".".join(map(str, path)) + f"/{bob}/{charlie}").encode()


class QbaMode(enum.Enum):
    """DESIGN §6: `paper` runs Appendix A.2 as written; `detectable` (default) is round 1 with pair views."""

    PAPER = "paper"
    DETECTABLE = "detectable"


@dataclass(frozen=True, order=True)
class TripleId:
    """One QDS operation: signer path[-1] signs for (Bob, Charlie); path = primaries, leader first."""

    path: tuple[int, ...]
    bob: int
    charlie: int

    def __post_init__(self) -> None:
        # every message lookup hashes its operation id (~15 per QDS operation) and four checks need
        # its context bytes: compute both once per id (fields stay the public, compared ones)
        object.__setattr__(self, "_hash", hash((self.path, self.bob, self.charlie)))
        object.__setattr__(self, "_context", _context(self.path, self.bob, self.charlie))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined, no-any-return]

    @property
    def signer(self) -> int:
        return self.path[-1]

    @property
    def round(self) -> int:
        """Multicast round: the leader's triples are round 1, a relay at depth d signs in round d."""
        return len(self.path)

    def context(self) -> bytes:
        """Canonical bytes naming the operation (binds key commitments to it)."""
        return self._context  # type: ignore[attr-defined, no-any-return]

    def __str__(self) -> str:
        return f"({'→'.join(map(str, self.path))}; Bob {self.bob}, Charlie {self.charlie})"


@dataclass(frozen=True)
class SignedValue:
    """Signer → Bob: {Sig, Doc} (App. A.1 "Signing by Alice")."""

    triple: TripleId
    sender: int
    recipient: int
    doc: bytes
    sig: int


@dataclass(frozen=True)
class Forwarded:
    """Bob → Charlie: {Sig, Doc, X_b, Y_b}."""

    triple: TripleId
    sender: int
    recipient: int
    doc: bytes
    sig: int
    x: int
    y: int


@dataclass(frozen=True)
class KeysRevealed:
    """Charlie → Bob: {X_c, Y_c}."""

    triple: TripleId
    sender: int
    recipient: int
    x: int
    y: int


@dataclass(frozen=True)
class Accepted:
    """Bob → Charlie: Bob's signature check passed, Charlie may verify (App. A.1 "Verification by Charlie")."""

    triple: TripleId
    sender: int
    recipient: int


QbaMessage = SignedValue | Forwarded | KeysRevealed | Accepted
