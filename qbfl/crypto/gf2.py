"""GF(2) polynomials as Python ints (bit i = coefficient of x^i): products, remainders, irreducibility, a pool."""

from __future__ import annotations

import random
from collections.abc import Iterable
from functools import lru_cache
from typing import Protocol

from qbfl.errors import QbflError


class PolynomialPoolExhausted(QbflError):
    """The offline-prepared pool of irreducible polynomials is empty; call `prepare(count)` first."""


# byte -> the same bits spread to even positions (squaring in GF(2)[x] is exactly this spread)
_SPREAD = tuple(sum(((b >> i) & 1) << (2 * i) for i in range(8)) for b in range(256))
_SPREAD_BYTES = tuple(s.to_bytes(2, "little") for s in _SPREAD)


def degree(p: int) -> int:
    """Degree of p; -1 for the zero polynomial."""
    return p.bit_length() - 1


def clmul(a: int, b: int) -> int:
    """Carry-less product a·b in GF(2)[x], four bits of b at a time."""
    if a.bit_length() < b.bit_length():
        a, b = b, a
    if b < 16:
        return _clmul_small(a, b)
    table = [0] * 16
    table[1] = a
    for i in range(2, 16):
        table[i] = (table[i >> 1] << 1) ^ (a if i & 1 else 0)
    result = 0
    shift = 0
    while b:
        result ^= table[b & 15] << shift
        b >>= 4
        shift += 4
    return result


def _clmul_small(a: int, b: int) -> int:
    result = 0
    i = 0
    while b:
        if b & 1:
            result ^= a << i
        b >>= 1
        i += 1
    return result


