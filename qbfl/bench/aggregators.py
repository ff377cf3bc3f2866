"""aggregators: time per call of every rule, ours beside ByzFL's, at N = 50 and d = 4 842 (MPO FCNN) and 10⁶."""

from __future__ import annotations

import functools
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import click
import numpy as np

from qbfl.command_line import NumberList

# Our rule → how to build ByzFL's counterpart at fault tolerance f (None: ByzFL 0.0.11 has none).
# Krum and Multi-Krum: ByzFL scores over N − f − 1 neighbours, we over N − f − 2 (Blanchard et
# al.), so ByzFL's runs at f + 1 to do the same work; see tests/unit/aggregation/test_byzfl_agreement.py.
RULES = (
    "fedavg", "median", "trimmed-mean", "krum", "multi-krum", "bulyan", "geomed", "cclip",
    "nnm+median", "nnm+qbfl", "qbfl", "qbfl-distance", "qbfl-median",
)  # fmt: skip


# ByzFL's NNM gathers every row's N − f neighbours into one array before averaging; above this
# many bytes its timing is skipped rather than risk the shared machine's memory.
NNM_MEMORY_LIMIT = 2 * 2**30


def _byzfl_rule(name: str, f: int) -> Callable[[np.ndarray], Any] | None:
    from qbfl.bench.byzfl_modules import load_byzfl

    b = load_byzfl()
    agg, pre = b.aggregators, b.preaggregators
    rules: dict[str, Callable[[], Callable[[np.ndarray], Any]]] = {
        "fedavg": lambda: agg.Average(),
        "median": lambda: agg.Median(),
        "trimmed-mean": lambda: agg.TrMean(f=f),
        "krum": lambda: agg.Krum(f=f + 1),
        "multi-krum": lambda: agg.MultiKrum(f=f + 1),
        # ByzFL's defaults (ν = 0.1, T = 3, from 0) against ours (from the median, to convergence)
        "geomed": lambda: agg.GeometricMedian(),
        "cclip": lambda: agg.CenteredClipping(L=3, tau=1.0),
        "nnm+median": lambda: _composed(agg.Median(), pre.NNM(f=f)),
    }
    factory = rules.get(name)
    return factory() if factory is not None else None


def _composed(rule: Callable[[Any], Any], pre: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda x: rule(pre(x))


def _median_seconds(fn: Callable[[], Any], calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _measure(d: int, *, n: int, f: int, calls: int, seed: int, byzfl: bool) -> list[dict[str, Any]]:
    """One row per rule at update size d: our time per call, ByzFL's where it has the rule."""
    from qbfl.aggregation import get_aggregator

    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    updates = (direction + rng.normal(scale=2.0, size=(n, d))).astype(np.float32)
    as64 = updates.astype(np.float64)  # ByzFL computes in its input's dtype
    previous = (direction + rng.normal(scale=0.5, size=d)).astype(np.float32)
    stakes = rng.integers(1, 30, size=n).astype(np.float64)
    ids = list(range(n))
    rows = []
    for name in RULES:
        rule = get_aggregator(name)
        f_rule = min(f, rule.max_faults(n))  # Bulyan: N ≥ 4f + 3
        call = functools.partial(
            rule.aggregate, updates, client_ids=ids, stakes=stakes, f=f_rule, previous=previous
        )
        ours_s = _median_seconds(call, calls)
        theirs = _byzfl_rule(name, f_rule) if byzfl else None
        if name.startswith("nnm+") and n * (n - f_rule) * d * 8 > NNM_MEMORY_LIMIT:
            theirs = None  # ByzFL's NNM indexes an (N, N − f, d) float64 array: 12 GB at 10⁶
        theirs_s = (
            _median_seconds(functools.partial(theirs, as64), calls) if theirs is not None else None
        )
        rows.append(
            {
                "d": d,
                "rule": name,
                "f": f_rule,
                "ours_ms": round(1e3 * ours_s, 2),
                "byzfl_ms": round(1e3 * theirs_s, 2) if theirs_s is not None else "",
                "ours/byzfl": round(ours_s / theirs_s, 1) if theirs_s else "",
                "calls": calls,
            }
        )
        print(f"  d={d} {name}: ours {1e3 * ours_s:.1f} ms", flush=True, file=sys.stderr)
    return rows


@click.command(
    name="aggregators",
    help="Time per call of each aggregation rule, ours beside ByzFL's, N = 50, d = 4 842 and 10⁶.",
)
@click.option("--n", "n", type=click.IntRange(min=3), default=50, show_default=True)
@click.option("--f", "f", type=click.IntRange(min=0), default=20, show_default=True)
@click.option(
    "--dims",
    type=NumberList(int, low=1, high=10**8),
    default="4842,1000000",
    show_default=True,
    help="update sizes: 4 842 = MPO FCNN (Table 1), 10⁶ = a mid-size model",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="calls per rule at the smallest d (median reported); one call at larger d",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--json", "as_json", is_flag=True, help="print the JSON document instead of the table"
)
def command(
    n: int, f: int, dims: list[int], repeats: int, seed: int, threads: int, as_json: bool
) -> None:
    import torch

    from qbfl.bench.byzfl_modules import ByzflUnavailable, load_byzfl
    from qbfl.bench.report import emit

    torch.set_num_threads(threads)
    try:
        byzfl_version: str | None = load_byzfl().version
    except ByzflUnavailable:
        byzfl_version = None
    rows: list[dict[str, Any]] = []
    for d in dims:
        calls = repeats if d == min(dims) else 1
        rows += _measure(d, n=n, f=f, calls=calls, seed=seed, byzfl=byzfl_version is not None)
    emit(
        "aggregators",
        rows,
        as_json=as_json,
        title=f"Aggregation time per call, N = {n}, f = {f} (Bulyan 4f + 3 ≤ N), ours (float64, "
        f"order-fixed, bit-exact) beside ByzFL {byzfl_version or '(not installed)'} (numpy float64)",
        extra={"byzfl_version": byzfl_version, "threads": threads},
    )
