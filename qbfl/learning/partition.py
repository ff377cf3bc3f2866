"""Non-IID client partition after LotteryFL's `mnist_extr_noniid` (Section 5.1, DESIGN.md §3)."""

from __future__ import annotations

import numpy as np


def _validate(
    n_labels: int,
    client_id: int,
    n_clients: int,
    nsamples: int,
    n_class: int,
    rate_unbalance: float,
) -> None:
    if n_clients < 1:
        raise ValueError(f"n_clients must be >= 1, got {n_clients}")
    if not 0 <= client_id < n_clients:
        raise ValueError(f"client_id must be in [0, {n_clients}), got {client_id}")
    if nsamples < 1:
        raise ValueError(f"nsamples must be >= 1, got {nsamples}")
    if n_class < 1:
        raise ValueError(f"n_class must be >= 1, got {n_class}")
    if not 0.0 < rate_unbalance <= 1.0:
        raise ValueError(f"rate_unbalance must be in (0, 1], got {rate_unbalance}")
    if int(rate_unbalance * nsamples) < 1:
        raise ValueError(f"rate_unbalance·nsamples = {rate_unbalance * nsamples} keeps no image")
    n_shards = n_labels // nsamples
    if n_class * n_clients > n_shards:
        raise ValueError(
            f"{n_clients} clients × {n_class} shards need {n_class * n_clients} shards of "
            f"{nsamples}, but {n_labels} labels give only {n_shards}"
        )


def client_indices(
    labels: np.ndarray,
    client_id: int,
    *,
    n_clients: int = 50,
    seed: int,
    nsamples: int = 100,
    n_class: int = 10,
    rate_unbalance: float = 0.75,
) -> np.ndarray:
    """Indices (into `labels`) of one client's training images.

    The images are sorted by label and cut into shards of `nsamples`; a permutation of
    the shard ids seeded by `seed` is the same on every node, and client k takes shards
    k·n_class … (k+1)·n_class − 1 of it — so a node derives only its own indices, yet no
    two clients share a shard. As in LotteryFL, the first shard is taken whole and the
    others at `rate_unbalance` (100 + 9·75 = 775 images with the defaults).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    _validate(len(labels), client_id, n_clients, nsamples, n_class, rate_unbalance)
    n_shards = len(labels) // nsamples
    # Stable sort so that equal labels keep dataset order on every platform.
    by_label = np.argsort(labels, kind="stable")
    shard_order = np.random.default_rng(seed).permutation(n_shards)
    shards = shard_order[client_id * n_class : (client_id + 1) * n_class]
    partial = int(rate_unbalance * nsamples)
    parts = [
        by_label[s * nsamples : s * nsamples + (nsamples if i == 0 else partial)]
        for i, s in enumerate(shards)
    ]
    return np.concatenate(parts).astype(np.int64)
