"""GF(2) polynomial arithmetic: irreducibility against known polynomials and a brute-force reference."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbfl.crypto import gf2, gf2_columns

# x^128 + x^7 + x^2 + x + 1 (the GCM polynomial) and x^64 + x^4 + x^3 + x + 1 are irreducible
GCM = (1 << 128) | 0b10000111
X64 = (1 << 64) | 0b11011


def brute_force_irreducible(p: int) -> bool:
    """Trial division by every polynomial of degree 1..deg/2: the slow reference."""
    n = gf2.degree(p)
    if n < 1:
        return False
    return all(gf2.poly_mod(p, d) != 0 for d in range(2, 1 << (n // 2 + 1)))


def test_known_irreducible_polynomials() -> None:
    assert gf2.is_irreducible(GCM)
    assert gf2.is_irreducible(X64)
    assert gf2.is_irreducible(0b111)  # x^2 + x + 1


def test_known_reducible_polynomials() -> None:
    assert not gf2.is_irreducible(GCM ^ 0b10)  # x^128 + x^7 + x^2 + 1 has root 1
    assert not gf2.is_irreducible(gf2.clmul(X64, X64))  # a square
    assert not gf2.is_irreducible(1 << 128)  # x^128
    # product of two degree-64 irreducibles: passes the small-factor sieve, caught by Rabin's test
    other = gf2.random_irreducible(64, random.Random(5))
    assert other != X64
    assert not gf2.is_irreducible(gf2.clmul(X64, other))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=2, max_value=(1 << 21) - 1))
def test_irreducibility_agrees_with_brute_force(p: int) -> None:
    assert gf2.is_irreducible(p) == brute_force_irreducible(p)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=(1 << 300) - 1),
    st.integers(min_value=0, max_value=(1 << 140) - 1),
)
def test_clmul_square_and_modulus_agree_with_bitwise(a: int, b: int) -> None:
    assert gf2.clmul(a, b) == gf2._clmul_small(a, b)
    assert gf2.square(b) == gf2._clmul_small(b, b)
    mod = gf2.Modulus(GCM)
    product = gf2.clmul(b % (1 << 128), a % (1 << 128))
    assert mod.reduce(product) == gf2.poly_mod(product, GCM)


def test_random_irreducible_is_seeded_and_irreducible() -> None:
    a = [gf2.random_irreducible(128, random.Random(11)) for _ in range(2)]
    assert a[0] == a[1]
    assert gf2.degree(a[0]) == 128 and gf2.is_irreducible(a[0])
    small = gf2.random_irreducible(16, random.Random(3))
    assert brute_force_irreducible(small)
    assert gf2.random_irreducible(128, random.Random(12)) != a[0]


def test_pool_is_one_time_metered_and_fails_clearly_when_empty() -> None:
    pool = gf2.PolynomialPool(32, rng=random.Random(1))
    pool.prepare(3)
    taken = {pool.take() for _ in range(3)}
    assert len(taken) == 3 and all(gf2.is_irreducible(q) for q in taken)
    assert (pool.prepared, pool.taken, len(pool)) == (3, 3, 0)
    with pytest.raises(gf2.PolynomialPoolExhausted, match="prepare"):
        pool.take()
    with pytest.raises(ValueError):
        pool.add([GCM])  # wrong degree for a degree-32 pool


def test_cyclic_source_reuses_in_order() -> None:
    source = gf2.CyclicPolynomialSource([GCM, GCM ^ (1 << 3) ^ (1 << 9)])
    assert [source.take() for _ in range(3)] == [GCM, GCM ^ (1 << 3) ^ (1 << 9), GCM]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=(1 << 1100) - 1),
    st.sampled_from([GCM, X64, (1 << 9) | 0b11]),
)
def test_byte_division_agrees_with_bitwise(a: int, p: int) -> None:
    q, r = gf2.divmod_bytes(a, p, gf2.multiples_table(p))
    assert r == gf2.poly_mod(a, p)
    assert gf2.clmul(q, p) ^ r == a


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=(1 << 64) - 1), min_size=1, max_size=40))
def test_batched_sieve_and_rabin_agree_with_the_scalar_test(lows: list[int]) -> None:
    # degree-64 candidates, plus products of two degree-32 irreducibles: those pass the sieve and
    # x^(2^64) ≡ x, so only Rabin's gcd step rejects them
    rng = random.Random(len(lows))
    halves = [gf2.random_irreducible(32, rng) for _ in range(2)]
    polys = [(1 << 64) | v | 1 for v in lows] + [gf2.clmul(*halves), X64]
    assert gf2_columns.sieve_small_factors(polys, 64) == [
        not gf2.has_small_factor(p) for p in polys
    ]
    assert gf2_columns.irreducible_flags(polys, 64) == [gf2.is_irreducible(p) for p in polys]


def test_batched_generation_is_seeded_and_starts_like_the_scalar_stream() -> None:
    batch = gf2_columns.random_irreducibles(128, 6, random.Random(11))
    assert batch == gf2_columns.random_irreducibles(128, 6, random.Random(11))
    assert batch[0] == gf2.random_irreducible(128, random.Random(11))
    assert len(set(batch)) == 6 and all(gf2.is_irreducible(p) for p in batch)
    pool = gf2.PolynomialPool(128, rng=random.Random(4))
    pool.prepare(5)
    assert pool.prepared == len(pool) == 5
