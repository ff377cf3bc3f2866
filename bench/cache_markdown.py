"""Markdown of the cached Table 2 / Table 3 / Fig. 4 / robustness cells, ours beside the paper, for docs/benchmarks.md.

    .venv/bin/python bench/cache_markdown.py   # from the repository root

Reads only bench/results/cache/ (what `qbfl-bench table2|table3|fig4|robustness` stored); runs
nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from qbfl.bench.fig4 import PAPER_FIG4
from qbfl.bench.table2 import MODEL_NAMES, PAPER_TABLE2
from qbfl.bench.table3 import ATTACKS, MALICIOUS, METHODS, PAPER_ROW, paper_value

CACHE = Path("bench/results/cache")


def _cells(table: str, *, seed: int | None = 0) -> list[dict[str, Any]]:
    """The cached cells of one table; by default only seed 0, the seed every table is run at."""
    cells = [json.loads(p.read_text()) for p in sorted((CACHE / table).glob("*.json"))]
    return [d for d in cells if seed is None or d["config"].get("seed", 0) == seed]


def table2() -> list[str]:
    # a centralized run at another learning rate (`--central-lr`) is a row of its own
    done = {
        (c["dataset"], c["scenario"], c.get("lr"), c["model"]): d
        for d in _cells("table2")
        for c in [d["config"]]
    }
    other_lr = sorted({lr for _, _, lr, _ in done if lr is not None})
    rows = [("centralized", None), *(("centralized", lr) for lr in other_lr), ("distributed", None)]
    lines = [
        "| dataset | scenario | model | ours (final) | paper | diff (pp) | ours, last-20 mean | ours, best |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset in ("mnist", "fashion-mnist"):
        for scenario, lr in rows:
            label = scenario if lr is None else f"{scenario}, lr {lr}"
            for variant in ("original", "mpo"):
                model = MODEL_NAMES[(dataset, variant)]
                paper = PAPER_TABLE2[(dataset, scenario, variant)]
                d = done.get((dataset, scenario, lr, model))
                if d is None:
                    if lr is None:
                        lines.append(
                            f"| {dataset} | {label} | {model} | not run | {paper:.2f} % |  |  |  |"
                        )
                    continue
                final = 100 * d["final_accuracy"]
                curve = d["accuracy"]
                last = 100 * sum(curve[-20:]) / len(curve[-20:])
                lines.append(
                    f"| {dataset} | {label} | {model} | {final:.2f} % | {paper:.2f} % "
                    f"| {final - paper:+.2f} | {last:.2f} % | {100 * max(curve):.2f} % |"
                )
    return lines


def table3(dataset: str) -> list[str]:
    done = {
        (c["aggregator"], c["attack"], c["malicious"]): d
        for d in _cells("table3")
        if (c := d["config"])["task"] == dataset and "partition" not in c  # the paper's LotteryFL
    }
    head = "| method | " + " | ".join(f"{a} {m}" for a in ATTACKS for m in MALICIOUS) + " |"
    lines = [head, "|---|" + "---|" * (len(ATTACKS) * len(MALICIOUS))]
    for method in METHODS:
        cells = []
        for attack in ATTACKS:
            for m in MALICIOUS:
                d = done.get((method, attack, m))
                paper = paper_value(dataset, method, attack, m)
                cells.append(
                    f"{100 * d['mean_last_20']:.2f} / {paper:.2f}" if d else f"– / {paper:.2f}"
                )
        label = f"{method} †" if method in PAPER_ROW else method
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{len(done)} of {len(METHODS) * len(ATTACKS) * len(MALICIOUS)} cells run.")
    return lines


def table2_seeds() -> list[str]:
    """Table 2 cells run at more than one seed (`qbfl-bench table2 --seed S`): the spread."""
    by_cell: dict[tuple[Any, ...], dict[int, dict[str, Any]]] = {}
    for d in _cells("table2", seed=None):
        c = d["config"]
        key = (c["dataset"], c["scenario"], c.get("lr"), c["model"])
        by_cell.setdefault(key, {})[c.get("seed", 0)] = d
    lines = [
        "| dataset | scenario | model | seeds | final, per seed | final mean ± sd "
        "| last-20 mean ± sd | paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, scenario, lr, model), runs in sorted(by_cell.items(), key=str):
        if len(runs) < 2:
            continue
        seeds = sorted(runs)
        finals = np.array([100 * runs[s]["final_accuracy"] for s in seeds])
        lasts = np.array([100 * np.mean(runs[s]["accuracy"][-20:]) for s in seeds])
        variant = next(v for (ds, v), m in MODEL_NAMES.items() if ds == dataset and m == model)
        label = scenario if lr is None else f"{scenario}, lr {lr}"
        lines.append(
            f"| {dataset} | {label} | {model} | {', '.join(map(str, seeds))} "
            f"| {' / '.join(f'{x:.2f}' for x in finals)} "
            f"| {finals.mean():.2f} ± {finals.std(ddof=1):.2f} % "
            f"| {lasts.mean():.2f} ± {lasts.std(ddof=1):.2f} % "
            f"| {PAPER_TABLE2[(dataset, scenario, variant)]:.2f} % |"
        )
    return lines if len(lines) > 2 else []


def table3_partitions(dataset: str = "mnist") -> list[str]:
    """Table 3 cells run on other partitions (`--partition dirichlet --alpha A`), beside LotteryFL."""
    by_key: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    for d in _cells("table3"):
        c = d["config"]
        if c["task"] != dataset:
            continue
        split = c.get("partition", "lotteryfl") + (f" α = {c['alpha']:g}" if c.get("alpha") else "")
        by_key[(c["aggregator"], c["attack"], c["malicious"], split)] = d
    splits = sorted({k[3] for k in by_key if k[3] != "lotteryfl"})
    if not splits:
        return []
    head = "| method | partition | " + " | ".join(f"{a} {m}" for a in ATTACKS for m in MALICIOUS)
    lines = [head + " |", "|---|---|" + "---|" * (len(ATTACKS) * len(MALICIOUS))]
    for method in sorted({k[0] for k in by_key if k[3] != "lotteryfl"}):
        for split in ["lotteryfl", *splits]:
            cells = [
                f"{100 * d['mean_last_20']:.2f}"
                if (d := by_key.get((method, a, m, split)))
                else "–"
                for a in ATTACKS
                for m in MALICIOUS
            ]
            lines.append(f"| {method} | {split} | " + " | ".join(cells) + " |")
    return lines


def robustness() -> list[str]:
    """The robustness grid: last-20 mean accuracy (% of malicious among the kept, last 20 rounds)."""
    from qbfl.bench.robustness import ATTACKS as R_ATTACKS
    from qbfl.bench.robustness import RULES as R_RULES

    done = {
        (c["aggregator"], c["attack"]): d
        for d in _cells("robustness")
        if (c := d["config"]).get("attack_knowledge", "omniscient") == "omniscient"
        and c["malicious"] == 20
    }
    if not done:
        return []
    lines = [
        "| rule | " + " | ".join(R_ATTACKS) + " |",
        "|---|" + "---|" * len(R_ATTACKS),
    ]
    for rule in R_RULES:
        cells = []
        for attack in R_ATTACKS:
            d = done.get((rule, attack))
            if d is None:
                cells.append("–")
                continue
            kept = d["malicious_selected"][-20:]
            cells.append(f"{100 * d['mean_last_20']:.2f} ({100 * sum(kept) / len(kept):.0f} %)")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{len(done)} of {len(R_RULES) * len(R_ATTACKS)} cells run.")
    return lines


def fig4() -> list[str]:
    lines = [
        "| dataset | malicious | DP accounting | rounds | final (ours) | paper | ε per round "
        "| ε of the run | σ | s / round |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    # dataset in the paper's order (MNIST first), then the number of malicious clients
    order = list(PAPER_FIG4)
    cells = _cells("fig4")
    cells.sort(
        key=lambda d: (
            order.index(d["config"]["task"]),
            d["config"]["malicious"],
            d["config"].get("dp_accounting", "run") == "round",
        )
    )
    for d in cells:
        c = d["config"]
        paper = PAPER_FIG4[c["task"]].get(c["malicious"])
        accounting = c.get("dp_accounting", "run")
        per_round = d.get("round_epsilon")
        lines.append(
            f"| {c['task']} | {c['malicious']} | {accounting} | {d['rounds']} "
            f"| {100 * d['final_accuracy']:.2f} % | {paper} % "
            f"| {f'{per_round:.3f}' if per_round is not None else '–'} "
            f"| {d['final_epsilon']:.3f} | {d['noise_multiplier']:.3f} "
            f"| {d['mean_round_seconds']:.2f} |"
        )
    return lines


def main() -> None:
    print("### Table 2\n")
    print("\n".join(table2()))
    if spread := table2_seeds():
        print("\n### Table 2 across seeds\n")
        print("\n".join(spread))
    for dataset in ("mnist", "fashion-mnist"):
        print(
            f"\n### Table 3, {dataset}: ours / paper, mean test accuracy of the last 20 rounds (%)\n"
        )
        print("\n".join(table3(dataset)))
    if partitions := table3_partitions("mnist"):
        print(
            "\n### Table 3, mnist, other partitions: mean test accuracy of the last 20 rounds (%)\n"
        )
        print("\n".join(partitions))
    print("\n### Fig. 4\n")
    print("\n".join(fig4()))
    if grid := robustness():
        print("\n### Robustness (MNIST, 20 of 50 malicious, omniscient colluding attacks)\n")
        print("\n".join(grid))


if __name__ == "__main__":
    main()
