"""Time every aggregation rule at the paper's scale (N = 50 clients, P = 4 842 MPO-FCNN parameters)."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from qbfl.aggregation import AGGREGATORS, get_aggregator


def blas_qbfl_selection(updates: np.ndarray, previous: np.ndarray, f: int) -> list[int]:
    """The same Alg. 2 selection written the usual way (Gram matrix, BLAS) — for a cost ratio only."""
    rows = updates.astype(np.float64)
    norms = np.linalg.norm(rows, axis=1)
    v1 = rows @ previous / (norms * np.linalg.norm(previous))
    gram = rows @ rows.T
    dist = np.sqrt(np.maximum(norms[:, None] ** 2 + norms[None, :] ** 2 - 2 * gram, 0.0))
    np.fill_diagonal(dist, np.inf)
    v2 = np.sort(dist, axis=1)[:, : len(rows) - f - 1].sum(axis=1)
    v = (v1 - v1.mean()) / v1.std() - (v2 - v2.mean()) / v2.std()
    return sorted(np.argsort(-v, kind="stable")[: len(rows) - f - 2].tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--p", type=int, default=4842)
    parser.add_argument("--f", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    direction = rng.normal(0.0, 0.01, size=args.p)
    updates = (direction + rng.normal(0.0, 0.01, size=(args.n, args.p))).astype(np.float32)
    previous = direction.astype(np.float32)
    ids = list(range(args.n))
    stakes = rng.integers(1, 30, size=args.n).astype(np.float64)

    def timed(fn: Callable[[], object]) -> list[float]:
        out = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    print(f"N={args.n} P={args.p} f={args.f} repeats={args.repeats}")
    print(f"{'rule':<14}{'median ms':>10}{'min ms':>10}{'selected':>10}")
    results = {}
    for name in sorted(AGGREGATORS):
        rule = get_aggregator(name)
        f = min(args.f, rule.max_faults(args.n))  # Bulyan needs N ≥ 4f + 3

        def call(rule=rule, f=f) -> None:
            rule.aggregate(updates, client_ids=ids, stakes=stakes, f=f, previous=previous)

        times = timed(call)
        sel = len(
            rule.aggregate(updates, client_ids=ids, stakes=stakes, f=f, previous=previous).selected
        )
        results[name] = times
        print(
            f"{name:<14}{1e3 * statistics.median(times):>10.2f}{1e3 * min(times):>10.2f}{sel:>10}"
        )
    blas = timed(lambda: blas_qbfl_selection(updates, previous, args.f))
    print(f"{'qbfl-blas-sel':<14}{1e3 * statistics.median(blas):>10.2f}{1e3 * min(blas):>10.2f}")
    ratio = statistics.median(results["qbfl"]) / statistics.median(blas)
    print(f"order-fixed qbfl / BLAS selection (median): {ratio:.1f}x")
    same = blas_qbfl_selection(updates, previous, args.f) == list(
        get_aggregator("qbfl")
        .aggregate(updates, client_ids=ids, stakes=stakes, f=args.f, previous=previous)
        .selected
    )
    print(f"BLAS selection identical to order-fixed selection: {same}")


if __name__ == "__main__":
    main()
