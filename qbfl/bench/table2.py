"""table2: centralized vs distributed (50 non-IID clients, FedAvg) accuracy of dense and MPO models (Table 2)."""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from typing import Any

import click

# The paper's Table 2 (test accuracy, %): the reference column, not a result of this code.
PAPER_TABLE2: dict[tuple[str, str, str], float] = {
    ("mnist", "centralized", "original"): 98.15,
    ("mnist", "centralized", "mpo"): 97.92,
    ("mnist", "distributed", "original"): 97.87,
    ("mnist", "distributed", "mpo"): 97.47,
    ("fashion-mnist", "centralized", "original"): 89.20,
    ("fashion-mnist", "centralized", "mpo"): 88.92,
    ("fashion-mnist", "distributed", "original"): 89.18,
    ("fashion-mnist", "distributed", "mpo"): 88.55,
}
MODEL_NAMES = {
    ("mnist", "original"): "fcnn",
    ("mnist", "mpo"): "fcnn-mpo",
    ("fashion-mnist", "original"): "cnn",
    ("fashion-mnist", "mpo"): "cnn-mpo",
}


def centralized(
    dataset: str, model_name: str, epochs: int, seed: int, lr: float | None = None
) -> dict[str, Any]:
    """One model on all 60 000 training images, the clients' optimiser (or learning rate `lr`)."""
    import torch

    from qbfl.learning.data import load_dataset
    from qbfl.learning.models import build_model, flatten_params, load_flat_
    from qbfl.learning.training import TASK_TRAIN_CONFIG, train_local
    from qbfl.orchestrator.simulate import evaluate, keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    train, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    model = build_model(model_name, seed=seed)
    cfg = TASK_TRAIN_CONFIG[dataset]
    if lr is not None:
        cfg = dataclasses.replace(cfg, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    curve = []
    start = time.perf_counter()
    for epoch in range(epochs):
        # One epoch per call: a fresh optimiser each epoch, like a client each round.
        update = train_local(model, train.images, train.labels, cfg, generator=gen, device=cpu)
        load_flat_(model, flatten_params(model) + update)
        accuracy, _ = evaluate(model, test, cpu)
        curve.append(accuracy)
        print(
            f"  centralized {model_name} epoch {epoch + 1}/{epochs} acc {100 * accuracy:.2f}%",
            file=sys.stderr,
            flush=True,
        )
    return {"final_accuracy": curve[-1], "accuracy": curve, "seconds": time.perf_counter() - start}


def distributed(dataset: str, model_name: str, rounds: int, seed: int) -> dict[str, Any]:
    """50 non-IID clients (DESIGN.md §3), FedAvg, no attack, `rounds` rounds."""
    from qbfl.orchestrator.simulate import SimulationConfig, run_simulation

    config = SimulationConfig(
        task=dataset,
        nodes=50,
        aggregator="fedavg",
        rounds=rounds,
        seed=seed,
        model=model_name,
        device="cpu",
    )

    def progress(r: Any) -> None:
        if r.round % 10 == 0 or r.round == rounds:
            print(
                f"  distributed {model_name} round {r.round}/{rounds} acc {100 * r.accuracy:.2f}%",
                file=sys.stderr,
                flush=True,
            )

    start = time.perf_counter()
    result = run_simulation(config, on_round=progress)
    return {
        "final_accuracy": result.final_accuracy,
        "accuracy": [r.accuracy for r in result.records],
        "seconds": time.perf_counter() - start,
    }


@click.command(help="Table 2: centralized and distributed accuracy, original and MPO models.")
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=None,
    help="epochs / rounds; default 200 MNIST, 300 Fashion",
)
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    type=click.Choice(["mnist", "fashion-mnist"]),
    help="default both",
)
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    type=click.Choice(["centralized", "distributed"]),
    help="default both (centralized is 200-300 full-data epochs: hours here)",
)
@click.option(
    "--central-lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="centralized runs' learning rate (default: the clients', 0.05 MNIST / 0.02 Fashion; "
    "the paper does not give one)",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cached-only", is_flag=True, help="print what the cache holds; run nothing")
@click.option(
    "--json", "as_json", is_flag=True, help="print the JSON document instead of the table"
)
def command(
    rounds: int | None,
    datasets: tuple[str, ...],
    scenarios: tuple[str, ...],
    central_lr: float | None,
    seed: int,
    cached_only: bool,
    as_json: bool,
) -> None:
    from qbfl.bench.report import emit
    from qbfl.bench.table3 import CACHE_ROOT, cache_key, cached_run
    from qbfl.orchestrator.simulate import TASK_ROUNDS, SimulationConfig

    rows = []
    for dataset in datasets or ("mnist", "fashion-mnist"):
        r = rounds or TASK_ROUNDS[dataset]
        for scenario in scenarios or ("centralized", "distributed"):
            for variant in ("original", "mpo"):
                model_name = MODEL_NAMES[(dataset, variant)]
                doc = {
                    "dataset": dataset,
                    "scenario": scenario,
                    "model": model_name,
                    "rounds": r,
                    "seed": seed,
                    "nodes": 50,
                }
                if scenario == "distributed":
                    # the simulator's local-training clip (docs/bench-simulator.md) changes results
                    doc["clip_norm"] = SimulationConfig().clip_norm
                elif central_lr is not None:  # absent by default: earlier caches stay valid
                    doc["lr"] = central_lr
                if cached_only and not (CACHE_ROOT / "table2" / f"{cache_key(doc)}.json").is_file():
                    continue
                if scenario == "centralized":
                    run = functools.partial(centralized, dataset, model_name, r, seed, central_lr)
                else:
                    run = functools.partial(distributed, dataset, model_name, r, seed)
                result, was_cached = cached_run("table2", doc, run)
                paper = PAPER_TABLE2[(dataset, scenario, variant)]
                ours = 100 * result["final_accuracy"]
                rows.append(
                    {
                        "dataset": dataset,
                        "scenario": scenario,
                        "model": model_name,
                        "rounds": r,
                        "lr": doc.get("lr"),
                        "ours_%": round(ours, 2),
                        "paper_%": paper,
                        "diff_pp": round(ours - paper, 2),
                        "seconds": round(result["seconds"], 1),
                        "cached": was_cached,
                    }
                )
    emit(
        "table2",
        rows,
        as_json=as_json,
        title="Table 2: final test accuracy (epochs centralized / rounds distributed)",
    )
