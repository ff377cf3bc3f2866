"""QBA wire messages (frozen dataclasses), the mode enum, their error type and the size limits a peer meets."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qbfl.errors import QbflError

# Committee-size cap for QBA (docs/qba.md, "Bounds"). Paper mode is exponential in N (9/4 already
# needs 8 792 QDS operations), detectable mode quadratic (64 members: 3 906 operations, 3 Mbit of
# key per session at n = 128); larger committees are refused when a session is set up.
QBA_MAX_COMMITTEE = 64
# A path names the primaries of one relay chain: at most f_c + 1 ids, f_c = ⌊(64 − 1)/2⌋ = 31
# (App. A.2: f multicast rounds, the round-r path holds r ids). Decoding refuses longer paths.
QBA_MAX_PATH = (QBA_MAX_COMMITTEE - 1) // 2 + 1
# The signed document is the round's ConsensusMessage (qbfl/ledger/block.py): ~70 bytes plus 8 per
# selected client, so 64 KiB carries 8 000 selected ids (the paper's runs: 50). It bounds what a
# peer can make a member hold per operation: one document (docs/qba.md, "Bounds").
QBA_DOC_MAX_BYTES = 64 << 10


class InvalidQbaMessage(QbflError):
    """A QBA message that cannot belong to this session: malformed, out of range, or naming an
    operation, sender or recipient the committee and mode do not have. Raised before any state change."""


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
        # every message lookup hashes its operation id (~15 per QDS operation): hash once per id.
        # The context bytes are built lazily and kept on this instance only (context()): a process-wide
        # cache filled at construction let any peer grow memory by decoding distinct ids (issue 10).
        object.__setattr__(self, "_hash", hash((self.path, self.bob, self.charlie)))

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
        cached: bytes | None = self.__dict__.get("_context")
        if cached is None:
            # four checks per operation need it; a participant keeps one instance per valid operation
            cached = (
                "qba/" + ".".join(map(str, self.path)) + f"/{self.bob}/{self.charlie}"
            ).encode()
            object.__setattr__(self, "_context", cached)
        return cached

    def shape_error(self) -> str | None:
        """Why this cannot name a QDS operation of any committee (None if it can).

        Structural only: a path of 1..QBA_MAX_PATH distinct ids, Bob ≠ Charlie, neither on the path
        (App. A.2: a relay's triples use members that have not acted as primary on its path).
        """
        path, bob, charlie = self.path, self.bob, self.charlie
        if type(path) is not tuple or not 1 <= len(path) <= QBA_MAX_PATH:
            return f"a path names the leader and at most {QBA_MAX_PATH - 1} relays"
        if type(bob) is not int or type(charlie) is not int or bob < 0 or charlie < 0:
            return "ids are non-negative ints"
        for k in path:  # a loop, not any(<generator>): this runs once per operation and verifier
            if type(k) is not int or k < 0:
                return "ids are non-negative ints"
        if len(set(path)) != len(path):
            return "a path repeats a primary"
        if bob == charlie:
            return "Bob and Charlie must differ"
        if bob in path or charlie in path:
            return "Bob and Charlie must not be on the path"
        return None

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


def roles(message: QbaMessage) -> tuple[int, int]:
    """The (sender, recipient) that the message's kind and operation fix (App. A.1's order)."""
    t = message.triple
    kind = type(message)
    if kind is SignedValue:
        return t.signer, t.bob
    if kind is KeysRevealed:
        return t.charlie, t.bob
    return t.bob, t.charlie  # Forwarded, Accepted


def shape_error(message: object) -> str | None:
    """Why `message` is not a well-formed QBA message of any session (None if it is).

    What can be checked without knowing the committee, the mode or n: the kind, the operation's
    shape, sender and recipient as the kind fixes them, field types, the document size.
    """
    if type(message) not in _KINDS:
        return f"not a QBA message: {type(message).__name__}"
    msg: QbaMessage = message  # type: ignore[assignment]
    if type(msg.triple) is not TripleId:
        return "the operation id is not a TripleId"
    problem = msg.triple.shape_error()
    if problem is not None:
        return problem
    if (msg.sender, msg.recipient) != roles(msg):
        return f"{type(msg).__name__} for {msg.triple} must go {roles(msg)[0]} → {roles(msg)[1]}"
    kind = type(msg)
    if kind is SignedValue or kind is Forwarded:
        doc = msg.doc  # type: ignore[union-attr]
        if type(doc) is not bytes or len(doc) > QBA_DOC_MAX_BYTES:
            return f"the document is bytes of at most {QBA_DOC_MAX_BYTES}"
    for name in INT_FIELDS[kind]:
        value = getattr(msg, name)
        if type(value) is not int or value < 0:
            return f"{name} is a non-negative int"
    return None


# the QDS values of each kind (Python ints; App. A.1 gives their widths in terms of n)
INT_FIELDS: dict[type, tuple[str, ...]] = {
    SignedValue: ("sig",),
    Forwarded: ("sig", "x", "y"),
    KeysRevealed: ("x", "y"),
    Accepted: (),
}
_KINDS = tuple(INT_FIELDS)
