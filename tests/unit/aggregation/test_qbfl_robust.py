"""Alg. 2's z-score (Eq. 9) can be stretched by one huge update so that a second outlier is kept;
the median/MAD variant (`qbfl-robust`, beyond the paper) is not. Replays the pattern of a
200-round MNIST run (docs/aggregation.md)."""

import numpy as np
import pytest

from qbfl.aggregation import get_aggregator
from qbfl.aggregation.qbfl_rule import qbfl_scores
from qbfl.errors import ConfigError

N, F, P = 20, 8, 64


def _round_with_two_outliers() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    previous = rng.normal(size=P)
    honest = previous + rng.normal(scale=0.5, size=(N, P))
    honest[0] = previous * 1e17  # absurd update: dominates σ(v2)
    honest[1] = previous * 1e12  # large, aligned with the previous direction
    return honest.astype(np.float32), previous.astype(np.float32)


def test_paper_zscore_keeps_the_masked_outlier() -> None:
    updates, previous = _round_with_two_outliers()
    result = get_aggregator("qbfl").aggregate(
        updates, client_ids=range(N), stakes=np.ones(N), f=F, previous=previous
    )
    assert 1 in result.selected  # the flaw, reproduced
    assert float(np.linalg.norm(result.update)) > 1e9


def test_robust_normalisation_excludes_both_outliers() -> None:
    updates, previous = _round_with_two_outliers()
    result = get_aggregator("qbfl-robust").aggregate(
        updates, client_ids=range(N), stakes=np.ones(N), f=F, previous=previous
    )
    assert 0 not in result.selected and 1 not in result.selected
    assert len(result.selected) == N - F - 2
    assert float(np.linalg.norm(result.update)) < 100


def test_robust_equals_paper_rule_on_ordinary_rounds() -> None:
    rng = np.random.default_rng(3)
    updates = rng.normal(size=(N, P)).astype(np.float32)
    previous = rng.normal(size=P).astype(np.float32)
    kwargs = dict(client_ids=range(N), stakes=np.ones(N), f=F, previous=previous)
    a = get_aggregator("qbfl").aggregate(updates, **kwargs)  # type: ignore[arg-type]
    b = get_aggregator("qbfl-robust").aggregate(updates, **kwargs)  # type: ignore[arg-type]
    # Not a theorem, but with Gaussian updates both normalisations rank nearly alike.
    assert len(set(a.selected) & set(b.selected)) >= N - F - 4


def test_unknown_normalisation_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="normalisation"):
        qbfl_scores(np.zeros((5, 3)), previous=None, f=1, normalisation="minmax")
