"""The `simulate --consensus` command body: run the full protocol in one process, print, write."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from qbfl.node.roles import RoleGroup


def simulate_consensus(
    *,
    task: str,
    nodes: int,
    malicious: tuple[RoleGroup, ...],
    aggregator: str,
    rounds: int | None,
    seed: int,
    f: int | None,
    committee: int,
    qba: str,
    qkd: str,
    eavesdrop: tuple[tuple[int, int], ...],
    device: str,
    threads: int,
    out: Path | None,
    test_samples: int | None,
    dp: bool = False,
    dp_accounting: str = "run",
) -> None:
    from qbfl.orchestrator.fullsim import ChainRound, FullSimConfig, run_full_protocol
    from qbfl.orchestrator.launch import plot_network
    from qbfl.orchestrator.simulate import TASK_ROUNDS

    config = FullSimConfig(
        task=task,
        nodes=nodes,
        malicious=malicious,
        aggregator=aggregator,
        rounds=rounds,
        seed=seed,
        f=f,
        committee=committee,
        qba=qba,
        qkd=qkd,
        eavesdrop=eavesdrop,
        device=device,
        threads=threads,
        test_samples=test_samples,
        dp=dp,
        dp_accounting=dp_accounting,
    )
    spec = "-".join(f"{g.count}{g.roles.label}" for g in malicious) or "honest"
    out = out or Path("run/simulate") / f"{task}-consensus-{aggregator}-{spec}-s{seed}"
    out.mkdir(parents=True, exist_ok=True)
    total = rounds or TASK_ROUNDS[task]
    click.echo(
        f"simulating the full protocol: {task}, {nodes} nodes "
        f"({', '.join(f'{g.count} {g.roles.label}' for g in malicious) or 'all honest'}), "
        f"{aggregator}, committee {committee}, QBA {qba}, keys {qkd}, {total} rounds -> {out}"
    )
    rows = []
    with (out / "rounds.jsonl").open("w") as log:

        def on_round(r: ChainRound) -> None:
            doc = r.__dict__ | {"selected": list(r.selected)}
            log.write(json.dumps(doc) + "\n")
            log.flush()
            rows.append(doc)
            stake_bad = "-" if math.isnan(r.malicious_stake) else f"{r.malicious_stake:.1f}"
            click.echo(
                f"round {r.round:>4}/{total}  acc {100 * r.accuracy:6.2f}%  view {r.view}  "
                f"stake honest {r.honest_stake:.1f} malicious {stake_bad}  "
                f"malicious selected {100 * r.malicious_selected:.0f}%  {r.wall_s:6.1f}s"
            )

        result = run_full_protocol(config, out, on_round=on_round)
    if rows:
        plot_network(rows, out / "accuracy.png", title=f"{task}, {nodes} nodes, full protocol")
    summary = result.summary()
    click.echo(
        f"final accuracy {100 * summary['final_accuracy']:.2f}%, mean of the last "
        f"{min(20, len(rows))} rounds {100 * summary['mean_last_20']:.2f}%; "
        f"{summary['view_changes']} view changes; honest ledgers identical: "
        f"{summary['honest_heads_agree']}"
    )
    if summary.get("spent_epsilon") is not None:
        per_round = "each round's release (4, 1e-5); " if dp_accounting == "round" else ""
        click.echo(
            f"DP ({dp_accounting}): {per_round}the whole run spent ε = "
            f"{summary['spent_epsilon']:.2f} at δ = 1e-5"
        )
    click.echo(f"wrote {out / 'rounds.jsonl'}, {out / 'summary.json'}, {out / 'accuracy.png'}")
