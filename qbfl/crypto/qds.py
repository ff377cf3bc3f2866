"""Three-party quantum digital signatures (paper Appendix A.1): key dealing, LFSR-Toeplitz hash, sign, verify."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import blake3

from qbfl.crypto.gf2 import degree, is_irreducible, poly_mod
from qbfl.crypto.keysupply import PairwiseKeySupply


@dataclass(frozen=True)
class QdsParams:
    """n: hash length and polynomial degree (App. A.1: X is n bits, Y and the digest 2n bits).

    check_irreducible: verifiers also run Rabin's test on the unmasked p_a (~ms each); off by default,
    see docs/qba.md "Irreducibility at the verifier" for why the simulation's guarantees do not need it.
    """

    n: int = 128
    check_irreducible: bool = False

    def __post_init__(self) -> None:
        if self.n < 16:
            raise ValueError("QDS needs n >= 16 bits")

    @property
    def key_bits_per_operation(self) -> int:
        """X_b, Y_b from pool (a,b) and X_c, Y_c from pool (a,c): 2·(n + 2n) bits."""
        return 6 * self.n


@dataclass(frozen=True)
class SignerKeys:
    """Alice's share: X_a = X_b ⊕ X_c (n bits) and Y_a = Y_b ⊕ Y_c (2n bits)."""

    x: int
    y: int


@dataclass(frozen=True)
class VerifierKeys:
    """Bob's or Charlie's share, plus a commitment to the other verifier's share.

    The commitment is this simulation's addition to App. A.1: it lets a verifier prove that the other
    one revealed wrong key bits (docs/qba.md, "Key commitments"); it never reveals the bits.
    """

    x: int
    y: int
    partner_commitment: bytes


@dataclass(frozen=True)
class TripleKeys:
    alice: SignerKeys
    bob: VerifierKeys
    charlie: VerifierKeys


@dataclass(frozen=True)
class QdsSignature:
    """Alice → Bob: {Sig, Doc}."""

    doc: bytes
    sig: int


@dataclass(frozen=True)
class QdsForward:
    """Bob → Charlie: {Sig, Doc} with Bob's key bits X_b, Y_b."""

    doc: bytes
    sig: int
    x: int
    y: int


@dataclass(frozen=True)
class QdsKeyReveal:
    """Charlie → Bob: X_c, Y_c (sent only after Bob's forward arrived, so Bob is committed)."""

    x: int
    y: int


class QdsVerdict(enum.Enum):
    ACCEPT = "accept"
    REJECT_SIGNATURE = "reject-signature"
    # the other verifier's revealed key bits do not match the dealt commitment: provable misbehaviour
    REJECT_KEYS = "reject-keys"


@dataclass(frozen=True)
class QdsTripleResult:
    bob: QdsVerdict
    charlie: QdsVerdict


