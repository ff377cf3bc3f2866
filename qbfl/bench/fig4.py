"""fig4: accuracy under differential privacy with 0–40 % malicious clients (the paper's Fig. 4), cached per run."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from qbfl.aggregation.registry import aggregator_names
from qbfl.command_line import NumberList

# Section 5.2, "Accuracy under differential privacy": final accuracy after 200 (MNIST) / 300
# (Fashion) rounds at (ε = 4, δ = 1e-5), malicious clients choosing an attack at random each
# round. The paper states two points per dataset; these are its numbers, not results of this code.
PAPER_FIG4: dict[str, dict[int, float]] = {
    "mnist": {0: 95.59, 20: 93.20},
    "fashion-mnist": {0: 86.96, 20: 83.68},
}


@click.command(
    name="fig4", help="Fig. 4: DP-SGD (ε = 4, δ = 1e-5) accuracy with 0 and 20 of 50 malicious."
)
@click.option(
    "--dataset", type=click.Choice(["mnist", "fashion-mnist"]), default="mnist", show_default=True
)
@click.option(
    "--malicious",
    type=NumberList(int, low=0, high=51),
    default="0,20",
    show_default=True,
    help="malicious clients of 50 (attack: random, drawn each round)",
)
@click.option(
    "--rounds", type=click.IntRange(min=1), default=None, help="default 200 MNIST, 300 Fashion"
)
@click.option(
    "--aggregator", type=click.Choice(aggregator_names()), default="qbfl", show_default=True
)
@click.option(
    "--dp-accounting",
    type=click.Choice(["run", "round"]),
    default="run",
    show_default=True,
    help="(ε, δ) for the whole run, or for each round's release (the paper's reading)",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cached-only", is_flag=True, help="print what the cache holds; run nothing")
@click.option(
    "--json", "as_json", is_flag=True, help="print the JSON document instead of the table"
)
def command(
    dataset: str,
    malicious: list[int],
    rounds: int | None,
    aggregator: str,
    dp_accounting: str,
    seed: int,
    cached_only: bool,
    as_json: bool,
) -> None:
    from qbfl.bench.report import RESULTS_DIR, emit
    from qbfl.bench.table3 import CACHE_ROOT, cache_key, cached_run
    from qbfl.orchestrator.plot import plot_accuracy
    from qbfl.orchestrator.simulate import SimulationConfig, run_simulation

    rows: list[dict[str, Any]] = []
    curves: dict[str, list[float]] = {}
    for m in malicious:
        try:
            config = SimulationConfig(
                task=dataset, nodes=50, malicious=m, attack="random", aggregator=aggregator,
                rounds=rounds, seed=seed, dp=True, device="cpu", dp_accounting=dp_accounting,
            )  # fmt: skip
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        doc = config.to_json()
        # The same run under the other accounting, if cached: shown beside, never computed here.
        other = dataclasses.replace(
            config, dp_accounting="round" if dp_accounting == "run" else "run"
        )
        other_path = CACHE_ROOT / "fig4" / f"{cache_key(other.to_json())}.json"
        other_final = (
            round(100 * json.loads(other_path.read_text())["final_accuracy"], 2)
            if other_path.is_file()
            else ""
        )
        if cached_only and not (CACHE_ROOT / "fig4" / f"{cache_key(doc)}.json").is_file():
            continue

        def compute(config: SimulationConfig = config) -> dict[str, Any]:
            def progress(r: Any) -> None:
                if r.round % 10 == 0 or r.round == config.total_rounds:
                    print(
                        f"  DP {config.task} m={config.malicious}: round {r.round}/"
                        f"{config.total_rounds} acc {100 * r.accuracy:.2f}% eps {r.epsilon:.3f} "
                        f"{r.seconds:.2f}s",
                        file=sys.stderr,
                        flush=True,
                    )

            result = run_simulation(config, on_round=progress)
            return result.summary() | {
                "accuracy": [r.accuracy for r in result.records],
                "epsilon": [r.epsilon for r in result.records],
            }

        result, was_cached = cached_run("fig4", doc, compute)
        paper = PAPER_FIG4[dataset].get(m)
        ours = 100 * result["final_accuracy"]
        curves[f"{m} malicious"] = result["accuracy"]
        rows.append(
            {
                "malicious": m,
                "rounds": result["rounds"],
                "final_%": round(ours, 2),
                "paper_final_%": paper if paper is not None else "",
                "diff_pp": round(ours - paper, 2) if paper is not None else "",
                "mean_last_20_%": round(100 * result["mean_last_20"], 2),
                "accounting": dp_accounting,
                f"final_%_under_{other.dp_accounting}": other_final,
                "round_epsilon": round(result["round_epsilon"], 3)
                if "round_epsilon" in result
                else "",
                "spent_epsilon": round(result["final_epsilon"], 3),
                "noise_multiplier": round(result["noise_multiplier"], 3),
                "s_per_round": round(result["mean_round_seconds"], 2),
                "cached": was_cached,
            }
        )
    # `run` keeps the file names it always had; `round` gets its own.
    suffix = "" if dp_accounting == "run" else "-round"
    budget = "the whole run" if dp_accounting == "run" else "each round"
    if curves:
        plot_accuracy(
            curves,
            Path(RESULTS_DIR) / f"fig4-{dataset}{suffix}.png",
            title=f"{dataset}: DP-SGD (ε = 4, δ = 1e-5 for {budget}), {aggregator}, attack random",
        )
    emit(
        f"fig4-{dataset}{suffix}",
        rows,
        as_json=as_json,
        title=f"Fig. 4 ({dataset}): DP-SGD at (ε = 4, δ = 1e-5) for {budget}, {aggregator}, "
        "random attacks",
    )
