"""Centered clipping (Karimireddy, He & Jaggi 2021, "Learning from history for Byzantine robust optimization")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qbfl.aggregation.base import NO_FAULT_LIMIT, AggregationResult, canonical_inputs
from qbfl.aggregation.geomed import row_norms
from qbfl.aggregation.summation import plain_mean
from qbfl.errors import ConfigError


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


@dataclass(frozen=True)
class CenteredClipping:
    """v ← v + mean_i(clip_τ(d_i − v)), L times, from the previous global update (0 in round 1).

    clip_τ(x) = x·min(1, τ/‖x‖). The center is the last accepted aggregate, which every node
    holds (the block's update): the server half of the paper's history. Its guarantee also
    needs worker momentum carried across rounds, which QBFL's stateless clients (Section 4.3)
    do not have, and it uses L = 1 in practice (ByzFL too); we iterate L = 3. τ: the paper's analysis
    fixes it from bounds on the honest variance, which a node does not know; by default
    (`tau=None`) each iteration takes the median of the N distances ‖d_i − v‖, which more
    than half the clients fix while f < N/2 — so a Byzantine update moves v by at most that
    radius / N however far it is (our choice, stated; `tau=` gives the paper's fixed radius,
    as ByzFL does with τ = 100 by default). f is not used; selects everyone. Order-fixed
    float64 (`ordered_sum` norms, means in id order); all rows equal → that row, exactly (the
    clip factor is then 1 and d − v is exact).
    """

    name = "cclip"
    iterations: int = 3
    tau: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int):
            raise ConfigError(f"cclip's iterations must be an integer, got {self.iterations!r}")
        if self.iterations < 1:
            raise ConfigError(f"cclip's iterations must be ≥ 1, got {self.iterations}")
        if self.tau is not None and not (
            isinstance(self.tau, float) and math.isfinite(self.tau) and self.tau > 0
        ):
            raise ConfigError(f"cclip's tau must be a positive float or None, got {self.tau!r}")

    def max_faults(self, n: int) -> int:
        """Any f: centered clipping does not use it."""
        return NO_FAULT_LIMIT if n >= 1 else -1

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
        rows = inputs.rows
        v = (
            inputs.previous.copy()
            if inputs.previous is not None
            else np.zeros(rows.shape[1], dtype=np.float64)
        )
        for _ in range(self.iterations):
            diff = rows - v
            norms = row_norms(diff)
            tau = self.tau if self.tau is not None else _median(norms.tolist())
            # min(1, τ/‖x‖); a zero difference needs no clipping (and τ = 0 clips everything).
            factor = np.ones_like(norms)
            far = norms > tau
            factor[far] = tau / norms[far]
            v = v + plain_mean(diff * factor[:, None])
        return AggregationResult(update=v.astype(np.float32), selected=inputs.client_ids)
