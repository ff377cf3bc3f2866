"""Three-party quantum digital signatures (paper Appendix A.1): key dealing, LFSR-Toeplitz hash, sign, verify."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import blake3
import numpy as np

from qbfl.crypto.gf2 import degree, divmod_bytes, is_irreducible, multiples_table
from qbfl.crypto.gf2_columns import (
    ByteDivisor,
    byte_multiples,
    bytes_columns,
    ints_from_columns,
    word_columns,
    xor_at_byte,
)
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
    # How the other verifier's revealed bits are checked when they were not dealt here: between
    # processes the commitment is a QKD chunk's (qbfl.crypto.keychunks), bound to the pair and the
    # chunk rather than to the operation. None: `partner_commitment` under this operation's context.
    partner_check: Callable[[int, int], bool] | None = field(default=None, compare=False)


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
    data = context + role + x.to_bytes(n // 8 + 1, "little") + y.to_bytes(n // 4 + 1, "little")
    return _blake3(data).digest(16)


_blake3 = blake3.blake3


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
    return deal_many_triple_keys(keys, [(alice, bob, charlie, context)], params)[0]


def deal_many_triple_keys(
    keys: PairwiseKeySupply, ops: Sequence[tuple[int, int, int, bytes]], params: QdsParams
) -> list[TripleKeys]:
    """`deal_triple_keys` for many (alice, bob, charlie, context) at once: one draw per key pair.

    Each pair's bits are split among its operations in order, so every operation gets exactly the
    bits that one `deal_triple_keys` call per operation, in this order, would have drawn.
    """
    n = params.n
    chunk = 3 * n
    uses: dict[tuple[int, int], int] = {}
    for alice, bob, charlie, _ in ops:
        if alice in (bob, charlie) or bob == charlie:
            raise ValueError("a QDS triple needs three different nodes")
        pair = (alice, bob) if alice < bob else (bob, alice)
        uses[pair] = uses.get(pair, 0) + 1
        pair = (alice, charlie) if alice < charlie else (charlie, alice)
        uses[pair] = uses.get(pair, 0) + 1
    # drawn in whole bytes per operation, as separate takes of 3n bits would be
    step = 8 * ((chunk + 7) // 8)
    drawn = (
        {
            pair: keys.take(pair[0], pair[1], step * (count - 1) + chunk)
            for pair, count in uses.items()
        }
        if step == chunk
        else None
    )
    mask = (1 << n) - 1
    # each pair's draw as bytes, sliced per operation: shifting one big integer per operation would
    # copy the whole remaining draw every time (quadratic in a round's operations)
    raw = (
        None
        if drawn is None
        else {
            pair: (v.to_bytes(step // 8 * uses[pair], "little"), [0]) for pair, v in drawn.items()
        }
    )
    size = step // 8
    out = []
    for alice, bob, charlie, context in ops:
        if raw is None:
            kb, kc = keys.take(alice, bob, chunk), keys.take(alice, charlie, chunk)
        else:
            data, at = raw[(alice, bob) if alice < bob else (bob, alice)]
            kb = int.from_bytes(data[at[0] : at[0] + size], "little")
            at[0] += size
            data, at = raw[(alice, charlie) if alice < charlie else (charlie, alice)]
            kc = int.from_bytes(data[at[0] : at[0] + size], "little")
            at[0] += size
        xb, yb = kb & mask, kb >> n
        xc, yc = kc & mask, kc >> n
        out.append(
            TripleKeys(
                alice=SignerKeys(x=xb ^ xc, y=yb ^ yc),
                bob=VerifierKeys(x=xb, y=yb, partner_commitment=_commit(context, b"C", xc, yc, n)),
                charlie=VerifierKeys(
                    x=xc, y=yc, partner_commitment=_commit(context, b"B", xb, yb, n)
                ),
            )
        )
    return out


def doc_polynomial(doc: bytes) -> int:
    """The document as bits d_0..d_{m-1} (little-endian) plus a marker bit d_m = 1.

    The marker makes the map from byte strings injective: without it b"a" and b"a\\x00" would hash alike.
    """
    return int.from_bytes(doc, "little") | (1 << (8 * len(doc)))


def lfsr_toeplitz_hash(poly: int, key: int, doc: bytes, n: int) -> int:
    """Krawczyk's LFSR-based Toeplitz hash H·Doc (App. A.1), computed without building H.

    The register's bit sequence a_0, a_1, ... starts with the key (a_0 is the key's top bit) and
    continues by a_{t+n} = Σ c_i a_{t+i} (p = x^n + Σ c_i x^i); column j of H is the window
    W_j = (a_j, ..., a_{j+n−1}), a_j in the top bit, so H is Toeplitz. Three identities make it fast:
    1. H·Doc = Σ_j d_j W_j = D(T)·W_0 for the window map T, whose characteristic polynomial is p,
       so D(T) = R(T) with R = D mod p: only the windows W_0..W_{n−1} are needed.
    2. Those windows are the 2n−1 bits B = (key ≪ (n−1)) | E with E = ⌊(key·p mod x^n)·x^(n−1) / p⌋
       (the recurrence says B·p vanishes in degrees n..2n−2).
    3. Σ_i r_i W_i = ((B·R) ≫ (n−1)) mod x^n.
    Each division runs a byte at a time through one 256-entry table of multiples of p.
    """
    multiples = multiples_table(poly)
    _, r = divmod_bytes(doc_polynomial(doc), poly, multiples)
    low = 0
    shift = 0
    k = key
    while k:  # key·p, a byte of the key at a time
        low ^= multiples[k & 0xFF] << shift
        k >>= 8
        shift += 8
    mask = (1 << n) - 1
    e, _ = divmod_bytes((low & mask) << (n - 1), poly, multiples)
    b = (key << (n - 1)) | e
    nibbles = [0, b]
    for i in range(1, 4):
        shifted = b << i
        nibbles += [t ^ shifted for t in nibbles]
    h = 0
    shift = 0
    while r:
        h ^= nibbles[r & 15] << shift
        r >>= 4
        shift += 4
    return (h >> (n - 1)) & mask


# below this many hashes the vectorised path's fixed per-step numpy overhead costs more than it saves
BATCH_MIN = 16


def lfsr_toeplitz_hash_many(
    polys: Sequence[int], keys: Sequence[int], docs: Sequence[bytes], n: int
) -> list[int]:
    """lfsr_toeplitz_hash for many operations at once (a round of QBA verifies hundreds together)."""
    if len(polys) < BATCH_MIN or n % 64:
        return [lfsr_toeplitz_hash(p, k, d, n) for p, k, d in zip(polys, keys, docs, strict=True)]
    return ints_from_columns(hash_columns(ByteDivisor(polys, n), word_columns(keys, n // 64), docs))


def hash_columns(div: ByteDivisor, key_cols: np.ndarray, docs: Sequence[bytes]) -> np.ndarray:
    """The identities of `lfsr_toeplitz_hash`, a byte per step across all rows: (n/64, K) hash words.

    Byte-aligned throughout: with Q = ⌊(key·p mod x^n)·x^n / p⌋ = E·x + c (c one bit), B·x is
    key·x^n + (Q with its lowest bit cleared), and the hash is bits n .. 2n − 1 of (B·x)·R.
    """
    nb, nw, width = div.nb, div.nb // 8, div.width
    # 1. R = D mod p; D = doc bytes, then the marker byte 0x01 (doc_polynomial)
    top = max(nb, max(len(d) for d in docs) + 1)
    rem = bytes_columns([d + b"\x01" for d in docs], (top + 7) // 8 + width + 1)
    div.reduce(rem, top)
    # 2.-3. Q = ⌊(key·p mod x^n)·x^n / p⌋; b = B·x
    x = np.zeros((2 * nw + width + 1, div.count), dtype=np.uint64)
    x[nw : 2 * nw] = div.mul_low(key_cols)
    b = np.zeros((2 * nw, div.count), dtype=np.uint64)
    div.reduce(x, 2 * nb, quotient=b)
    b[0] &= ~np.uint64(1)
    b[nw:] = key_cols
    # 4. (B·x)·R, a byte of B·x at a time through R's multiples; keep words nw..2nw−1
    r_table = byte_multiples(np.vstack([rem[:nw], np.zeros((width - nw, div.count), np.uint64)]))
    acc = np.zeros((2 * nw + width + 1, div.count), dtype=np.uint64)
    ff = np.uint64(0xFF)
    for k in range(2 * nb):
        byte = (b[k // 8] >> np.uint64(8 * (k % 8))) & ff
        xor_at_byte(acc, np.take(r_table, div.index(byte), axis=1), k)
    return acc[nw : 2 * nw]


def lfsr_toeplitz_hash_reference(poly: int, key: int, doc: bytes, n: int) -> int:
    """The definition, step by step: all m+1 columns W_j of H, XORed where the document bit is 1."""
    d = doc_polynomial(doc)
    c = poly ^ (1 << n)
    taps = int(format(c, f"0{n}b")[::-1], 2)  # c_i sits under a_{j+i}, i.e. at bit n−1−i
    mask = (1 << n) - 1
    w = key
    h = 0
    for j in range(d.bit_length()):
        if (d >> j) & 1:
            h ^= w
        w = ((w << 1) & mask) | ((w & taps).bit_count() & 1)
    return h


def sign(doc: bytes, keys: SignerKeys, poly: int, params: QdsParams) -> QdsSignature:
    """Alice: Sig = (Hash ∥ p_a) ⊕ Y_a, Hash = H(p_a, X_a)·Doc (App. A.1 "Signing by Alice")."""
    n = params.n
    if degree(poly) != n:
        raise ValueError(f"p_a must have degree {n}")
    digest = lfsr_toeplitz_hash(poly, keys.x, doc, n) | ((poly ^ (1 << n)) << n)
    return QdsSignature(doc=doc, sig=digest ^ keys.y)


def sign_many(
    docs: Sequence[bytes], keys: Sequence[SignerKeys], polys: Sequence[int], params: QdsParams
) -> list[QdsSignature]:
    """`sign` for many operations, hashing them in one vectorised batch."""
    sigs = signature_ints(docs, keys, polys, params)
    return [QdsSignature(doc=d, sig=s) for d, s in zip(docs, sigs, strict=True)]


def signature_ints(
    docs: Sequence[bytes], keys: Sequence[SignerKeys], polys: Sequence[int], params: QdsParams
) -> list[int]:
    """The Sig values of `sign_many`, without wrapping each in a QdsSignature (QBA's hot path)."""
    n = params.n
    if any(p.bit_length() != n + 1 for p in polys):  # degree(p) != n
        raise ValueError(f"p_a must have degree {n}")
    top = 1 << n
    hashes = lfsr_toeplitz_hash_many(polys, [k.x for k in keys], docs, n)
    return [(h | ((p ^ top) << n)) ^ k.y for k, p, h in zip(keys, polys, hashes, strict=True)]


def check_many(items: Sequence[tuple[bytes, int, int, int]], params: QdsParams) -> list[QdsVerdict]:
    """The signature check of `bob_verify`/`charlie_verify` for many (doc, sig, K_X, K_Y) at once,
    after each verifier has already matched the revealed key bits against its commitment."""
    n = params.n
    polys, keys, docs, claims = [], [], [], []
    verdicts: list[QdsVerdict | None] = []
    for doc, sig, kx, ky in items:
        digest = sig ^ ky
        poly = (digest >> n) | (1 << n)
        if (
            digest >> (2 * n)
            or kx >> n  # K_X wider than n bits (or negative) would not fit the word columns
            or (params.check_irreducible and not is_irreducible(poly))
        ):
            verdicts.append(QdsVerdict.REJECT_SIGNATURE)
            continue
        verdicts.append(None)
        polys.append(poly)
        keys.append(kx)
        docs.append(doc)
        claims.append(digest & ((1 << n) - 1))
    hashes = iter(lfsr_toeplitz_hash_many(polys, keys, docs, n))
    claimed = iter(claims)
    return [
        v
        if v is not None
        else (QdsVerdict.ACCEPT if next(hashes) == next(claimed) else QdsVerdict.REJECT_SIGNATURE)
        for v in verdicts
    ]


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
    if digest >> (2 * n) or kx >> n:  # a Sig or K_X wider than A.1's 2n / n bits, or negative
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
    if not charlie_bits_match(revealed.x, revealed.y, own, params.n, context):
        return QdsVerdict.REJECT_KEYS
    return _check(signature.doc, signature.sig, own.x ^ revealed.x, own.y ^ revealed.y, params)


def revealed_keys_match(
    revealed: QdsKeyReveal, own: VerifierKeys, params: QdsParams, *, context: bytes = b""
) -> bool:
    """Bob's first check: do Charlie's revealed key bits match the commitment dealt to Bob?"""
    return charlie_bits_match(revealed.x, revealed.y, own, params.n, context)


def keys_match(
    forwarded: QdsForward, own: VerifierKeys, params: QdsParams, *, context: bytes = b""
) -> bool:
    """Charlie's first check: do Bob's forwarded key bits match the commitment dealt to Charlie?"""
    return bob_bits_match(forwarded.x, forwarded.y, own, params.n, context)


def charlie_bits_match(x: int, y: int, own: VerifierKeys, n: int, context: bytes) -> bool:
    """`revealed_keys_match` on bare key bits (QBA's hot path builds no QdsKeyReveal)."""
    if x >> n or y >> (2 * n):  # negative or wider than X (n bits), Y (2n bits): never dealt
        return False
    if own.partner_check is not None:
        return own.partner_check(x, y)
    return _commit(context, b"C", x, y, n) == own.partner_commitment


def bob_bits_match(x: int, y: int, own: VerifierKeys, n: int, context: bytes) -> bool:
    """`keys_match` on bare key bits (QBA's hot path builds no QdsForward)."""
    if x >> n or y >> (2 * n):  # as above: out-of-range bits cannot match (and overflow _commit)
        return False
    if own.partner_check is not None:
        return own.partner_check(x, y)
    return _commit(context, b"B", x, y, n) == own.partner_commitment


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
    "bob_bits_match",
    "bob_verify",
    "charlie_bits_match",
    "check_many",
    "charlie_verify",
    "deal_many_triple_keys",
    "deal_triple_keys",
    "doc_polynomial",
    "forward",
    "keys_match",
    "revealed_keys_match",
    "lfsr_toeplitz_hash",
    "lfsr_toeplitz_hash_many",
    "lfsr_toeplitz_hash_reference",
    "reveal",
    "run_qds_triple",
    "sign",
    "sign_many",
    "signature_ints",
]
