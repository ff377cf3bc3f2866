"""sim-speed: seconds per round of the vectorised simulator beside a plain per-client train_local loop."""

from __future__ import annotations

import time

import click


@click.command(
    name="sim-speed", help="Vectorised clients vs a loop of train_local (50 clients, MNIST)."
)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--nodes", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=1), default=25, show_default=True)
@click.option(
    "--json", "as_json", is_flag=True, help="print the JSON document instead of the table"
)
def command(rounds: int, nodes: int, chunk_size: int, as_json: bool) -> None:
    import numpy as np
    import torch

    from qbfl.aggregation.registry import get_aggregator
    from qbfl.bench.report import emit
    from qbfl.learning.data import load_dataset
    from qbfl.learning.models import build_model, flatten_params, load_flat_
    from qbfl.learning.training import TASK_TRAIN_CONFIG, train_local
    from qbfl.learning.vectorized import VectorizedClients
    from qbfl.orchestrator.simulate import (
        SimulationConfig,
        client_data,
        derive_seed,
        evaluate,
        keep_freed_memory,
    )

    keep_freed_memory()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    config = SimulationConfig(task="mnist", nodes=nodes, rounds=rounds)
    images, labels = client_data(config, load_dataset("mnist", "train"))
    test = load_dataset("mnist", "test")
    cfg = TASK_TRAIN_CONFIG["mnist"]
    model = build_model("fcnn-mpo", seed=0)
    seeds = [derive_seed(0, 1, i) for i in range(nodes)]
    clients = VectorizedClients(model, images, labels, cfg, seeds=seeds, chunk_size=chunk_size)
    loop_models = [build_model("fcnn-mpo", seed=0) for _ in range(nodes)]
    loop_gens = [torch.Generator().manual_seed(s) for s in seeds]
    aggregator = get_aggregator("qbfl")
    weights = flatten_params(model)
    clients.train_round(weights, round=0)  # warm-up: vmap tracing, allocator
    vec, loop, agg, ev = [], [], [], []
    stakes = np.ones(nodes)
    previous = None
    for rnd in range(1, rounds + 1):
        # Interleaved in one process, so both see the same load on the shared machine.
        t0 = time.perf_counter()
        updates = clients.train_round(weights, round=rnd)
        t1 = time.perf_counter()
        for i in range(nodes):
            load_flat_(loop_models[i], weights)
            train_local(
                loop_models[i], images[i], labels[i], cfg, generator=loop_gens[i], device=cpu
            )
        t2 = time.perf_counter()
        result = aggregator.aggregate(
            updates.numpy(),
            client_ids=range(nodes),
            stakes=stakes,
            f=int(0.4 * nodes),
            previous=previous,
        )
        t3 = time.perf_counter()
        previous = result.update
        weights = weights + torch.from_numpy(result.update)
        load_flat_(model, weights)
        evaluate(model, test, cpu)
        t4 = time.perf_counter()
        vec.append(t1 - t0)
        loop.append(t2 - t1)
        agg.append(t3 - t2)
        ev.append(t4 - t3)
    v, lo = float(np.mean(vec)), float(np.mean(loop))
    a, e = float(np.mean(agg)), float(np.mean(ev))
    rows = [
        {
            "what": f"vectorised training, {nodes} clients",
            "s_per_round": v,
            "ratio_to_loop": v / lo,
        },
        {"what": f"train_local loop over {nodes} modules", "s_per_round": lo, "ratio_to_loop": 1.0},
        {"what": "qbfl aggregation (Alg. 2)", "s_per_round": a, "ratio_to_loop": a / lo},
        {"what": "global eval, 10 000 test images", "s_per_round": e, "ratio_to_loop": e / lo},
        {
            "what": "simulator round (vectorised + aggregation + eval)",
            "s_per_round": v + a + e,
            "ratio_to_loop": (v + a + e) / lo,
        },
    ]
    emit(
        "sim-speed",
        rows,
        as_json=as_json,
        title=f"sim-speed: MNIST fcnn-mpo, no DP, {nodes} clients, {rounds} timed rounds, chunk {chunk_size}",
        extra={"per_round": {"vectorised": vec, "loop": loop, "aggregation": agg, "eval": ev}},
    )
