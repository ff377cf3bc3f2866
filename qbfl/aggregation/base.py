"""The aggregation contract: result type, Aggregator protocol, and validated inputs in canonical order."""

from __future__ import annotations

import numbers
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from qbfl.errors import ConfigError, InvalidUpdate


@dataclass(frozen=True)
class AggregationResult:
    """What a rule returns: the aggregated update and the clients it drew on."""

    update: np.ndarray  # (P,) float32
    selected: tuple[int, ...]  # client ids, sorted ascending


# max_faults of a rule that computes for any f (FedAvg, Median, the geometric median, ...).
NO_FAULT_LIMIT = sys.maxsize


class Aggregator(Protocol):
    """One aggregation rule (FedAvg, Trimmed-Mean, Median, Krum, Alg. 2, …), chosen by name."""

    @property
    def name(self) -> str:
        """The registry name (``get_aggregator(rule.name)`` builds the same rule)."""
        ...

    def max_faults(self, n: int) -> int:
        """The largest f with which ``aggregate`` accepts n inputs; f + 1 raises ConfigError.

        Negative when the rule cannot aggregate n inputs with any f ≥ 0 (e.g. Krum with n < 3,
        any rule with n < 1). ``NO_FAULT_LIMIT`` (sys.maxsize) when f only names a robustness
        target and never stops the computation (FedAvg, Median). A caller with fewer inputs than
        planned uses f_eff = min(task f, max_faults(n_inputs)); a task whose f exceeds
        max_faults(N) for all N nodes can never aggregate and is refused up front. Feasibility,
        not a guarantee: e.g. Krum computes for n ≥ f + 3, its proof needs n ≥ 2f + 3.
        """
        ...

    def aggregate(
        self,
        updates: np.ndarray,
        *,
        client_ids: Sequence[int],
        stakes: np.ndarray,
        f: int,
        previous: np.ndarray | None,
    ) -> AggregationResult:
        """Aggregate ``updates`` (N, P); row i belongs to ``client_ids[i]`` with stake ``stakes[i]``."""
        ...


@dataclass(frozen=True)
class RoundInputs:
    """Validated inputs in canonical order (rows sorted by ascending client id), widened to float64.

    Every rule computes on this form, so the result does not depend on the order rows arrived in
    (DESIGN §5 step 3). float32 → float64 is exact, so nothing is lost by widening.
    """

    rows: np.ndarray  # (N, P) float64, C-contiguous
    client_ids: tuple[int, ...]  # ascending
    stakes: np.ndarray  # (N,) float64, aligned with rows
    f: int
    previous: np.ndarray | None  # (P,) float64

    @property
    def n(self) -> int:
        return int(self.rows.shape[0])


def validate_updates(updates: np.ndarray, client_ids: Sequence[int] | None = None) -> None:
    """Raise InvalidUpdate unless ``updates`` is a finite (N, P) floating array with N, P ≥ 1."""
    if not isinstance(updates, np.ndarray):
        raise InvalidUpdate(f"updates must be a numpy array, got {type(updates).__name__}")
    if updates.ndim != 2:
        raise InvalidUpdate(f"updates must have shape (N, P), got shape {updates.shape}")
    if updates.shape[0] < 1 or updates.shape[1] < 1:
        raise InvalidUpdate(
            f"updates must hold at least one row and one column, got {updates.shape}"
        )
    if not np.issubdtype(updates.dtype, np.floating):
        raise InvalidUpdate(f"updates must be floating point (float32), got dtype {updates.dtype}")
    finite = np.isfinite(updates).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        who = [int(client_ids[int(i)]) for i in bad] if client_ids is not None else bad.tolist()
        label = "client ids" if client_ids is not None else "rows"
        raise InvalidUpdate(f"updates contain NaN or Inf ({label} {who[:10]})")


def require_clients(rule: str, n: int, f: int, minimum: int, formula: str) -> None:
    """Raise ConfigError when N clients are too few for the rule at fault tolerance f."""
    if n < minimum:
        raise ConfigError(
            f"{rule} needs N ≥ {formula} clients; got N = {n} with f = {f} (needs N ≥ {minimum})"
        )


def canonical_inputs(
    updates: np.ndarray,
    *,
    client_ids: Sequence[int],
    stakes: np.ndarray,
    f: int,
    previous: np.ndarray | None,
) -> RoundInputs:
    """Validate every input and return it sorted by client id, in float64."""
    ids = list(client_ids)
    validate_updates(updates, ids if len(ids) == updates.shape[0] else None)
    n, p = updates.shape
    if len(ids) != n:
        raise InvalidUpdate(f"client_ids has {len(ids)} entries but updates has {n} rows")
    if not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in ids):
        raise InvalidUpdate("client_ids must be integers")
    ids = [int(i) for i in ids]
    if len(set(ids)) != n:
        raise InvalidUpdate(f"client_ids must be unique, got {sorted(ids)}")
    stake_arr = np.asarray(stakes)
    if stake_arr.shape != (n,):
        raise InvalidUpdate(f"stakes must have shape ({n},), got {stake_arr.shape}")
    if not (
        np.issubdtype(stake_arr.dtype, np.number) and not np.issubdtype(stake_arr.dtype, np.bool_)
    ):
        raise InvalidUpdate(f"stakes must be numeric, got dtype {stake_arr.dtype}")
    stake_arr = stake_arr.astype(np.float64)
    if not np.isfinite(stake_arr).all():
        raise InvalidUpdate("stakes contain NaN or Inf")
    if not isinstance(f, numbers.Integral) or isinstance(f, bool) or f < 0:
        raise ConfigError(f"f must be an integer ≥ 0, got {f!r}")
    prev: np.ndarray | None = None
    if previous is not None:
        prev_arr = np.asarray(previous)
        if prev_arr.shape != (p,):
            raise InvalidUpdate(f"previous must have shape ({p},), got {prev_arr.shape}")
        if not np.issubdtype(prev_arr.dtype, np.floating):
            raise InvalidUpdate(f"previous must be floating point, got dtype {prev_arr.dtype}")
        if not np.isfinite(prev_arr).all():
            raise InvalidUpdate("previous global update contains NaN or Inf")
        prev = np.ascontiguousarray(prev_arr, dtype=np.float64)
    # Canonical order: ascending client id, so every permutation of the rows computes the same.
    order = sorted(range(n), key=ids.__getitem__)
    rows = np.ascontiguousarray(updates[order], dtype=np.float64)
    # −0.0 + 0.0 = +0.0: one zero, so sorts (whose SIMD variant may differ by CPU) cannot place
    # two zeros of different sign differently and change a median's sign bit.
    rows += 0.0
    return RoundInputs(
        rows=rows,
        client_ids=tuple(ids[i] for i in order),
        stakes=stake_arr[order],
        f=int(f),
        previous=prev,
    )
