"""qbfl-orchestrator: launch QBFL networks: in-process simulation, local node processes, Docker containers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from qbfl.aggregation.registry import aggregator_names
from qbfl.command_line import QbflGroup
from qbfl.learning.attacks import ATTACKS
from qbfl.learning.collusion import COLLUDING_ATTACKS
from qbfl.learning.data import DATASETS
from qbfl.node.roles import RoleGroup, parse_roles
from qbfl.orchestrator.deploy_cli import compose, k8s
from qbfl.orchestrator.network_cli import COMMANDS as NETWORK_COMMANDS
from qbfl.orchestrator.network_cli import LinkList, MaliciousArg, model_only


@click.group(cls=QbflGroup, help="Launch and measure QBFL networks.")
def main() -> None:
    pass


def _stake(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


@main.command(
    help="Simulate a whole task in one process (all clients vectorised, Alg. 2 + stakes)."
)
@click.option("--task", type=click.Choice(DATASETS), default="mnist", show_default=True)
@click.option("--nodes", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--malicious",
    type=MaliciousArg(),
    default="0",
    show_default=True,
    help="How many clients attack (with --attack), or COUNT:ROLE[+ROLE],… as in `up` "
    "(consensus roles need --consensus)",
)
@click.option(
    "--attack",
    type=click.Choice(sorted([*ATTACKS, *COLLUDING_ATTACKS])),
    default="labelflip",
    show_default=True,
    help="per client: labelflip, bitflip, gaussian, random; colluding (docs/attacks.md): "
    "alie, ipm, ipm-large, minmax, minsum, adaptive",
)
@click.option(
    "--attack-knowledge",
    type=click.Choice(["omniscient", "colluders"]),
    default="omniscient",
    show_default=True,
    help="what a colluding attack sees: every honest update, or only the malicious clients' own",
)
@click.option(
    "--aggregator", type=click.Choice(aggregator_names()), default="qbfl", show_default=True
)
@click.option(
    "--rounds", type=click.IntRange(min=1), default=None, help="default: 200 MNIST, 300 Fashion"
)
@click.option("--dp/--no-dp", default=False, help="DP-SGD at (ε=4, δ=1e-5)")
@click.option(
    "--dp-accounting",
    type=click.Choice(["run", "round"]),
    default="run",
    show_default=True,
    help="with --dp: (ε, δ) for the whole run, or for each round's release (reports the composed ε)",
)
@click.option(
    "--partition",
    type=click.Choice(["lotteryfl", "dirichlet", "iid"]),
    default="lotteryfl",
    show_default=True,
    help="how the training images are spread (lotteryfl: Section 5.1's non-IID shards)",
)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Dirichlet concentration, with --partition dirichlet (0.1: ~2 classes per client)",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--f", "f", type=click.IntRange(min=0), default=None, help="default ⌊0.4·nodes⌋")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="default run/simulate/<task>-<aggregator>-<attack>-m<malicious>-s<seed>",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torch threads; more than 1 only when this run has the cores to itself",
)
@click.option(
    "--consensus",
    is_flag=True,
    help="Run the full protocol: every node a NodeRuntime (committees, QBA over BB84 keys, votes, "
    "blocks, a SQLite ledger per node) on the in-memory network.",
)
@click.option("--committee", type=click.IntRange(min=3), default=5, show_default=True)
@click.option("--qba", type=click.Choice(["detectable", "paper"]), default="detectable")
@click.option("--qkd", type=click.Choice(["bb84", "seeded"]), default="bb84", show_default=True)
@click.option("--eavesdrop", type=LinkList(), default=None, help="With --consensus: tapped links.")
@click.option("--samples-per-client", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--test-samples", type=click.IntRange(min=1), default=None, hidden=True)
def simulate(
    task: str,
    nodes: int,
    malicious: int | tuple[RoleGroup, ...],
    attack: str,
    attack_knowledge: str,
    aggregator: str,
    rounds: int | None,
    dp: bool,
    dp_accounting: str,
    partition: str,
    alpha: float | None,
    seed: int,
    f: int | None,
    device: str,
    out: Path | None,
    threads: int,
    consensus: bool,
    committee: int,
    qba: str,
    qkd: str,
    eavesdrop: tuple[tuple[int, int], ...] | None,
    samples_per_client: int | None,
    test_samples: int | None,
) -> None:
    from qbfl.orchestrator.plot import plot_accuracy
    from qbfl.orchestrator.simulate import RoundRecord, SimulationConfig, run_simulation

    if consensus:
        from qbfl.orchestrator.fullsim_cli import simulate_consensus

        # The full protocol's nodes train as `qbfl-node` does: LotteryFL shards, own updates.
        plain_only = [
            flag
            for flag, used in (
                ("--partition", partition != "lotteryfl"),
                ("--alpha", alpha is not None),
                ("--attack-knowledge", attack_knowledge != "omniscient"),
                ("--samples-per-client", samples_per_client is not None),
            )
            if used
        ]
        if plain_only:
            raise click.UsageError(
                f"{', '.join(plain_only)}: plain simulator only; --consensus nodes train as "
                "qbfl-node does (LotteryFL shards, each node's own update)"
            )

        groups = (
            malicious
            if isinstance(malicious, tuple)
            else ((RoleGroup(malicious, parse_roles([attack])),) if malicious else ())
        )
        simulate_consensus(
            task=task,
            nodes=nodes,
            malicious=groups,
            aggregator=aggregator,
            rounds=rounds,
            seed=seed,
            f=f,
            committee=committee,
            qba=qba,
            qkd=qkd,
            eavesdrop=eavesdrop or (),
            device=device,
            threads=threads,
            out=out,
            test_samples=test_samples,
            dp=dp,
            dp_accounting=dp_accounting,
        )
        return
    if eavesdrop:
        raise click.UsageError("--eavesdrop needs --consensus (the plain simulator has no QKD)")
    if isinstance(malicious, tuple):
        malicious, attack = model_only(malicious)

    if malicious > nodes:
        raise click.BadParameter(
            f"{malicious} malicious clients but only {nodes} nodes", param_hint="--malicious"
        )
    if f is not None and f >= nodes:
        raise click.BadParameter(f"f={f} must be below --nodes {nodes}", param_hint="--f")
    try:
        config = SimulationConfig(
            task=task,
            nodes=nodes,
            malicious=malicious,
            attack=attack,
            attack_knowledge=attack_knowledge,
            aggregator=aggregator,
            rounds=rounds,
            dp=dp,
            dp_accounting=dp_accounting,
            partition=partition,
            alpha=alpha,
            seed=seed,
            f=f,
            device=device,
            threads=threads,
            samples_per_client=samples_per_client,
            test_samples=test_samples,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    out = out or Path("run/simulate") / f"{task}-{aggregator}-{attack}-m{malicious}-s{seed}"
    out.mkdir(parents=True, exist_ok=True)
    rounds_path = out / "rounds.jsonl"
    total = config.total_rounds
    click.echo(
        f"simulating {task} ({config.model_name}), {nodes} nodes, {malicious} {attack}, "
        f"{aggregator}, f={config.fault_tolerance}, {total} rounds, partition {partition}"
        + (f" α={alpha:g}" if alpha is not None else "")
        + (f", DP per {dp_accounting}" if dp else "")
        + f" -> {out}"
    )
    with rounds_path.open("w") as log:

        def on_round(record: RoundRecord) -> None:
            log.write(
                json.dumps(
                    record.__dict__
                    | {"selected": list(record.selected), "dropped": list(record.dropped)}
                )
                + "\n"
            )
            log.flush()
            eps = f"  eps {record.epsilon:.2f}" if dp else ""
            click.echo(
                f"round {record.round:>4}/{total}  acc {100 * record.accuracy:6.2f}%  "
                f"loss {record.loss:.4f}  {record.seconds:5.2f}s  stake honest "
                f"{_stake(record.honest_stake)} malicious {_stake(record.malicious_stake)}  "
                f"malicious selected {100 * record.malicious_selected:.0f}%{eps}"
                + (f"  diverged {list(record.dropped)}" if record.dropped else "")
            )

        try:
            result = run_simulation(config, on_round=on_round)
        except ValueError as exc:  # e.g. the aggregator needs more clients at this f
            raise click.UsageError(str(exc)) from exc
    summary = result.summary()
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_accuracy(
        {aggregator: [r.accuracy for r in result.records]},
        out / "accuracy.png",
        title=f"{task}: {malicious}/{nodes} {attack}, {aggregator}{', DP' if dp else ''}",
    )
    click.echo(
        f"final accuracy {100 * result.final_accuracy:.2f}%, mean of the last "
        f"{min(20, len(result.records))} rounds {100 * result.mean_last():.2f}%"
    )
    if dp:
        click.echo(
            f"privacy: ε = {result.extra['round_epsilon']:.3f} per round, "
            f"{result.records[-1].epsilon:.3f} composed over the run (δ = {config.dp_delta:g})"
        )
    if "f_used" in result.extra:
        click.echo(f"{aggregator} aggregated with f = {result.extra['f_used']} (task f too large)")
    click.echo(f"wrote {rounds_path}, {out / 'summary.json'}, {out / 'accuracy.png'}")
    sys.stdout.flush()


for _command in (*NETWORK_COMMANDS, compose, k8s):
    main.add_command(_command)

if __name__ == "__main__":
    main()
