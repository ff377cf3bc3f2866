"""LotteryFL non-IID partition: sizes, disjointness, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from qbfl.learning.partition import client_indices


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.random.default_rng(7).permutation(np.repeat(np.arange(10), 6000))


def test_every_client_gets_775_and_clients_are_disjoint(labels: np.ndarray) -> None:
    parts = [client_indices(labels, k, seed=3) for k in range(50)]
    assert all(len(p) == 775 for p in parts)
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == 50 * 775
    assert allidx.min() >= 0 and allidx.max() < len(labels)


def test_shards_are_label_sorted_runs(labels: np.ndarray) -> None:
    idx = client_indices(labels, 11, seed=3)
    # 6000 per class = 60 whole shards per class: each shard holds one label.
    shard_labels = [labels[idx[:100]]] + [
        labels[idx[100 + 75 * s : 175 + 75 * s]] for s in range(9)
    ]
    assert all(len(np.unique(s)) == 1 for s in shard_labels)
    counts = np.bincount(labels[idx], minlength=10)
    assert counts.sum() == 775 and all(c % 25 == 0 for c in counts)


def test_deterministic_and_seed_dependent(labels: np.ndarray) -> None:
    a = client_indices(labels, 4, seed=1)
    assert np.array_equal(a, client_indices(labels, 4, seed=1))
    assert not np.array_equal(a, client_indices(labels, 4, seed=2))
    assert not np.array_equal(a, client_indices(labels, 5, seed=1))


def test_other_settings(labels: np.ndarray) -> None:
    idx = client_indices(
        labels, 0, n_clients=10, seed=0, nsamples=50, n_class=4, rate_unbalance=0.5
    )
    assert len(idx) == 50 + 3 * 25


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client_id": 50},
        {"client_id": -1},
        {"n_class": 13},  # 50 x 13 > 600 shards
        {"rate_unbalance": 0.0},
        {"rate_unbalance": 1.5},
        {"nsamples": 0},
        {"n_clients": 0, "client_id": 0},
    ],
)
def test_invalid_arguments(labels: np.ndarray, kwargs: dict[str, float]) -> None:
    args: dict = {"client_id": 0, "seed": 0, **kwargs}
    with pytest.raises(ValueError):
        client_indices(labels, **args)
