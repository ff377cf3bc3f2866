"""network: 50 local node processes against a per-client-loop simulator of the same clients, one run.

Both sides train the same 50 clients the same way (qbfl.node.learner.Learner: the simulator's
seeds, batches and attack streams), so their difference is the protocol: committees, signed
submissions, Alg. 2 at the leader and every member, QBA over BB84 keys between processes, votes,
blocks and per-node SQLite ledgers. The loop runs first, then the network, in one invocation;
compare the ratios, not the seconds, across machines.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import click


def loop_baseline(*, nodes: int, malicious: str, rounds: int, seed: int) -> dict[str, Any]:
    """The per-client loop: every client's Learner trains in turn, Alg. 2 with stakes, evaluate."""
    import numpy as np
    import torch

    from qbfl.aggregation.registry import get_aggregator
    from qbfl.learning.data import load_dataset
    from qbfl.learning.models import build_model, load_flat_
    from qbfl.learning.training import evaluate
    from qbfl.node.learner import Learner
    from qbfl.node.roles import Roles, assign_roles, parse_malicious_spec
    from qbfl.orchestrator.fullsim import FullSimConfig, build_genesis

    torch.set_num_threads(1)
    groups = parse_malicious_spec(malicious)
    genesis, _ = build_genesis(
        FullSimConfig(nodes=nodes, rounds=rounds, seed=seed, malicious=groups)
    )
    roles = assign_roles(groups, nodes, seed)
    learners = [
        Learner(genesis, i, attack=roles.get(i, Roles()).model, device="cpu") for i in range(nodes)
    ]
    rule = get_aggregator(genesis.task.aggregator)
    f = genesis.task.f or 0
    stakes = np.ones(nodes)
    previous = None
    params = np.frombuffer(genesis.initial_parameters, dtype="<f4").copy()
    model = build_model(genesis.task.model, seed=genesis.task.seed)
    test = load_dataset("mnist", "test")
    seconds, accuracy = [], []
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        rows = np.stack([np.frombuffer(learner.train(r), dtype="<f4") for learner in learners])
        result = rule.aggregate(
            rows, client_ids=range(nodes), stakes=stakes.copy(), f=f, previous=previous
        )
        seconds.append(time.perf_counter() - t0)
        update = result.update.astype("<f4")
        for learner in learners:
            learner.apply(update.tobytes())
        stakes[list(result.selected)] += 1
        previous = update
        params = params + update
        load_flat_(model, torch.from_numpy(params))
        accuracy.append(float(evaluate(model, test, torch.device("cpu"))))
    return {"seconds": seconds, "accuracy": accuracy}


def _leader_marks(out: Path, rounds: int) -> list[dict[str, float]]:
    """Per round, the milestones of the node that broadcast its block (from milestones.json)."""
    import json

    doc = json.loads((out / "milestones.json").read_text())
    marks: list[dict[str, float]] = []
    for r in range(1, rounds + 1):
        nodes = doc.get(str(r), {})
        marks.append(next((m for m in nodes.values() if "block_out" in m), {}))
    return marks