def _commit(context: bytes, role: bytes, x: int, y: int, n: int) -> bytes:
    h = blake3.blake3(context + role)
    h.update(x.to_bytes(n // 8 + 1, "little") + y.to_bytes(n // 4 + 1, "little"))
    return h.digest(length=16)


def deal_triple_keys(
    keys: PairwiseKeySupply,
    *,
    alice: int,
    bob: int,
    charlie: int,
    params: QdsParams,
    context: bytes = b"",
) -> TripleKeys:
    """Draw one operation's keys: X_b, Y_b from pool (alice, bob), X_c, Y_c from pool (alice, charlie).

    Physically Bob and Charlie hold keys correlated by the QKD distribution that Alice knows only as
    their XOR; the simulation draws each half from the pairwise supply and hands out the XOR.
    `context` names the operation so that commitments of different operations never coincide.
    """
    if len({alice, bob, charlie}) != 3:
        raise ValueError("a QDS triple needs three different nodes")
    n = params.n
    mask = (1 << n) - 1
    kb = keys.take(alice, bob, 3 * n)
    kc = keys.take(alice, charlie, 3 * n)
    xb, yb = kb & mask, kb >> n
    xc, yc = kc & mask, kc >> n
    return TripleKeys(
        alice=SignerKeys(x=xb ^ xc, y=yb ^ yc),
        bob=VerifierKeys(x=xb, y=yb, partner_commitment=_commit(context, b"C", xc, yc, n)),
        charlie=VerifierKeys(x=xc, y=yc, partner_commitment=_commit(context, b"B", xb, yb, n)),
    )


def doc_polynomial(doc: bytes) -> int:
    """The document as bits d_0..d_{m-1} (little-endian) plus a marker bit d_m = 1.

    The marker makes the map from byte strings injective: without it b"a" and b"a\\x00" would hash alike.
    """
    return int.from_bytes(doc, "little") | (1 << (8 * len(doc)))


def lfsr_toeplitz_hash(poly: int, key: int, doc: bytes, n: int) -> int:
    """Krawczyk's LFSR-based Toeplitz hash H·Doc (App. A.1), computed without building H.

    Column j of H is the LFSR state s_j (s_0 = key; s_{j+1} = s_j >> 1 with the new top bit
    parity(s_j & c), p = x^n + c). H·Doc = Σ_j d_j s_j = D(T)·s_0 for the state map T, whose
    characteristic polynomial is p, so D(T) = (D mod p)(T): reduce the document first, then XOR
    at most n states instead of stepping the register m times.
    """
    r = poly_mod(doc_polynomial(doc), poly)
    c = poly ^ (1 << n)
    top = n - 1
    s = key
    h = 0
    while r:
        if r & 1:
            h ^= s
        r >>= 1
        s = (s >> 1) | (((s & c).bit_count() & 1) << top)
    return h


def lfsr_toeplitz_hash_reference(poly: int, key: int, doc: bytes, n: int) -> int:
    """The definition, step by step: all m+1 columns of H, XORed where the document bit is 1."""
    d = doc_polynomial(doc)
    c = poly ^ (1 << n)
    s = key
    h = 0
    for j in range(d.bit_length()):
        if (d >> j) & 1:
            h ^= s
        s = (s >> 1) | (((s & c).bit_count() & 1) << (n - 1))
    return h


def sign(doc: bytes, keys: SignerKeys, poly: int, params: QdsParams) -> QdsSignature:
    """Alice: Sig = (Hash ∥ p_a) ⊕ Y_a, Hash = H(p_a, X_a)·Doc (App. A.1 "Signing by Alice")."""
    n = params.n
    if degree(poly) != n:
        raise ValueError(f"p_a must have degree {n}")
    digest = lfsr_toeplitz_hash(poly, keys.x, doc, n) | ((poly ^ (1 << n)) << n)
    return QdsSignature(doc=doc, sig=digest ^ keys.y)


def forward(signature: QdsSignature, own: VerifierKeys) -> QdsForward:
    """Bob's first step: pass {Sig, Doc} and his key bits to Charlie before he learns hers."""
    return QdsForward(doc=signature.doc, sig=signature.sig, x=own.x, y=own.y)


def reveal(own: VerifierKeys) -> QdsKeyReveal:
    """Charlie's answer to Bob's forward."""
    return QdsKeyReveal(x=own.x, y=own.y)


def _check(doc: bytes, sig: int, kx: int, ky: int, params: QdsParams) -> QdsVerdict:
    n = params.n
    digest = sig ^ ky
    claimed = digest & ((1 << n) - 1)
    poly = (digest >> n) | (1 << n)  # the unmasked p_a; monic of degree n by construction
    if digest >> (2 * n):
        return QdsVerdict.REJECT_SIGNATURE
    if params.check_irreducible and not is_irreducible(poly):
        return QdsVerdict.REJECT_SIGNATURE
    if lfsr_toeplitz_hash(poly, kx, doc, n) != claimed:
        return QdsVerdict.REJECT_SIGNATURE
    return QdsVerdict.ACCEPT


def bob_verify(
    signature: QdsSignature,
    own: VerifierKeys,
    revealed: QdsKeyReveal,
    params: QdsParams,
    *,
    context: bytes = b"",
) -> QdsVerdict:
    """Bob: K_X = X_b ⊕ X_c, K_Y = Y_b ⊕ Y_c, unmask, recompute, accept iff equal (App. A.1)."""
    if _commit(context, b"C", revealed.x, revealed.y, params.n) != own.partner_commitment:
        return QdsVerdict.REJECT_KEYS
    return _check(signature.doc, signature.sig, own.x ^ revealed.x, own.y ^ revealed.y, params)


def keys_match(
    forwarded: QdsForward, own: VerifierKeys, params: QdsParams, *, context: bytes = b""
) -> bool:
    """Charlie's first check: do Bob's forwarded key bits match the commitment dealt to Charlie?"""
    return _commit(context, b"B", forwarded.x, forwarded.y, params.n) == own.partner_commitment


def charlie_verify(
    forwarded: QdsForward, own: VerifierKeys, params: QdsParams, *, context: bytes = b""
) -> QdsVerdict:
    """Charlie, after Bob announced acceptance: the same check on exactly what Bob forwarded."""
    if not keys_match(forwarded, own, params, context=context):
        return QdsVerdict.REJECT_KEYS
    return _check(forwarded.doc, forwarded.sig, own.x ^ forwarded.x, own.y ^ forwarded.y, params)


def run_qds_triple(
    doc: bytes,
    keys: PairwiseKeySupply,
    *,
    alice: int,
    bob: int,
    charlie: int,
    poly: int,
    params: QdsParams | None = None,
    context: bytes = b"",
) -> QdsTripleResult:
    """One honest QDS operation end to end: deal keys, sign, Bob verifies, Charlie verifies if Bob accepted."""
    params = params or QdsParams()
    dealt = deal_triple_keys(
        keys, alice=alice, bob=bob, charlie=charlie, params=params, context=context
    )
    signature = sign(doc, dealt.alice, poly, params)
    fwd = forward(signature, dealt.bob)
    bob_verdict = bob_verify(signature, dealt.bob, reveal(dealt.charlie), params, context=context)
    if bob_verdict is not QdsVerdict.ACCEPT:
        # App. A.1: Bob rejects and aborts; Charlie records nothing
        return QdsTripleResult(bob=bob_verdict, charlie=bob_verdict)
    return QdsTripleResult(
        bob=bob_verdict, charlie=charlie_verify(fwd, dealt.charlie, params, context=context)
    )


__all__ = [
    "QdsForward",
    "QdsKeyReveal",
    "QdsParams",
    "QdsSignature",
    "QdsTripleResult",
    "QdsVerdict",
    "SignerKeys",
    "TripleKeys",
    "VerifierKeys",
    "bob_verify",
    "charlie_verify",
    "deal_triple_keys",
    "doc_polynomial",
    "forward",
    "keys_match",
    "lfsr_toeplitz_hash",
    "lfsr_toeplitz_hash_reference",
    "reveal",
    "run_qds_triple",
    "sign",
]
