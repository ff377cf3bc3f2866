"""Quantum digital signatures (App. A.1): the fast hash equals the definition; verifiers accept and reject as specified."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbfl.crypto import gf2, qds
from qbfl.crypto.keysupply import SeededKeySupply

PARAMS = qds.QdsParams()
POLYS = [gf2.random_irreducible(128, random.Random(seed)) for seed in range(3)]


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(POLYS),
    st.integers(min_value=0, max_value=(1 << 128) - 1),
    st.binary(min_size=0, max_size=140),
)
def test_fast_hash_equals_the_matrix_definition(poly: int, key: int, doc: bytes) -> None:
    assert qds.lfsr_toeplitz_hash(poly, key, doc, 128) == qds.lfsr_toeplitz_hash_reference(
        poly, key, doc, 128
    )


def test_hash_matrix_is_toeplitz_with_lfsr_columns() -> None:
    # column j is H·e_j: window j of the register sequence, i.e. column j-1 shifted up one bit plus
    # one new bit at the bottom (a_j is the top bit of window j)
    poly, key = POLYS[0], random.Random(4).getrandbits(128)
    cols = []
    for j in range(20):
        doc_bits = 1 << j
        cols.append(
            qds.lfsr_toeplitz_hash_reference(poly, key, doc_bits.to_bytes(3, "little"), 128)
            ^ qds.lfsr_toeplitz_hash_reference(poly, key, bytes(3), 128)
        )
    assert cols[0] == key
    for j in range(1, 20):
        assert cols[j] >> 1 == cols[j - 1] & ((1 << 127) - 1)


def _dealt(seed: int = 0) -> tuple[qds.TripleKeys, SeededKeySupply]:
    keys = SeededKeySupply(seed)
    return qds.deal_triple_keys(keys, alice=0, bob=1, charlie=2, params=PARAMS), keys


def test_honest_signature_is_accepted_by_bob_and_charlie() -> None:
    for m in (1, 63, 125):
        doc = random.Random(m).randbytes(m)
        result = qds.run_qds_triple(
            doc, SeededKeySupply(m), alice=0, bob=1, charlie=2, poly=POLYS[1]
        )
        assert result == qds.QdsTripleResult(qds.QdsVerdict.ACCEPT, qds.QdsVerdict.ACCEPT)


def test_keys_are_consumed_and_metered() -> None:
    dealt, keys = _dealt()
    assert keys.consumed_bits() == PARAMS.key_bits_per_operation == 768
    again = qds.deal_triple_keys(keys, alice=0, bob=1, charlie=2, params=PARAMS)
    assert again != dealt  # one-time: the next operation gets fresh bits
    assert dealt.alice.x == dealt.bob.x ^ dealt.charlie.x
    assert dealt.alice.y == dealt.bob.y ^ dealt.charlie.y


def test_every_flipped_bit_of_doc_or_sig_is_rejected() -> None:
    dealt, _ = _dealt(1)
    doc = random.Random(9).randbytes(20)
    sig = qds.sign(doc, dealt.alice, POLYS[2], PARAMS)
    reveal = qds.reveal(dealt.charlie)
    assert qds.bob_verify(sig, dealt.bob, reveal, PARAMS) is qds.QdsVerdict.ACCEPT
    for bit in range(8 * len(doc)):
        flipped = (int.from_bytes(doc, "little") ^ (1 << bit)).to_bytes(len(doc), "little")
        bad = dataclasses.replace(sig, doc=flipped)
        assert qds.bob_verify(bad, dealt.bob, reveal, PARAMS) is qds.QdsVerdict.REJECT_SIGNATURE
        fwd = qds.forward(bad, dealt.bob)
        assert qds.charlie_verify(fwd, dealt.charlie, PARAMS) is qds.QdsVerdict.REJECT_SIGNATURE
    for bit in range(2 * PARAMS.n):
        bad = dataclasses.replace(sig, sig=sig.sig ^ (1 << bit))
        assert qds.bob_verify(bad, dealt.bob, reveal, PARAMS) is qds.QdsVerdict.REJECT_SIGNATURE
    # appending a zero byte changes the document: the marker bit keeps that from verifying
    longer = dataclasses.replace(sig, doc=doc + b"\x00")
    assert qds.bob_verify(longer, dealt.bob, reveal, PARAMS) is qds.QdsVerdict.REJECT_SIGNATURE


def test_wrong_revealed_keys_are_provable() -> None:
    dealt, _ = _dealt(2)
    sig = qds.sign(b"value", dealt.alice, POLYS[0], PARAMS)
    lie = qds.QdsKeyReveal(x=dealt.charlie.x ^ 1, y=dealt.charlie.y)
    assert qds.bob_verify(sig, dealt.bob, lie, PARAMS) is qds.QdsVerdict.REJECT_KEYS
    fwd = dataclasses.replace(qds.forward(sig, dealt.bob), y=dealt.bob.y ^ 4)
    assert qds.charlie_verify(fwd, dealt.charlie, PARAMS) is qds.QdsVerdict.REJECT_KEYS


def test_a_signer_cannot_make_bob_accept_while_charlie_rejects() -> None:
    """Whatever Alice sends, honest Bob's and honest Charlie's checks are the same function of the same inputs.

    Bob checks (Doc, Sig) with K = own ⊕ Charlie's revealed half; Charlie checks what Bob forwarded —
    the same (Doc, Sig) — with K = own ⊕ Bob's forwarded half: the same K. So a dishonest Alice,
    whatever keys or polynomial she uses, gets equal verdicts. Tried here with wrong key halves,
    a reducible polynomial, random signatures and mismatched X/Y.
    """
    rng = random.Random(7)
    for trial in range(200):
        dealt, _ = _dealt(100 + trial)
        doc = rng.randbytes(rng.randrange(1, 40))
        choice = trial % 4
        if choice == 0:  # Alice signs with a key that differs from X_b ⊕ X_c in a few bits
            alice = qds.SignerKeys(x=dealt.alice.x ^ rng.getrandbits(3), y=dealt.alice.y)
            sig = qds.sign(doc, alice, POLYS[trial % 3], PARAMS)
        elif choice == 1:  # a reducible polynomial
            reducible = gf2.clmul((1 << 64) | 0b11011, (1 << 64) | 0b11011)
            sig = qds.sign(doc, dealt.alice, reducible, PARAMS)
        elif choice == 2:  # random signature bits
            sig = qds.QdsSignature(doc=doc, sig=rng.getrandbits(256))
        else:  # honest
            sig = qds.sign(doc, dealt.alice, POLYS[trial % 3], PARAMS)
        bob = qds.bob_verify(sig, dealt.bob, qds.reveal(dealt.charlie), PARAMS)
        charlie = qds.charlie_verify(qds.forward(sig, dealt.bob), dealt.charlie, PARAMS)
        assert bob is charlie
        if choice == 3 or choice == 1:
            assert bob is qds.QdsVerdict.ACCEPT


def test_irreducibility_check_rejects_reducible_polynomials_when_enabled() -> None:
    strict = qds.QdsParams(check_irreducible=True)
    dealt, _ = _dealt(3)
    reducible = gf2.clmul((1 << 64) | 0b11011, (1 << 64) | 0b11011)
    sig = qds.sign(b"doc", dealt.alice, reducible, strict)
    reveal = qds.reveal(dealt.charlie)
    assert qds.bob_verify(sig, dealt.bob, reveal, strict) is qds.QdsVerdict.REJECT_SIGNATURE
    assert qds.bob_verify(sig, dealt.bob, reveal, PARAMS) is qds.QdsVerdict.ACCEPT
    good = qds.sign(b"doc", dealt.alice, POLYS[0], strict)
    assert qds.bob_verify(good, dealt.bob, reveal, strict) is qds.QdsVerdict.ACCEPT


def test_sign_rejects_a_polynomial_of_the_wrong_degree() -> None:
    dealt, _ = _dealt()
    with pytest.raises(ValueError):
        qds.sign(b"x", dealt.alice, (1 << 64) | 0b11011, PARAMS)


@pytest.mark.parametrize("n", [64, 128])
def test_vectorised_hash_sign_and_check_equal_the_scalar_ones(n: int) -> None:
    rng = random.Random(n)
    polys = [gf2.random_irreducible(n, random.Random(s)) for s in range(5)]
    count = qds.BATCH_MIN + 30
    p = [rng.choice(polys) for _ in range(count)]
    k = [rng.getrandbits(n) for _ in range(count)]
    d = [rng.randbytes(rng.choice([0, 1, 63, 125])) for _ in range(count)]
    assert qds.lfsr_toeplitz_hash_many(p, k, d, n) == [
        qds.lfsr_toeplitz_hash(*args, n) for args in zip(p, k, d, strict=True)
    ]
    params = qds.QdsParams(n=n)
    signer = [qds.SignerKeys(x=x, y=rng.getrandbits(2 * n)) for x in k]
    sigs = qds.sign_many(d, signer, p, params)
    assert sigs == [qds.sign(*args, params) for args in zip(d, signer, p, strict=True)]
    items = [
        (s.doc, s.sig ^ (i % 3 == 0), key.x, key.y)
        for i, (s, key) in enumerate(zip(sigs, signer, strict=True))
    ]
    verdicts = qds.check_many(items, params)
    assert verdicts == [
        qds.QdsVerdict.REJECT_SIGNATURE if i % 3 == 0 else qds.QdsVerdict.ACCEPT
        for i in range(count)
    ]


def test_batched_dealing_draws_the_same_bits_as_one_call_per_operation() -> None:
    rng = random.Random(3)
    ops = []
    for i in range(40):
        a, b, c = rng.sample(range(5), 3)
        ops.append((a, b, c, f"op{i}".encode()))
    one, many = SeededKeySupply(8), SeededKeySupply(8)
    singly = [
        qds.deal_triple_keys(one, alice=a, bob=b, charlie=c, params=PARAMS, context=ctx)
        for a, b, c, ctx in ops
    ]
    assert qds.deal_many_triple_keys(many, ops, PARAMS) == singly
    assert many.consumed_bits() == one.consumed_bits() == 40 * 768
    with pytest.raises(ValueError):
        qds.deal_many_triple_keys(many, [(1, 1, 2, b"")], PARAMS)


def test_key_bits_wider_than_the_keys_never_match_and_never_overflow() -> None:
    """Issue 10: x or y ≥ 2^136 (n = 128) raised OverflowError from the commitment's encoding."""
    dealt = qds.deal_triple_keys(
        SeededKeySupply(0), alice=0, bob=1, charlie=2, params=PARAMS, context=b"op"
    )
    c, b = dealt.charlie, dealt.bob
    assert qds.charlie_bits_match(c.x, c.y, b, 128, b"op")
    assert qds.bob_bits_match(b.x, b.y, c, 128, b"op")
    for x, y in [(1 << 136, c.y), (c.x, 1 << 300), (c.x | 1 << 128, c.y), (-1, c.y), (c.x, -5)]:
        assert not qds.charlie_bits_match(x, y, b, 128, b"op")
        assert not qds.bob_bits_match(x, y, c, 128, b"op")
        verdict = qds.bob_verify(
            qds.QdsSignature(b"d", 0), b, qds.QdsKeyReveal(x, y), PARAMS, context=b"op"
        )
        assert verdict is qds.QdsVerdict.REJECT_KEYS
    # a K_X wider than n bits is no key: rejected on the scalar and the vectorised path alike
    items = [(b"d", 5, 1 << 130, 7)] * qds.BATCH_MIN
    assert set(qds.check_many(items, PARAMS)) == {qds.QdsVerdict.REJECT_SIGNATURE}
    assert set(qds.check_many(items[:1], PARAMS)) == {qds.QdsVerdict.REJECT_SIGNATURE}
