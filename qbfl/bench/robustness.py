"""robustness: the strong attacks of the literature against every rule, 20 of 50 malicious on MNIST, resumable cell by cell."""

from __future__ import annotations

import fnmatch
import sys
from typing import Any

import click

# Issue 13: attacks × rules, MNIST, 50 clients, 20 malicious (40 %), 200 rounds, last-20 mean.
ATTACKS = ("alie", "ipm", "ipm-large", "minmax", "minsum", "adaptive")
RULES = (
    "fedavg", "median", "trimmed-mean", "krum", "multi-krum", "bulyan", "geomed", "cclip",
    "nnm+qbfl", "qbfl", "qbfl-distance", "qbfl-median",
)  # fmt: skip
# Ours (the paper's rule and its variants): the goal is one of them ≥ 90 % under every attack.
OURS = ("qbfl", "qbfl-distance", "qbfl-median", "nnm+qbfl")
GOAL = 0.90


def _cells(patterns: str) -> list[tuple[str, str]]:
    """Cells matching comma-separated RULE:ATTACK globs, in the order of the patterns."""
    every = [(r, a) for r in RULES for a in ATTACKS]
    chosen: list[tuple[str, str]] = []
    for pattern in patterns.split(","):
        parts = pattern.strip().split(":")
        if len(parts) != 2:
            raise click.BadParameter(f"{pattern!r} is not RULE:ATTACK", param_hint="--cells")
        hits = [
            c for c in every if all(fnmatch.fnmatch(v, p) for v, p in zip(c, parts, strict=True))
        ]
        if not hits:
            raise click.BadParameter(f"{pattern!r} matches no cell", param_hint="--cells")
        chosen += [c for c in hits if c not in chosen]
    return chosen


@click.command(
    name="robustness",
    help="ALIE, IPM (ε 0.1 / 100), Min-Max, Min-Sum and an adaptive attack on Alg. 2 against "
    "12 rules: MNIST, 50 clients, 20 malicious, last-20 mean accuracy. Cached per cell.",
)
@click.option("--malicious", type=click.IntRange(min=1, max=49), default=20, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=200, show_default=True)
@click.option(
    "--cells",
    default="*:*",
    show_default=True,
    help="comma-separated RULE:ATTACK globs, run in this order, e.g. 'qbfl*:*,nnm+qbfl:*'",
)
@click.option(
    "--knowledge",
    type=click.Choice(["omniscient", "colluders"]),
    default="omniscient",
    show_default=True,
    help="what the colluding attacks see: all honest updates, or their own",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--cached-only", is_flag=True, help="print what the cache holds; run nothing")
@click.option(
    "--json", "as_json", is_flag=True, help="print the JSON document instead of the table"
)
def command(
    malicious: int,
    rounds: int,
    cells: str,
    knowledge: str,
    seed: int,
    threads: int,
    cached_only: bool,
    as_json: bool,
) -> None:
    from qbfl.bench.report import emit
    from qbfl.bench.table3 import CACHE_ROOT, cache_key, cached_run
    from qbfl.orchestrator.simulate import LAST_ROUNDS, SimulationConfig, run_simulation

    rows: list[dict[str, Any]] = []
    for rule, attack in _cells(cells):
        config = SimulationConfig(
            task="mnist", nodes=50, malicious=malicious, attack=attack, aggregator=rule,
            rounds=rounds, seed=seed, device="cpu", threads=threads, attack_knowledge=knowledge,
        )  # fmt: skip
        doc = config.to_json()
        if cached_only and not (CACHE_ROOT / "robustness" / f"{cache_key(doc)}.json").is_file():
            continue

        def compute(config: SimulationConfig = config) -> dict[str, Any]:
            def progress(r: Any) -> None:
                if r.round % 20 == 0 or r.round == config.total_rounds:
                    print(
                        f"  {config.aggregator} {config.attack}: round {r.round}/"
                        f"{config.total_rounds} acc {100 * r.accuracy:.2f}% malicious kept "
                        f"{100 * r.malicious_selected:.0f}% {r.seconds:.2f}s",
                        file=sys.stderr,
                        flush=True,
                    )

            result = run_simulation(config, on_round=progress)
            return result.summary() | {
                "accuracy": [r.accuracy for r in result.records],
                "malicious_selected": [r.malicious_selected for r in result.records],
            }

        result, was_cached = cached_run("robustness", doc, compute)
        kept = result["malicious_selected"][-LAST_ROUNDS:]
        rows.append(
            {
                "rule": rule,
                "attack": attack,
                "mean_last_20_%": round(100 * result[f"mean_last_{LAST_ROUNDS}"], 2),
                "final_%": round(100 * result["final_accuracy"], 2),
                "malicious_kept_last_20_%": round(100 * sum(kept) / len(kept), 1),
                "f_used": ",".join(str(f) for f in result.get("f_used", [result["config"]["f"]])),
                "s_per_round": round(result["mean_round_seconds"], 2),
                "cached": was_cached,
            }
        )
    grid = {(r["rule"], r["attack"]): r["mean_last_20_%"] for r in rows}
    verdict = {
        attack: max(
            ((grid[(rule, attack)], rule) for rule in OURS if (rule, attack) in grid), default=None
        )
        for attack in ATTACKS
    }
    # A defender picks one rule before the attack: each rule's worst attack, and the best of
    # those (only rules whose six cells are all run; the per-attack best above mixes rules)
    worst = {
        rule: min((grid[(rule, attack)], attack) for attack in ATTACKS)
        for rule in RULES
        if all((rule, attack) in grid for attack in ATTACKS)
    }
    best_rule = max(((v[0], rule) for rule, v in worst.items()), default=None)
    emit(
        "robustness" if knowledge == "omniscient" else f"robustness-{knowledge}",
        rows,
        as_json=as_json,
        title=f"Robustness (MNIST, 50 clients, {malicious} malicious, {knowledge} attacks, seed "
        f"{seed}): mean test accuracy of the last {LAST_ROUNDS} rounds",
        extra={
            "best_of_ours": {a: v for a, v in verdict.items() if v is not None},
            "worst_attack_per_rule": worst,
            "best_rule_worst_case": best_rule,
        },
    )
    if not as_json and worst:
        assert best_rule is not None
        print(
            "worst case of each rule (%): "
            + ", ".join(f"{rule} {v:.2f} ({a})" for rule, (v, a) in worst.items())
            + f"\nbest single rule against its worst attack: {best_rule[1]} at {best_rule[0]:.2f} %"
            f" (goal {100 * GOAL:.0f} %)"
        )
