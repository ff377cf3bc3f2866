"""backends: one network on the docker backend and on the local backend, same settings, one run.

`qbfl-orchestrator up --backend docker` (a container per node, each with its own Python and torch)
then `up --backend local` (processes forked from one warmed forkserver), each to `--rounds`
blocks. Reported side by side with the docker/local ratio: the time from the command to the
genesis and to the first block, the block interval, the round span and its phases, the nodes'
peak total and per-node memory (PSS), the final accuracy. The image must exist
(`scripts/ci-docker.sh image` builds `qbfl-ci:latest`; `--image` names another).
"""

from __future__ import annotations

import io
import math
import shutil
import time
from pathlib import Path
from typing import Any

import click

PHASES = ("training", "submission", "aggregation", "qba", "voting", "propagation", "round")


def _run(backend: str, config: Any, image: str) -> dict[str, Any]:
    from qbfl.orchestrator.docker_launch import run_up_docker
    from qbfl.orchestrator.launch import run_up

    t0 = time.monotonic()
    if backend == "docker":
        summary = run_up_docker(config, image=image, stream=io.StringIO())
    else:
        summary = run_up(config, stream=io.StringIO())
    summary["start_to_genesis_s"] = summary["genesis_monotonic"] - t0
    summary["command_s"] = time.monotonic() - t0
    return summary


def _figures(summary: dict[str, Any], out: Path, rounds: int) -> dict[str, float]:
    import numpy as np

    from qbfl.bench.network import _leader_marks

    timed = [p for p in summary["phases_per_round"][1:] if "round_s" in p]
    figures = {
        f"{k}_s": float(np.mean([p.get(f"{k}_s", 0.0) for p in timed])) if timed else math.nan
        for k in PHASES
    }
    outs = [m.get("block_out") for m in _leader_marks(out, rounds)]
    gaps = [
        b - a for a, b in zip(outs[1:], outs[2:], strict=False) if a is not None and b is not None
    ]
    memory = summary["memory_peak"]
    figures.update(
        start_to_genesis_s=summary["start_to_genesis_s"],
        start_to_first_block_s=summary["start_to_genesis_s"] + summary["time_to_first_block_s"],
        genesis_to_first_block_s=summary["time_to_first_block_s"],
        block_interval_s=float(np.mean(gaps)) if gaps else math.nan,
        memory_total_gib=memory["pss_bytes"] / 2**30,
        memory_per_node_max_mib=memory["max_node_pss_bytes"] / 2**20,
        memory_pss_unreadable=memory["pss_unreadable"],  # > 0: the PSS figures are lower bounds
        final_accuracy=summary["final_accuracy"] or math.nan,
        view_changes=summary["view_changes"],
    )
    return figures


LABELS = {
    "start_to_genesis_s": "command → genesis (every node registered), s",
    "start_to_first_block_s": "command → first block, s",
    "genesis_to_first_block_s": "genesis → first block, s",
    "block_interval_s": "block interval (leader's block r−1 → r), rounds 3.., s",
    "round_s": "round span (first node in → last node committed), rounds 2.., s",
    "training_s": "  phase training, s",
    "submission_s": "  phase submission, s",
    "aggregation_s": "  phase aggregation, s",
    "qba_s": "  phase qba, s",
    "voting_s": "  phase voting, s",
    "propagation_s": "  phase propagation, s",
    "memory_total_gib": "nodes' peak total PSS, GiB",
    "memory_per_node_max_mib": "one node's peak PSS, MiB",
    "memory_pss_unreadable": "node readings without a PSS (> 0: PSS rows are lower bounds)",
    "final_accuracy": "final accuracy",
    "view_changes": "view changes",
}


@click.command(
    name="backends",
    help="The same network on `up --backend docker` and `--backend local`, side by side (one run).",
)
@click.option("--nodes", type=click.IntRange(min=4), default=50, show_default=True)
@click.option("--malicious", default="none", show_default=True)
@click.option("--rounds", type=click.IntRange(min=3), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image", default="qbfl-ci:latest", show_default=True)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("run/bench-backends")
)
@click.option("--json", "as_json", is_flag=True)
def command(
    nodes: int, malicious: str, rounds: int, seed: int, image: str, out: Path, as_json: bool
) -> None:
    from qbfl.bench.report import emit
    from qbfl.node.roles import parse_malicious_spec
    from qbfl.orchestrator.docker_backend import DockerNetwork
    from qbfl.orchestrator.docker_launch import project_name
    from qbfl.orchestrator.launch import UpConfig

    groups = parse_malicious_spec(malicious)
    results: dict[str, dict[str, float]] = {}
    for backend in ("docker", "local"):
        directory = out / backend
        if directory.exists():
            shutil.rmtree(directory)  # the benchmark's scratch networks: fresh every run
        config = UpConfig(
            nodes=nodes, malicious=tuple(groups), rounds=rounds, out=directory, seed=seed,
            defer_evaluation=True,  # the observer's evaluation is not the protocol's cost
        )  # fmt: skip
        try:
            summary = _run(backend, config, image)
        finally:
            if backend == "docker":
                DockerNetwork(project_name(directory), image=image).down()
        results[backend] = _figures(summary, directory, rounds)
    rows = [
        {
            "what": label,
            "docker": results["docker"][key],
            "local": results["local"][key],
            "docker / local": results["docker"][key] / results["local"][key]
            if results["local"][key]
            else math.nan,
        }
        for key, label in LABELS.items()
    ]
    emit(
        "backends",
        rows,
        as_json=as_json,
        title=f"backends: {nodes} nodes, MNIST fcnn-mpo, malicious {malicious}, {rounds} rounds, "
        f"image {image}; docker then local, one invocation",
        extra={"config": {"nodes": nodes, "malicious": malicious, "rounds": rounds, "seed": seed}},
    )
