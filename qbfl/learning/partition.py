"""Client partitions: LotteryFL's non-IID shards (Section 5.1, DESIGN.md §3, the default), Dirichlet label skew, IID."""

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


# Every client of the Dirichlet and IID partitions holds as many images as a LotteryFL client
# (100 + 9·75), so the three partitions differ only in how labels are spread.
LOTTERYFL_SIZE = 775
PARTITIONS = ("lotteryfl", "dirichlet", "iid")


def _check_common(n_labels: int, client_id: int, n_clients: int, size: int) -> None:
    if n_clients < 1:
        raise ValueError(f"n_clients must be >= 1, got {n_clients}")
    if not 0 <= client_id < n_clients:
        raise ValueError(f"client_id must be in [0, {n_clients}), got {client_id}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if n_clients * size > n_labels:
        raise ValueError(
            f"{n_clients} clients × {size} images need {n_clients * size}, "
            f"but there are only {n_labels}"
        )


def iid_indices(
    labels: np.ndarray,
    client_id: int,
    *,
    n_clients: int = 50,
    seed: int,
    size: int = LOTTERYFL_SIZE,
) -> np.ndarray:
    """Client k's `size` images, drawn uniformly: slice k of one seeded permutation (disjoint)."""
    labels = np.asarray(labels)
    _check_common(len(labels), client_id, n_clients, size)
    order = np.random.default_rng([seed, 0x696964]).permutation(len(labels))
    return np.sort(order[client_id * size : (client_id + 1) * size]).astype(np.int64)


def dirichlet_allocation(
    class_counts: np.ndarray, *, n_clients: int, seed: int, alpha: float, size: int
) -> np.ndarray:
    """(n_clients, classes) image counts per client and class: each row sums to `size`.

    Label skew at fixed quantity (Hsu, Qi & Brown 2019, "Measuring the effects of non-identical
    data distribution"): client k's class proportions q_k ~ Dir(α·1), all drawn from the seed,
    so every client computes the same table (50 × 10 numbers, cheap) and then takes only its
    own slice. Small α: few classes per client; α → ∞: IID. Counts are q_k·size rounded by
    largest remainders; clients are served in id order and a class whose images run out is
    capped, the shortfall going to the client's other classes in order of its proportions
    (ties → lower class), so the table never asks for more images than exist and the slices
    stay disjoint. Fixed quantity rather than per-class Dirichlet splits (Wang et al. 2020),
    whose client sizes vary from 0 to thousands: the vectorised simulator trains every client
    on the same number of images, and equal sizes keep the comparison with LotteryFL's 775 to
    the label skew alone.
    """
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive number, got {alpha}")
    counts = np.asarray(class_counts, dtype=np.int64)
    if n_clients * size > int(counts.sum()):
        raise ValueError(f"{n_clients} clients × {size} images exceed the {counts.sum()} held")
    rng = np.random.default_rng([seed, 0x646972])
    proportions = rng.dirichlet(np.full(len(counts), float(alpha)), size=n_clients)
    remaining = counts.copy()
    table = np.zeros((n_clients, len(counts)), dtype=np.int64)
    for k in range(n_clients):
        q = proportions[k]
        raw = q * size
        want = np.floor(raw).astype(np.int64)
        # largest remainders (ties → lower class) bring the row to exactly `size`
        for c in sorted(range(len(q)), key=lambda c: (-(raw[c] - want[c]), c))[
            : size - int(want.sum())
        ]:
            want[c] += 1
        take = np.minimum(want, remaining)
        short = size - int(take.sum())
        for c in sorted(range(len(q)), key=lambda c: (-q[c], c)):
            if short == 0:
                break
            extra = min(short, int(remaining[c] - take[c]))
            take[c] += extra
            short -= extra
        table[k] = take
        remaining -= take
    return table


def dirichlet_indices(
    labels: np.ndarray,
    client_id: int,
    *,
    n_clients: int = 50,
    seed: int,
    alpha: float,
    size: int = LOTTERYFL_SIZE,
) -> np.ndarray:
    """Client k's images under Dirichlet(α) label skew, `size` of them (see dirichlet_allocation).

    Each class's images are shuffled by the seed; client k takes, per class c, the run after
    the images of clients 0…k−1 of that class. Disjoint, and the union of all clients is a
    subset of the training set.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    _check_common(len(labels), client_id, n_clients, size)
    classes = np.unique(labels)
    table = dirichlet_allocation(
        np.array([(labels == c).sum() for c in classes]),
        n_clients=n_clients,
        seed=seed,
        alpha=alpha,
        size=size,
    )
    offsets = table[:client_id].sum(axis=0)
    parts = []
    for j, c in enumerate(classes):
        pool = np.flatnonzero(labels == c)  # ascending: the same on every platform
        pool = pool[np.random.default_rng([seed, 0x636C73, int(j)]).permutation(len(pool))]
        parts.append(pool[offsets[j] : offsets[j] + table[client_id, j]])
    return np.sort(np.concatenate(parts)).astype(np.int64)


def partition_indices(
    name: str,
    labels: np.ndarray,
    client_id: int,
    *,
    n_clients: int,
    seed: int,
    alpha: float | None = None,
) -> np.ndarray:
    """Client `client_id`'s indices under the partition `name` (``PARTITIONS``); alpha for dirichlet."""
    if name not in PARTITIONS:
        raise ValueError(f"unknown partition {name!r}; valid: {', '.join(PARTITIONS)}")
    if (alpha is not None) != (name == "dirichlet"):
        raise ValueError(
            "alpha is required for the dirichlet partition and not used by the others "
            f"(partition {name!r}, alpha {alpha})"
        )
    if name == "lotteryfl":
        return client_indices(labels, client_id, n_clients=n_clients, seed=seed)
    if name == "iid":
        return iid_indices(labels, client_id, n_clients=n_clients, seed=seed)
    assert alpha is not None
    return dirichlet_indices(labels, client_id, n_clients=n_clients, seed=seed, alpha=alpha)
