"""`Aggregator.max_faults(n)` agrees with what `aggregate` accepts, for every rule and n = 1…60.

The round logic aggregates over the inputs actually present with f_eff = min(task f,
rule.max_faults(n_inputs)), and the publisher refuses a task whose f no N can serve (issue 10,
finding 11): both rely on f = max_faults(n) working and max_faults(n) + 1 raising ConfigError.
"""

from __future__ import annotations

import numpy as np
import pytest

from qbfl.aggregation import NO_FAULT_LIMIT, aggregator_names, get_aggregator
from qbfl.errors import ConfigError

RULES = aggregator_names()  # every rule and nnm+<rule>
P = 3


def _inputs(n: int) -> tuple[np.ndarray, list[int], np.ndarray]:
    rng = np.random.default_rng(n)
    return rng.normal(size=(n, P)).astype(np.float32), list(range(n)), np.ones(n)


@pytest.mark.parametrize("name", RULES)
def test_max_faults_is_exactly_what_aggregate_accepts(name: str) -> None:
    rule = get_aggregator(name)
    for n in range(1, 61):
        updates, ids, stakes = _inputs(n)
        limit = rule.max_faults(n)
        previous = updates[0]
        if limit >= 0:
            # the largest f it claims works; (for unlimited rules: a large f works too)
            f = min(limit, 10 * n)
            out = rule.aggregate(updates, client_ids=ids, stakes=stakes, f=f, previous=previous)
            assert out.update.shape == (P,)
            assert 1 <= len(out.selected) <= n
        if limit != NO_FAULT_LIMIT:
            # one more raises, and so does every f ≥ 0 when the rule cannot run with n inputs
            with pytest.raises(ConfigError):
                rule.aggregate(
                    updates, client_ids=ids, stakes=stakes, f=max(limit + 1, 0), previous=previous
                )


@pytest.mark.parametrize("name", RULES)
def test_max_faults_is_monotone_and_below_n(name: str) -> None:
    rule = get_aggregator(name)
    limits = [rule.max_faults(n) for n in range(0, 61)]
    assert limits == sorted(limits)
    assert rule.max_faults(0) < 0  # nothing to aggregate
    for n, limit in enumerate(limits):
        assert limit == NO_FAULT_LIMIT or limit < n


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fedavg", {1: NO_FAULT_LIMIT, 50: NO_FAULT_LIMIT}),
        ("median", {1: NO_FAULT_LIMIT, 50: NO_FAULT_LIMIT}),
        ("trimmed-mean", {1: 0, 2: 0, 3: 1, 50: 24, 51: 25}),
        ("krum", {2: -1, 3: 0, 4: 1, 50: 47}),
        ("qbfl", {2: -1, 3: 0, 10: 7, 50: 47}),
        ("multi-krum", {2: -1, 3: 0, 50: 47}),
        ("bulyan", {2: -1, 3: 0, 6: 0, 7: 1, 50: 11}),
        ("geomed", {0: -1, 1: NO_FAULT_LIMIT, 50: NO_FAULT_LIMIT}),
        ("cclip", {0: -1, 1: NO_FAULT_LIMIT, 50: NO_FAULT_LIMIT}),
        ("nnm+median", {0: -1, 1: 0, 50: 49}),
        ("nnm+trimmed-mean", {1: 0, 50: 24}),
        ("nnm+qbfl", {2: -1, 50: 47}),
    ],
)
def test_max_faults_values(name: str, expected: dict[int, int]) -> None:
    rule = get_aggregator(name)
    assert {n: rule.max_faults(n) for n in expected} == expected
