"""table3: robustness of five aggregators under three attacks (Table 3), resumable cell by cell."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

CACHE_ROOT = Path("bench/results/cache")
METHODS = ("fedavg", "trimmed-mean", "median", "krum", "qbfl", "qbfl-median", "qbfl-distance")
# Rows beyond the paper are compared with the paper's row of the rule they vary.
PAPER_ROW = {"qbfl-median": "qbfl", "qbfl-distance": "qbfl"}
ATTACKS = ("labelflip", "bitflip", "gaussian")
MALICIOUS = (10, 15, 20)

# The paper's Table 3 (average test accuracy in % over the last 20 rounds): the reference
# column, copied from the paper, not a result of this code. Order of values: ATTACKS × MALICIOUS.
PAPER_TABLE3: dict[str, dict[str, tuple[float, ...]]] = {
    "mnist": {
        "fedavg": (88.09, 76.67, 58.57, 95.60, 92.94, 75.25, 95.60, 92.73, 92.42),
        "trimmed-mean": (95.54, 87.64, 78.67, 96.08, 93.41, 80.90, 97.05, 96.72, 95.77),
        "median": (96.34, 96.48, 90.11, 95.98, 93.78, 84.67, 96.90, 96.73, 96.72),
        "krum": (78.60, 82.72, 88.72, 73.35, 85.26, 78.70, 78.58, 79.96, 81.15),
        "qbfl": (97.21, 96.79, 96.52, 96.44, 95.16, 94.84, 97.26, 97.39, 96.74),
    },
    "fashion-mnist": {
        "fedavg": (80.59, 64.56, 52.32, 84.18, 78.69, 62.13, 83.00, 80.21, 73.78),
        "trimmed-mean": (84.76, 78.80, 58.01, 84.67, 81.03, 73.87, 87.19, 77.33, 61.18),
        "median": (86.52, 84.78, 81.92, 84.44, 81.34, 74.62, 87.30, 86.21, 86.70),
        "krum": (76.78, 77.67, 73.85, 68.52, 64.83, 70.11, 76.25, 76.38, 77.17),
        "qbfl": (86.65, 86.61, 86.46, 85.62, 84.51, 83.99, 87.22, 86.83, 86.94),
    },
}


def paper_value(dataset: str, method: str, attack: str, malicious: int) -> float:
    row = PAPER_TABLE3[dataset][PAPER_ROW.get(method, method)]
    return row[ATTACKS.index(attack) * 3 + MALICIOUS.index(malicious)]


def cache_key(doc: dict[str, Any]) -> str:
    """A stable name for a cell: the hash of its full configuration."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


def cached_run(
    table: str, config_doc: dict[str, Any], compute: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """Load a cell's result from bench/results/cache/<table>/, or compute and store it (atomic rename)."""
    directory = CACHE_ROOT / table
    path = directory / f"{cache_key(config_doc)}.json"
    if path.is_file():
        return json.loads(path.read_text()), True
    result = compute()
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": config_doc, **result}, indent=1) + "\n")
    tmp.replace(path)
    return result | {"config": config_doc}, False


def _cells(patterns: str) -> list[tuple[str, str, int]]:
    """Cells matching comma-separated METHOD:ATTACK:MALICIOUS globs, in the order of the patterns."""
    every = [(m, a, k) for m in METHODS for a in ATTACKS for k in MALICIOUS]
    chosen: list[tuple[str, str, int]] = []
    for pattern in patterns.split(","):
        parts = pattern.strip().split(":")
        if len(parts) != 3:
            raise click.BadParameter(
                f"{pattern!r} is not METHOD:ATTACK:MALICIOUS", param_hint="--cells"
            )
        hits = [
            c
            for c in every
            if all(fnmatch.fnmatch(str(v), p) for v, p in zip(c, parts, strict=True))
        ]
        if not hits:
            raise click.BadParameter(f"{pattern!r} matches no cell", param_hint="--cells")
        chosen += [c for c in hits if c not in chosen]
    return chosen


@click.command(
    help="Table 3: FedAvg, Trimmed-Mean, Median, Krum, qbfl (and two variants) × 3 attacks × 10/15/20 of 50."
)
@click.option(
    "--dataset", type=click.Choice(["mnist", "fashion-mnist"]), default="mnist", show_default=True
)
@click.option(
    "--rounds", type=click.IntRange(min=1), default=None, help="default 200 MNIST, 300 Fashion"
)
@click.option(
    "--cells",
    default="*:*:*",
    show_default=True,
    help="comma-separated METHOD:ATTACK:MALICIOUS globs, run in this order, e.g. 'qbfl:*:*,fedavg:*:*'",
)
@click.option(
    "--partition",
    type=click.Choice(["lotteryfl", "dirichlet", "iid"]),
    default="lotteryfl",
    show_default=True,
    help="how the training images are spread over the 50 clients (the paper: lotteryfl)",
)
@click.option(
    "--alpha", type=float, default=None, help="Dirichlet concentration (with --partition dirichlet)"
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cached-only", is_flag=True, help="print what the cache holds; run nothing")
@click.option(
    "--json", "as_json", is_flag=True, help="print the JSON document instead of the table"
)
def command(
    dataset: str,
    rounds: int | None,
    cells: str,
    partition: str,
    alpha: float | None,
    seed: int,
    cached_only: bool,
    as_json: bool,
) -> None:
    from qbfl.bench.report import emit
    from qbfl.orchestrator.simulate import LAST_ROUNDS, SimulationConfig, run_simulation

    rows: list[dict[str, Any]] = []
    for method, attack, malicious in _cells(cells):
        try:
            config = SimulationConfig(
                task=dataset, nodes=50, malicious=malicious, attack=attack, aggregator=method,
                rounds=rounds, seed=seed, device="cpu", partition=partition, alpha=alpha,
            )  # fmt: skip
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        doc = config.to_json()
        path = CACHE_ROOT / "table3" / f"{cache_key(doc)}.json"
        if cached_only and not path.is_file():
            continue

        def compute(config: SimulationConfig = config) -> dict[str, Any]:
            def progress(r: Any) -> None:
                if r.round % 10 == 0 or r.round == config.total_rounds:
                    print(
                        f"  {config.aggregator} {config.attack} {config.malicious}: round "
                        f"{r.round}/{config.total_rounds} acc {100 * r.accuracy:.2f}% {r.seconds:.2f}s",
                        file=sys.stderr,
                        flush=True,
                    )

            result = run_simulation(config, on_round=progress)
            return result.summary() | {"accuracy": [r.accuracy for r in result.records]}

        result, was_cached = cached_run("table3", doc, compute)
        mean_last = result[f"mean_last_{LAST_ROUNDS}"]
        paper = paper_value(dataset, method, attack, malicious)
        rows.append(
            {
                "method": method,
                "attack": attack,
                "malicious": malicious,
                "ours_%": round(100 * mean_last, 2),
                "paper_%": paper,
                "diff_pp": round(100 * mean_last - paper, 2),
                "rounds": result["rounds"],
                "s_per_round": round(result["mean_round_seconds"], 2),
                "cached": was_cached,
            }
        )
    split = "" if partition == "lotteryfl" else f"-{partition}" + (f"{alpha:g}" if alpha else "")
    emit(
        f"table3-{dataset}{split}",
        rows,
        as_json=as_json,
        title=f"Table 3 ({dataset}): mean test accuracy of the last {LAST_ROUNDS} rounds, "
        f"50 clients, seed {seed}, partition {partition}" + (f" α = {alpha:g}" if alpha else ""),
    )