@click.command(
    name="network",
    help="50 local node processes vs a per-client-loop simulator of the same clients (one run).",
)
@click.option("--nodes", type=click.IntRange(min=4), default=50, show_default=True)
@click.option("--malicious", default="20:labelflip", show_default=True)
@click.option("--rounds", type=click.IntRange(min=2), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--qkd", type=click.Choice(["bb84", "seeded"]), default="bb84", show_default=True)
@click.option("--round-timeout", type=float, default=60.0, show_default=True)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("run/bench-network")
)
@click.option("--base-port", type=int, default=54000, show_default=True)
@click.option("--skip-loop", is_flag=True, help="only the network (e.g. a rerun of its memory)")
@click.option("--json", "as_json", is_flag=True)
def command(
    nodes: int,
    malicious: str,
    rounds: int,
    seed: int,
    qkd: str,
    round_timeout: float,
    out: Path,
    base_port: int,
    skip_loop: bool,
    as_json: bool,
) -> None:
    import io
    import shutil

    import numpy as np

    from qbfl.bench.report import emit
    from qbfl.node.roles import parse_malicious_spec
    from qbfl.orchestrator.launch import UpConfig, run_up

    if out.exists():
        shutil.rmtree(out)  # the benchmark's scratch network: a fresh one every run
    loop = (
        None
        if skip_loop
        else loop_baseline(nodes=nodes, malicious=malicious, rounds=rounds, seed=seed)
    )
    summary = run_up(
        UpConfig(
            nodes=nodes,
            malicious=parse_malicious_spec(malicious),
            rounds=rounds,
            out=out,
            seed=seed,
            qkd=qkd,
            round_timeout_s=round_timeout,
            base_port=base_port,
            publisher_port=base_port + nodes + 1,
            linger_s=120.0,
            defer_evaluation=True,  # the observer's evaluation is not the protocol's cost
        ),
        stream=io.StringIO(),
    )
    sampled = summary["memory_peak"]  # run_up's sampler: every node process every 2 s
    peak = {
        "pss_kib": sampled["pss_bytes"] // 1024,
        "per_node_max_kib": sampled["max_node_pss_bytes"] // 1024,
        "pss_unreadable": sampled["pss_unreadable"],  # > 0: the figures are lower bounds
    }
    phases = summary["phases_per_round"]
    timed = [p for p in phases[1:] if "round_s" in p]  # round 1 includes start-up: reported apart
    mean = (
        {
            k: float(np.mean([p.get(f"{k}_s", 0.0) for p in timed]))
            for k in (
                "training",
                "submission",
                "aggregation",
                "qba",
                "voting",
                "propagation",
                "round",
            )
        }
        if timed
        else {}
    )
    round_s = mean.get("round", math.nan)
    overhead = (round_s - mean.get("training", 0.0)) / round_s if timed else math.nan
    loop_s = float(np.mean(loop["seconds"])) if loop else math.nan
    rows = [{"what": f"network round, phase {k}", "seconds": v} for k, v in mean.items()]
    outs = [p.get("block_out") for p in _leader_marks(out, rounds)]
    gaps = [
        b - a for a, b in zip(outs[1:], outs[2:], strict=False) if a is not None and b is not None
    ]
    rows.append(
        {
            "what": "block interval (leader's block r−1 → block r), rounds 3..",
            "seconds": float(np.mean(gaps)) if gaps else math.nan,
        }
    )
    rows += [
        {"what": "protocol overhead (round − training) / round", "seconds": overhead},
        {
            "what": "time to first block (from the genesis)",
            "seconds": summary["time_to_first_block_s"],
        },
        {"what": f"per-client-loop simulator round ({nodes} clients, same run)", "seconds": loop_s},
        {"what": "network round / loop round", "seconds": round_s / loop_s if loop else math.nan},
        {"what": "all node processes, peak total PSS (GiB)", "seconds": peak["pss_kib"] / 2**20},
        {"what": "one node process, peak PSS (MiB)", "seconds": peak["per_node_max_kib"] / 1024},
        {"what": "final accuracy, network", "seconds": summary["final_accuracy"]},
        {
            "what": "final accuracy, loop simulator",
            "seconds": loop["accuracy"][-1] if loop else math.nan,
        },
        {"what": "view changes", "seconds": summary["view_changes"]},
    ]
    emit(
        "network",
        rows,
        as_json=as_json,
        title=f"network: {nodes} node processes, MNIST fcnn-mpo, malicious {malicious}, {rounds} rounds, "
        f"QKD {qkd}; per-phase means over rounds 2..{rounds}",
        extra={
            "config": {
                "nodes": nodes,
                "malicious": malicious,
                "rounds": rounds,
                "seed": seed,
                "qkd": qkd,
            },
            "phases_per_round": phases,
            "loop": loop,
            "network_accuracy": [r["accuracy"] for r in summary["per_round"]],
            "honest_heads_agree": summary["honest_heads_agree"],
            "memory": peak,
        },
    )
