"""Shared setup for the QBA adversarial suites: small-n QDS parameters and reused polynomials."""

from __future__ import annotations

import random

from qbfl.crypto import gf2
from qbfl.crypto.qds import QdsParams

# The protocol logic does not depend on n; n = 32 keeps thousands of runs fast. A random or broken
# signature is still rejected: a tamper flips at least one bit that the verifier recomputes exactly.
SEARCH_PARAMS = QdsParams(n=32)


def search_polys() -> gf2.CyclicPolynomialSource:
    return gf2.CyclicPolynomialSource(
        [gf2.random_irreducible(SEARCH_PARAMS.n, random.Random(s)) for s in range(16)]
    )


def full_polys() -> gf2.CyclicPolynomialSource:
    return gf2.CyclicPolynomialSource(
        [gf2.random_irreducible(128, random.Random(s)) for s in range(8)]
    )
