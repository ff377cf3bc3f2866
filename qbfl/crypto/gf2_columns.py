"""GF(2) polynomial arithmetic on many polynomials at once (numpy, word-major): hashing and irreducibility."""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from qbfl.crypto.gf2 import (
    _SPREAD,
    SIEVE_DEGREE,
    _is_irreducible_by_trial,
    _primes_dividing,
    is_irreducible,
    poly_gcd,
    poly_mod,
    quotient_table,
)

# ---- word-major columns ----
# Word-major layout: a batch of K polynomials is a (words, K) uint64 array, word w of every row
# contiguous, so each step is a few ufuncs over K contiguous values. Degrees that are multiples of 8
# let a division eat one byte of quotient per step through per-row tables of 256 multiples.


def word_columns(values: Sequence[int], words: int) -> np.ndarray:
    """(words, len(values)) uint64: value r's little-endian words in column r."""
    raw = b"".join(v.to_bytes(8 * words, "little") for v in values)
    return np.frombuffer(raw, dtype="<u8").reshape(len(values), words).T.copy()


def bytes_columns(data: Sequence[bytes], words: int) -> np.ndarray:
    """(words, len(data)) uint64 from byte strings of at most 8·words bytes (zero-padded)."""
    raw = b"".join(d + bytes(8 * words - len(d)) for d in data)
    return np.frombuffer(raw, dtype="<u8").reshape(len(data), words).T.copy()


def ints_from_columns(cols: np.ndarray) -> list[int]:
    raw = np.ascontiguousarray(cols.T, dtype="<u8").tobytes()
    step = 8 * cols.shape[0]
    return [int.from_bytes(raw[i : i + step], "little") for i in range(0, len(raw), step)]


def byte_multiples(cols: np.ndarray) -> np.ndarray:
    """out[w, q·K + r] = word w of q·cols[:, r] (carry-less) for every byte q.

    Every column's degree must stay below 64·words − 7. Built by doubling: entries [2^i, 2^(i+1))
    are entries [0, 2^i) XOR column·x^i, one contiguous block per step.
    """
    words, k = cols.shape
    table = np.empty((words, 256, k), dtype=np.uint64)
    table[:, 0] = 0
    table[:, 1] = cols
    size = 2
    for bit in range(1, 8):
        shifted = cols << np.uint64(bit)
        shifted[1:] |= cols[:-1] >> np.uint64(64 - bit)
        np.bitwise_xor(table[:, :size], shifted[:, None, :], out=table[:, size : 2 * size])
        size *= 2
    return table.reshape(words, 256 * k)


def xor_at_byte(cols: np.ndarray, value: np.ndarray, offset: int) -> None:
    """cols ^= value · x^(8·offset), in place (value: (w, K) words)."""
    wo, sh = divmod(offset, 8)
    w = value.shape[0]
    if sh == 0:
        cols[wo : wo + w] ^= value
        return
    cols[wo : wo + w] ^= value << np.uint64(8 * sh)
    cols[wo + 1 : wo + 1 + w] ^= value >> np.uint64(64 - 8 * sh)


@lru_cache(maxsize=1)
def byte_quotient_table() -> np.ndarray:
    """(256, 256) int64: [divisor's eight leading bits, dividend's leading byte] → quotient byte."""
    table = np.zeros((256, 256), dtype=np.int64)
    for top in range(128, 256):
        table[top] = quotient_table(top)
    return table


