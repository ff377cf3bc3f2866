"""A committee member accepts a leader's aggregate only with the same selection and within the bound."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qbfl.aggregation import (
    AGGREGATORS,
    DEFAULT_RTOL,
    AggregationResult,
    aggregate_mismatch,
    get_aggregator,
    verify_aggregate,
)


def _round(seed: int = 7, n: int = 12, p: int = 300) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "updates": rng.normal(0.0, 0.01, size=(n, p)).astype(np.float32),
        "client_ids": [int(i) for i in rng.permutation(n)],
        "stakes": rng.integers(1, 9, size=n).astype(np.float64),
        "f": 3,
        "previous": rng.normal(0.0, 0.01, size=p).astype(np.float32),
    }


def _float32_gpu_style(r: dict, selected: tuple[int, ...]) -> np.ndarray:
    """Another valid implementation: float32 throughout, reverse order, numpy's own reductions."""
    rows = [r["client_ids"].index(c) for c in reversed(selected)]
    w = r["stakes"][rows].astype(np.float32)
    return (w[:, None] * r["updates"][rows]).sum(axis=0, dtype=np.float32) / w.sum(dtype=np.float32)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_own_result_is_accepted(name: str) -> None:
    r = _round()
    r["f"] = min(r["f"], get_aggregator(name).max_faults(len(r["client_ids"])))  # Bulyan: 4f + 3
    res = get_aggregator(name).aggregate(**r)
    assert verify_aggregate(res, aggregator=name, **r)


def test_float32_recomputation_in_another_order_is_accepted() -> None:
    r = _round()
    res = get_aggregator("qbfl").aggregate(**r)
    other = AggregationResult(update=_float32_gpu_style(r, res.selected), selected=res.selected)
    assert not np.array_equal(other.update, res.update)  # really a different computation
    assert verify_aggregate(other, **r)


def test_tampered_coordinate_is_rejected() -> None:
    r = _round()
    res = get_aggregator("qbfl").aggregate(**r)
    tampered = res.update.copy()
    rows = [r["client_ids"].index(c) for c in res.selected]
    scale = float(np.abs(r["updates"][rows, 5]).max())
    tampered[5] += np.float32(10 * DEFAULT_RTOL * scale)
    bad = dataclasses.replace(res, update=tampered)
    assert not verify_aggregate(bad, **r)
    reason = aggregate_mismatch(bad, res, r["updates"], client_ids=r["client_ids"])
    assert reason is not None and "coordinate 5" in reason


def test_different_selection_is_rejected_even_with_the_same_update() -> None:
    r = _round()
    res = get_aggregator("qbfl").aggregate(**r)
    outsider = next(c for c in r["client_ids"] if c not in res.selected)
    swapped = tuple(sorted((*res.selected[1:], outsider)))
    assert not verify_aggregate(dataclasses.replace(res, selected=swapped), **r)


@pytest.mark.parametrize(
    "update",
    [np.full(300, np.nan, dtype=np.float32), np.zeros(299, dtype=np.float32), np.zeros((1, 300))],
)
def test_malformed_aggregate_is_rejected(update: np.ndarray) -> None:
    r = _round()
    res = get_aggregator("qbfl").aggregate(**r)
    assert not verify_aggregate(dataclasses.replace(res, update=update), **r)
