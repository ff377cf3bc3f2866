"""Client partitions (LotteryFL, Dirichlet, IID): sizes, disjointness, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from qbfl.learning.partition import (
    client_indices,
    dirichlet_allocation,
    dirichlet_indices,
    iid_indices,
    partition_indices,
)


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


# -- Dirichlet label skew and IID (issue 13, item 4) -----------------------------------------


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.5, 10.0])
def test_dirichlet_is_a_disjoint_partition_of_equal_sizes(labels: np.ndarray, alpha: float) -> None:
    parts = [dirichlet_indices(labels, k, seed=3, alpha=alpha) for k in range(50)]
    assert all(len(p) == 775 for p in parts)
    every = np.concatenate(parts)
    assert len(np.unique(every)) == len(every)  # no image held twice
    # each client's own slice equals its row of the shared allocation table
    table = dirichlet_allocation(np.bincount(labels), n_clients=50, seed=3, alpha=alpha, size=775)
    for k in (0, 17, 49):
        assert np.array_equal(np.bincount(labels[parts[k]], minlength=10), table[k])


def test_dirichlet_alpha_controls_the_label_skew(labels: np.ndarray) -> None:
    def classes_held(alpha: float) -> float:
        parts = [dirichlet_indices(labels, k, seed=1, alpha=alpha) for k in range(50)]
        # classes that make up at least 5 % of a client's images
        return float(np.mean([(np.bincount(labels[p], minlength=10) >= 39).sum() for p in parts]))

    assert classes_held(0.1) < 3.5 < classes_held(0.5) < classes_held(100.0) == 10.0


def test_dirichlet_caps_classes_that_run_out() -> None:
    # 3 classes of 100 images, 5 clients × 50: demand must fit the supply exactly per class
    counts = np.array([100, 100, 100])
    table = dirichlet_allocation(counts, n_clients=5, seed=0, alpha=0.01, size=50)
    assert (table.sum(axis=1) == 50).all()
    assert (table.sum(axis=0) <= counts).all()


def test_iid_is_uniform_disjoint_and_seeded(labels: np.ndarray) -> None:
    parts = [iid_indices(labels, k, seed=2) for k in range(50)]
    every = np.concatenate(parts)
    assert len(np.unique(every)) == 50 * 775
    held = np.bincount(labels[parts[0]], minlength=10)
    assert held.min() > 40  # ~77 per class, not one label per shard
    assert not np.array_equal(parts[0], iid_indices(labels, 0, seed=3))


def test_partition_registry_and_errors(labels: np.ndarray) -> None:
    assert np.array_equal(
        partition_indices("lotteryfl", labels, 4, n_clients=50, seed=1),
        client_indices(labels, 4, seed=1),
    )
    with pytest.raises(ValueError, match="unknown partition"):
        partition_indices("shards", labels, 0, n_clients=50, seed=0)
    with pytest.raises(ValueError, match="alpha is required"):
        partition_indices("dirichlet", labels, 0, n_clients=50, seed=0)
    with pytest.raises(ValueError, match="alpha must be"):
        dirichlet_indices(labels, 0, seed=0, alpha=0.0)
    with pytest.raises(ValueError, match="only 60000"):
        iid_indices(labels, 0, n_clients=100, seed=0, size=775)
