"""How a committee member accepts a leader's aggregate: same selection, same update within a stated bound.

DESIGN §5 step 3: members may run on another CPU or a GPU, so the leader's bytes are accepted when
the member's own recomputation selects exactly the same clients and every coordinate agrees within

    |leader_j − own_j| ≤ atol + rtol · max_{i ∈ selected} |d_ij|.

Every rule's output is a convex combination of the selected updates (Krum: one of them; median:
one or the mean of two). Any implementation that sums K such terms in float32, in any order, errs
by at most about K·2⁻²⁴·max|d_ij| per coordinate (the partial sums never exceed the largest term's
magnitude times the weight total). rtol = 1e-5 covers K ≤ ~160 selected updates with room, while
a tampered aggregate (``wrongagg``) must move no coordinate by more than 10⁻⁵ of its largest
contribution to pass — far below anything that changes training. atol defaults to 0: when all
selected values of a coordinate are 0, every correct implementation returns exactly 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qbfl.aggregation.base import AggregationResult, Aggregator
from qbfl.aggregation.registry import get_aggregator
from qbfl.errors import QbflError

DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 0.0


def aggregate_mismatch(
    claimed: AggregationResult,
    own: AggregationResult,
    updates: np.ndarray,
    *,
    client_ids: Sequence[int],
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
) -> str | None:
    """Why ``claimed`` differs from the member's ``own`` result, or None when it is accepted."""
    if tuple(claimed.selected) != tuple(own.selected):
        return f"selected ids differ: claimed {claimed.selected}, recomputed {own.selected}"
    update = np.asarray(claimed.update)
    if update.shape != own.update.shape:
        return f"aggregate has shape {update.shape}, expected {own.update.shape}"
    if not np.issubdtype(update.dtype, np.floating) or not np.isfinite(update).all():
        return "aggregate is not a finite floating-point vector"
    position = {int(cid): row for row, cid in enumerate(client_ids)}
    chosen = [position[cid] for cid in own.selected]
    scale = np.abs(np.asarray(updates, dtype=np.float64)[chosen]).max(axis=0)
    error = np.abs(update.astype(np.float64) - own.update.astype(np.float64))
    bound = atol + rtol * scale
    if (error > bound).any():
        worst = int(np.argmax(error - bound))
        return (
            f"aggregate differs at coordinate {worst}: |Δ| = {error[worst]:.3g} > bound "
            f"{bound[worst]:.3g} (rtol {rtol:g}, atol {atol:g})"
        )
    return None


def verify_aggregate(
    result: AggregationResult,
    updates: np.ndarray,
    *,
    client_ids: Sequence[int],
    stakes: np.ndarray,
    f: int,
    previous: np.ndarray | None,
    aggregator: Aggregator | str = "qbfl",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
) -> bool:
    """Recompute the aggregate from the same inputs and accept ``result`` iff it matches (see module).

    Invalid inputs (NaN, shapes, too few clients) raise, as they would for the leader; a malformed
    or tampered ``result`` returns False.
    """
    rule = get_aggregator(aggregator) if isinstance(aggregator, str) else aggregator
    own = rule.aggregate(updates, client_ids=client_ids, stakes=stakes, f=f, previous=previous)
    try:
        reason = aggregate_mismatch(
            result, own, updates, client_ids=client_ids, rtol=rtol, atol=atol
        )
    except (QbflError, TypeError, ValueError):
        return False
    return reason is None