class ByteDivisor:
    """K divisors p_r of one degree n (a multiple of 8) for word-major columns: reduce, multiply.

    Holds each p_r's 256 byte multiples and its leading-byte → quotient lookup, as table indices.
    """

    def __init__(self, polys: Sequence[int], n: int) -> None:
        if n % 8 or n < 8:
            raise ValueError("byte-aligned division needs a degree that is a multiple of 8")
        self.n = n
        self.nb = n // 8
        self.count = k = len(polys)
        self.width = (self.nb + 8) // 8  # a byte multiple of p has nb + 1 bytes
        self.table = byte_multiples(word_columns(polys, self.width))
        self.rows = np.arange(k, dtype=np.intp)
        # each row's offset into the shared quotient table (one row of 256 per leading divisor byte)
        self.top = np.array([p >> (n - 7) for p in polys], dtype=np.int64) * 256
        self.quot = byte_quotient_table().reshape(-1)

    def index(self, byte_values: np.ndarray) -> np.ndarray:
        """Table indices of byte_values[r]·(row r) for any table built by byte_multiples over K rows."""
        return byte_values.astype(np.intp) * self.count + self.rows

    def reduce(self, cols: np.ndarray, top: int, quotient: np.ndarray | None = None) -> None:
        """In place: cols := cols mod p_r for dividends whose bytes lie below byte `top`.

        cols needs `width` words of room above byte top − nb − 1; quotient bytes are XORed into
        `quotient` (zeroed words) when given.
        """
        nb, table, quot, rows, k = self.nb, self.table, self.quot, self.rows, self.count
        signed = cols.view(np.int64)  # int64 lanes: index arithmetic stays integer
        for j in range(top - 1, nb - 1, -1):
            lead = (signed[j // 8] >> (8 * (j % 8))) & 0xFF
            q = np.take(quot, self.top + lead)
            xor_at_byte(cols, np.take(table, q * k + rows, axis=1), j - nb)
            if quotient is not None:
                s = j - nb
                quotient[s // 8] |= q.astype(np.uint64) << np.uint64(8 * (s % 8))

    def mul_low(self, cols: np.ndarray) -> np.ndarray:
        """cols_r · p_r mod x^n for (nb/8-word, K) columns; n must be a multiple of 64."""
        nw = self.nb // 8
        acc = np.zeros((nw + self.width + 1, self.count), dtype=np.uint64)
        ff = np.uint64(0xFF)
        for k in range(self.nb):
            byte = (cols[k // 8] >> np.uint64(8 * (k % 8))) & ff
            xor_at_byte(acc, np.take(self.table, self.index(byte), axis=1), k)
        return acc[:nw].copy()


# ---- batched irreducibility: a sieve by table lookups, then Rabin's test with squarings in lock-step ----


@lru_cache(maxsize=1)
def _small_irreducibles() -> tuple[int, ...]:
    """Every irreducible of degree 1..SIEVE_DEGREE except x (candidates have constant term 1)."""
    return tuple(
        q for q in range(3, 1 << (SIEVE_DEGREE + 1)) if q & 1 and _is_irreducible_by_trial(q)
    )


@lru_cache(maxsize=8)
def _sieve_table(nbytes: int) -> np.ndarray:
    """Flat [((q·nbytes) + j)·256 + b] = (b·x^(8j)) mod small irreducible q: p mod q is a XOR of lookups."""
    smalls = _small_irreducibles()
    table = np.zeros((len(smalls), nbytes, 256), dtype=np.uint8)
    for a, q in enumerate(smalls):
        for j in range(nbytes):
            bits = [poly_mod(1 << (8 * j + i), q) for i in range(8)]
            entries = [0]
            for b in bits:
                entries += [e ^ b for e in entries]
            table[a, j] = entries
    return table.reshape(-1)


def sieve_small_factors(candidates: Sequence[int], n: int) -> list[bool]:
    """For each candidate of degree n: True when no irreducible of degree ≤ SIEVE_DEGREE divides it."""
    nbytes = n // 8 + 1
    rows = np.frombuffer(
        b"".join(c.to_bytes(nbytes, "little") for c in candidates), dtype=np.uint8
    ).reshape(len(candidates), nbytes)
    count = len(_small_irreducibles())
    offsets = (np.arange(count)[:, None] * nbytes + np.arange(nbytes)[None, :]) * 256
    residues = np.bitwise_xor.reduce(_sieve_table(nbytes)[offsets[None] + rows[:, None, :]], axis=2)
    return (residues != 0).all(axis=1).tolist()


_SPREAD16 = np.array(_SPREAD, dtype=np.uint16)


def _square_columns(cols: np.ndarray, div: ByteDivisor) -> np.ndarray:
    """cols_r² mod p_r for (n/64, K) columns: squaring spreads bit i to 2i, then a byte division."""
    nw, k = cols.shape
    spread = _SPREAD16[np.ascontiguousarray(cols).view(np.uint8)].view(np.uint64)  # (nw, 2K)
    wide = np.zeros((2 * nw + div.width + 1, k), dtype=np.uint64)
    wide[: 2 * nw] = spread.reshape(nw, k, 2).transpose(0, 2, 1).reshape(2 * nw, k)
    div.reduce(wide, 2 * div.nb)
    return wide[:nw].copy()


def irreducible_flags(polys: Sequence[int], n: int) -> list[bool]:
    """is_irreducible for many monic degree-n polynomials with constant term 1 (n a multiple of 64).

    Rabin's test in lock-step: x^(2^k) mod p_r for all rows, k = 1..n, then one Python gcd per prime
    of n for the rows that pass x^(2^n) ≡ x.
    """
    if n % 64 or n < 64:
        return [is_irreducible(p) for p in polys]
    if not polys:
        return []
    div = ByteDivisor(polys, n)
    nw = n // 64
    u = np.zeros((nw, len(polys)), dtype=np.uint64)
    u[0] = 2  # x
    wanted = {n // q for q in _primes_dividing(n)}
    powers: dict[int, np.ndarray] = {}
    for k in range(1, n + 1):
        u = _square_columns(u, div)
        if k in wanted:
            powers[k] = u
    fixed = (u[0] == 2) & (u[1:] == 0).all(axis=0)
    result = []
    for r, p in enumerate(polys):
        ok = bool(fixed[r])
        for k in wanted:
            if not ok:
                break
            power = int.from_bytes(np.ascontiguousarray(powers[k][:, r]).tobytes(), "little")
            ok = poly_gcd(p, power ^ 0b10) == 1
        result.append(ok)
    return result


def random_irreducibles(n: int, count: int, rng: random.Random, *, batch: int = 4096) -> list[int]:
    """`count` uniformly random monic irreducible degree-n polynomials drawn from `rng`.

    The same candidate stream as `random_irreducible` (monic, constant term 1) and the first `count`
    irreducible ones in stream order; candidates are drawn and tested `batch` at a time, so `rng`
    ends up further along than `count` calls of `random_irreducible` would leave it.
    """
    if n < 2 * SIEVE_DEGREE + 1:
        raise ValueError(f"batched generation needs degree > {2 * SIEVE_DEGREE}")
    found: list[int] = []
    top = 1 << n
    while len(found) < count:
        # ~n/2 candidates per irreducible; 4096 at a time amortises numpy's per-step overhead
        size = min(batch, n * (count - len(found)) + 256)
        candidates = [top | rng.getrandbits(n) | 1 for _ in range(size)]
        kept = [
            c for c, ok in zip(candidates, sieve_small_factors(candidates, n), strict=True) if ok
        ]
        found += [c for c, ok in zip(kept, irreducible_flags(kept, n), strict=True) if ok]
    return found[:count]
