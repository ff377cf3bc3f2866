"""Geometric median by smoothed Weiszfeld iterations (RFA, Pillutla, Kakade & Harchaoui 2022)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qbfl.aggregation.base import NO_FAULT_LIMIT, AggregationResult, canonical_inputs
from qbfl.aggregation.median import coordinate_median
from qbfl.aggregation.summation import ordered_sum, weighted_mean
from qbfl.errors import ConfigError

STARTS = ("median", "mean", "zero")


def row_norms(rows: np.ndarray) -> np.ndarray:
    """Euclidean norm of every row with the order-fixed sum: (N,)."""
    return np.sqrt(ordered_sum(rows * rows))


@dataclass(frozen=True)
class GeometricMedian:
    """argmin_z Σ_i ‖d_i − z‖, approximated by RFA's smoothed Weiszfeld iteration.

    z ← Σ β_i d_i / Σ β_i with β_i = 1 / max(ν, ‖d_i − z‖), every client weighing the same (each
    holds 775 images), from the coordinate-wise median (a robust start; ByzFL starts from 0),
    until z moves by at most `tol`·‖z‖ or after `iterations` steps. ν keeps a weight finite when
    z sits on an update. Robust whatever f is (breakdown point 1/2), so f is not used; selects
    everyone. Order-fixed float64 throughout (`ordered_sum`, `weighted_mean` in id order), so
    bit-for-bit the same on every node; all rows equal → that row, exactly.
    """

    name = "geomed"
    nu: float = 1e-6
    iterations: int = 100
    tol: float = 1e-7
    start: str = "median"

    def __post_init__(self) -> None:
        if not (isinstance(self.nu, float) and math.isfinite(self.nu) and self.nu > 0):
            raise ConfigError(f"geomed's nu must be a positive float, got {self.nu!r}")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int):
            raise ConfigError(f"geomed's iterations must be an integer, got {self.iterations!r}")
        if self.iterations < 1:
            raise ConfigError(f"geomed's iterations must be ≥ 1, got {self.iterations}")
        if not (isinstance(self.tol, float) and self.tol >= 0 and math.isfinite(self.tol)):
            raise ConfigError(f"geomed's tol must be a float ≥ 0, got {self.tol!r}")
        if self.start not in STARTS:
            raise ConfigError(f"geomed's start must be one of {STARTS}, got {self.start!r}")

    def max_faults(self, n: int) -> int:
        """Any f: the geometric median does not use it."""
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
        return AggregationResult(
            update=self.solve(inputs.rows).astype(np.float32), selected=inputs.client_ids
        )

    def solve(self, rows: np.ndarray) -> np.ndarray:
        """The smoothed Weiszfeld estimate for (N, P) float64 rows in canonical order: (P,)."""
        if self.start == "median":
            z = coordinate_median(rows)
        elif self.start == "mean":
            z = weighted_mean(rows, np.ones(rows.shape[0]))
        else:
            z = np.zeros(rows.shape[1], dtype=np.float64)
        for _ in range(self.iterations):
            distances = row_norms(rows - z)
            if not distances.any():
                return z  # every update is z: it is the median, exactly
            z_new = weighted_mean(rows, 1.0 / np.maximum(distances, self.nu))
            step = float(row_norms((z_new - z)[None, :])[0])
            scale = float(row_norms(z_new[None, :])[0])
            z = z_new
            if step <= self.tol * scale:
                break
        return z