def square(a: int) -> int:
    """a² in GF(2)[x]: cross terms cancel, so each bit i moves to 2i."""
    data = a.to_bytes((a.bit_length() + 7) // 8, "little")
    return int.from_bytes(b"".join(map(_SPREAD_BYTES.__getitem__, data)), "little")


def poly_mod(a: int, p: int) -> int:
    """Remainder of a divided by p (p ≠ 0), bit by bit: the reference every faster path is tested against."""
    dp = p.bit_length()
    if dp == 0:
        raise ZeroDivisionError("division by the zero polynomial")
    da = a.bit_length()
    while da >= dp:
        a ^= p << (da - dp)
        da = a.bit_length()
    return a


def poly_gcd(a: int, b: int) -> int:
    """Greatest common divisor (monic, as every nonzero GF(2) polynomial is)."""
    while b:
        a, b = b, poly_mod(a, b)
    return a


def multiples_table(p: int) -> list[int]:
    """The 256 products q·p for every byte q, built by doubling (eight list comprehensions)."""
    table = [0, p]
    for i in range(1, 8):
        shifted = p << i
        table += [t ^ shifted for t in table]
    return table


@lru_cache(maxsize=128)
def quotient_table(top8: int) -> tuple[int, ...]:
    """For a divisor whose eight leading bits are `top8`: leading byte of the dividend → quotient byte.

    The leading byte of q·p depends only on q and p's leading byte, so one table per leading byte
    (128 of them: the top bit is 1) serves every divisor.
    """
    table = [0] * 256
    for q in range(256):
        table[_clmul_small(q, top8) >> 7] = q
    return tuple(table)


def divmod_bytes(a: int, p: int, multiples: list[int]) -> tuple[int, int]:
    """(a div p, a mod p), eight quotient bits per step; `multiples` = multiples_table(p)."""
    n = p.bit_length() - 1
    quotients = quotient_table(p >> (n - 7))
    s = ((a.bit_length() - n - 1) // 8) * 8
    q = 0
    while s >= 0:
        t = a >> (s + n)
        if t:
            qb = quotients[t]
            a ^= multiples[qb] << s
            q |= qb << s
        s -= 8
    return q, a


class Modulus:
    """Arithmetic modulo one fixed p: products of degree < 2n fold back through byte tables.

    For each byte position k of the part above degree n−1 a 256-entry table holds t·x^(n+8k) mod p,
    so one reduction is ⌈n/8⌉ lookups and XORs. Building costs ~n·32 XORs: it pays off over the n
    squarings of Rabin's test and is never built for a candidate the sieve already rejected.
    """

    __slots__ = ("p", "n", "_mask", "_tables", "_nbytes")

    def __init__(self, p: int) -> None:
        n = degree(p)
        if n < 8:
            raise ValueError("Modulus needs a polynomial of degree >= 8")
        self.p = p
        self.n = n
        self._mask = (1 << n) - 1
        self._nbytes = (n + 7) // 8
        tables: list[list[int]] = []
        f = p & self._mask  # x^n mod p
        for _ in range(self._nbytes):
            folds = []
            for _ in range(8):
                folds.append(f)
                f <<= 1
                if f >> n:
                    f ^= p
            table = [0] * 256
            for t in range(1, 256):
                lowbit = t & -t
                table[t] = table[t ^ lowbit] ^ folds[lowbit.bit_length() - 1]
            tables.append(table)
        self._tables = tables

    def reduce(self, a: int) -> int:
        """a mod p for any a of degree < 2n."""
        n = self.n
        hi = a >> n
        if not hi:
            return a
        if hi.bit_length() > 8 * self._nbytes:
            raise ValueError("Modulus.reduce handles degrees below 2n only")
        r = a & self._mask
        for table, byte in zip(self._tables, hi.to_bytes(self._nbytes, "little"), strict=True):
            r ^= table[byte]
        return r

    def square(self, a: int) -> int:
        return self.reduce(square(a))

    def mul(self, a: int, b: int) -> int:
        return self.reduce(clmul(a, b))


# irreducible factors up to this degree are found by gcd before Rabin's exponentiation
SIEVE_DEGREE = 6


def _primes_dividing(n: int) -> list[int]:
    primes = []
    q = 2
    while q * q <= n:
        if n % q == 0:
            primes.append(q)
            while n % q == 0:
                n //= q
        q += 1
    if n > 1:
        primes.append(n)
    return primes


@lru_cache(maxsize=1)
def _small_factor_products() -> tuple[int, ...]:
    """Products of all irreducibles of degree ≤ SIEVE_DEGREE (x excluded), grouped into products of ≤ ~64 bits.

    x^(2^d) − x is the product of every irreducible whose degree divides d; dividing out the lower
    degrees leaves those of degree exactly d. A gcd with these rejects ~80 % of random candidates
    before the expensive exponentiation.
    """
    exact: dict[int, int] = {}
    for d in range(1, SIEVE_DEGREE + 1):
        q = (1 << (1 << d)) ^ 0b10  # x^(2^d) + x
        for e, prod in exact.items():
            if d % e == 0:
                while poly_mod(q, prod) == 0:
                    q = _poly_div(q, prod)
        exact[d] = q
    exact[1] = 0b11  # x + 1 only: candidates always have constant term 1
    groups: list[int] = []
    current = 1
    for d in range(1, SIEVE_DEGREE + 1):
        if degree(current) + degree(exact[d]) > 64 and current != 1:
            groups.append(current)
            current = 1
        current = clmul(current, exact[d])
    groups.append(current)
    return tuple(groups)


def _poly_div(a: int, p: int) -> int:
    q = 0
    dp = degree(p)
    da = degree(a)
    while da >= dp:
        q |= 1 << (da - dp)
        a ^= p << (da - dp)
        da = degree(a)
    return q


def has_small_factor(p: int) -> bool:
    """True when p (of degree > SIEVE_DEGREE) has an irreducible factor of degree ≤ SIEVE_DEGREE."""
    return any(poly_gcd(p, prod) != 1 for prod in _small_factor_products())


def is_irreducible(p: int) -> bool:
    """Rabin's test, after a cheap gcd sieve against all irreducibles of degree ≤ SIEVE_DEGREE.

    p of degree n is irreducible iff x^(2^n) ≡ x (mod p) and gcd(x^(2^(n/q)) − x, p) = 1 for every
    prime q | n (Rabin 1980). Ben-Or's test (gcd at every i ≤ n/2) aborts early on reducible inputs;
    here the sieve does that job for the common small factors and Rabin needs only one gcd per
    prime of n (n = 128: one).
    """
    n = degree(p)
    if n <= 0:
        return False
    if n == 1:
        return True
    if not p & 1:
        return False  # x divides p
    if n <= 2 * SIEVE_DEGREE:
        return _is_irreducible_by_trial(p)
    if has_small_factor(p):
        return False
    mod = Modulus(p)
    # x^(2^k) mod p for k = 1..n, remembering the ones Rabin's gcd step needs
    wanted = {n // q for q in _primes_dividing(n)}
    u = 0b10
    powers: dict[int, int] = {}
    for k in range(1, n + 1):
        u = mod.square(u)
        if k in wanted:
            powers[k] = u
    if u != 0b10:
        return False
    return all(poly_gcd(p, powers[k] ^ 0b10) == 1 for k in wanted)


def _is_irreducible_by_trial(p: int) -> bool:
    n = degree(p)
    return all(poly_mod(p, d) != 0 for d in range(2, 1 << (n // 2 + 1)))


def random_irreducible(n: int, rng: random.Random) -> int:
    """A uniformly random monic irreducible polynomial of degree n drawn from `rng`.

    Candidates are monic with constant term 1 (x never divides an irreducible of degree > 1), so
    rejection sampling needs ~n/2 candidates; the gcd sieve rejects most of them in microseconds.
    """
    if n < 2:
        raise ValueError("degree must be at least 2")
    top = 1 << n
    while True:
        candidate = top | rng.getrandbits(n) | 1
        if is_irreducible(candidate):
            return candidate


class PolynomialSource(Protocol):
    """Where a QDS signer gets its next irreducible degree-n polynomial p_a."""

    n: int

    def take(self) -> int: ...


class PolynomialPool:
    """Irreducible degree-n polynomials prepared offline, each handed out once (one-time, like QKD keys).

    DESIGN §6: drawing a polynomial costs milliseconds in Python, so QDS signers take them from a pool
    filled ahead; `prepare` is the offline step and is metered apart from `take`, the online one.
    """

    def __init__(self, n: int = 128, *, rng: random.Random) -> None:
        if n < 2:
            raise ValueError("degree must be at least 2")
        self.n = n
        self._rng = rng
        self._ready: list[int] = []
        self.prepared = 0
        self.taken = 0

    def prepare(self, count: int) -> None:
        """Offline: draw `count` fresh irreducible polynomials into the pool."""
        if count < 0:
            raise ValueError("count must be non-negative")
        if self.n % 64 == 0 and count > 1:
            # numpy-batched sieve and Rabin test (gf2_columns imports this module, hence here)
            from qbfl.crypto.gf2_columns import random_irreducibles

            self._ready.extend(random_irreducibles(self.n, count, self._rng))
        else:
            self._ready.extend(random_irreducible(self.n, self._rng) for _ in range(count))
        self.prepared += count

    def add(self, polys: Iterable[int]) -> None:
        """Offline: put polynomials prepared elsewhere (e.g. in another process) into the pool."""
        new = list(polys)
        if any(degree(q) != self.n for q in new):
            raise ValueError(f"every polynomial must have degree {self.n}")
        self._ready.extend(new)
        self.prepared += len(new)

    def take(self) -> int:
        """Online: the next unused polynomial; raises PolynomialPoolExhausted when none is left."""
        if not self._ready:
            raise PolynomialPoolExhausted(
                f"no prepared degree-{self.n} polynomial left after {self.taken} taken; "
                "call PolynomialPool.prepare(count) before the protocol runs"
            )
        self.taken += 1
        return self._ready.pop()

    def __len__(self) -> int:
        return len(self._ready)


class CyclicPolynomialSource:
    """Reuses a fixed list of irreducible polynomials round-robin.

    NOT one-time and therefore not secure: it exists so that tests and online-time benchmarks do not
    spend seconds preparing polynomials whose values do not change the code path measured.
    """

    def __init__(self, polys: Iterable[int]) -> None:
        self._polys = list(polys)
        if not self._polys:
            raise ValueError("need at least one polynomial")
        degrees = {degree(q) for q in self._polys}
        if len(degrees) != 1:
            raise ValueError("all polynomials must have one degree")
        self.n = degrees.pop()
        self._next = 0
        self.taken = 0

    def take(self) -> int:
        q = self._polys[self._next]
        self._next = (self._next + 1) % len(self._polys)
        self.taken += 1
        return q
