"""Multi-Krum (Blanchard et al. 2017, El Mhamdi et al. 2018): average the m updates with the best Krum scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qbfl.aggregation.base import AggregationResult, canonical_inputs, require_clients
from qbfl.aggregation.krum import krum_scores
from qbfl.aggregation.summation import plain_mean
from qbfl.errors import ConfigError


@dataclass(frozen=True)
class MultiKrum:
    """Keep the m updates with the smallest Krum scores (ties → lower id), plain mean of them.

    Krum's score (sum of squared distances to the N − f − 2 nearest others, `krum_scores`);
    m = N − f by default, as in El Mhamdi et al. and ByzFL. Stakes are not used (a classic
    baseline, like FedAvg). Needs N ≥ f + 3 for the score to exist.

    ByzFL's MultiKrum scores over the N − f − 1 nearest (its Krum too): ours at f − 1 with
    m = N − f selects what ByzFL's selects at f (tests/unit/aggregation/test_byzfl_agreement.py).
    """

    name = "multi-krum"
    m: int | None = None  # how many to average; None: N − f

    def __post_init__(self) -> None:
        if self.m is not None and (isinstance(self.m, bool) or not isinstance(self.m, int)):
            raise ConfigError(f"multi-krum's m must be an integer, got {self.m!r}")
        if self.m is not None and self.m < 1:
            raise ConfigError(f"multi-krum's m must be ≥ 1, got {self.m}")

    def max_faults(self, n: int) -> int:
        """N ≥ f + 3 (Krum's score), and N ≥ m when m is fixed (else nothing to average)."""
        if self.m is not None and n < self.m:
            return -1
        return n - 3

    def aggregate(
        self,
        updates: np.ndarray,
        *,
        client_ids: Sequence[int],
        stakes: np.ndarray,
        f: int,
        previous: np.ndarray | None,
    ) -> AggregationResult:
        inputs = canonical_inputs(
            updates, client_ids=client_ids, stakes=stakes, f=f, previous=previous
        )
        require_clients(self.name, inputs.n, inputs.f, inputs.f + 3, "f + 3")
        if self.m is not None and self.m > inputs.n:
            raise ConfigError(f"multi-krum averages m = {self.m} updates; got only N = {inputs.n}")
        m = self.m if self.m is not None else inputs.n - inputs.f
        scores = krum_scores(inputs.rows, f=inputs.f)
        # Rows are in ascending id order: ties → lower id.
        chosen = sorted(sorted(range(inputs.n), key=lambda i: (scores[i], i))[:m])
        mean = plain_mean(inputs.rows[chosen])  # accumulated in id order
        return AggregationResult(
            update=mean.astype(np.float32),
            selected=tuple(inputs.client_ids[i] for i in chosen),
        )
