"""sim-speed: seconds per round of the vectorised simulator beside a plain per-client train_local loop."""

from __future__ import annotations

import time

import click


@click.command(
    name="sim-speed", help="Vectorised clients vs a loop of train_local (50 clients, MNIST)."
)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--nodes", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torch threads (2 uses both cores of the dev VM; keep 1 when anything else runs)",
)
@click.option(
    "--json", "as_json", is_flag=True, help="print the JSON document instead of the table"
)
def command(rounds: int, nodes: int, chunk_size: int, threads: int, as_json: bool) -> None:
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
    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    config = SimulationConfig(task="mnist", nodes=nodes, rounds=rounds)
    images, labels = client_data(config, load_dataset("mnist", "train"))
    test = load_dataset("mnist", "test")
    cfg = TASK_TRAIN_CONFIG["mnist"]
    model = build_model("fcnn-mpo", seed=0)
    seeds = [derive_seed(0, 1, i) for i in range(nodes)]
    clients = VectorizedClients(model, images, labels, cfg, seeds=seeds, chunk_size=chunk_size)
    # The first vectorised version (torch.func vmap over the input-side MPO forward), same run.
    naive = VectorizedClients(model, images, labels, cfg, seeds=seeds, chunk_size=25, method="vmap")
    loop_models = [build_model("fcnn-mpo", seed=0) for _ in range(nodes)]
    loop_gens = [torch.Generator().manual_seed(s) for s in seeds]
    aggregator = get_aggregator("qbfl")
    weights = flatten_params(model)
    clients.train_round(weights, round=0)  # warm-up: allocator, vmap tracing
    naive.train_round(weights, round=0)
    vec, vm, loop, agg, ev = [], [], [], [], []
    stakes = np.ones(nodes)
    previous = None
    for rnd in range(1, rounds + 1):
        # Interleaved in one process, so all three see the same load on the shared machine.
        t0 = time.perf_counter()
        updates = clients.train_round(weights, round=rnd)
        t1 = time.perf_counter()
        naive.train_round(weights, round=rnd)
        t2 = time.perf_counter()
        for i in range(nodes):
            load_flat_(loop_models[i], weights)
            train_local(
                loop_models[i], images[i], labels[i], cfg, generator=loop_gens[i], device=cpu
            )
        t3 = time.perf_counter()
        result = aggregator.aggregate(
            updates.numpy(),
            client_ids=range(nodes),
            stakes=stakes,
            f=int(0.4 * nodes),
            previous=previous,
        )
        t4 = time.perf_counter()
        previous = result.update
        weights = weights + torch.from_numpy(result.update)
        load_flat_(model, weights)
        evaluate(model, test, cpu)
        t5 = time.perf_counter()
        vec.append(t1 - t0)
        vm.append(t2 - t1)
        loop.append(t3 - t2)
        agg.append(t4 - t3)
        ev.append(t5 - t4)
    v, lo = float(np.mean(vec)), float(np.mean(loop))
    n, a, e = float(np.mean(vm)), float(np.mean(agg)), float(np.mean(ev))
    rows = [
        {
            "what": f"vectorised training (batched GEMMs), {nodes} clients",
            "s_per_round": v,
            "ratio_to_loop": v / lo,
        },
        {
            "what": "vectorised training (torch.func vmap, chunk 25)",
            "s_per_round": n,
            "ratio_to_loop": n / lo,
        },
        {"what": f"train_local loop over {nodes} modules", "s_per_round": lo, "ratio_to_loop": 1.0},
        {"what": "qbfl aggregation (Alg. 2)", "s_per_round": a, "ratio_to_loop": a / lo},
        {"what": "global eval, 10 000 test images", "s_per_round": e, "ratio_to_loop": e / lo},
        {
            "what": "simulator round (batched + aggregation + eval)",
            "s_per_round": v + a + e,
            "ratio_to_loop": (v + a + e) / lo,
        },
    ]
    emit(
        "sim-speed" if threads == 1 else f"sim-speed-{threads}threads",
        rows,
        as_json=as_json,
        title=f"sim-speed: MNIST fcnn-mpo, no DP, {nodes} clients, {rounds} timed rounds, "
        f"chunk {chunk_size}, {threads} thread(s)",
        extra={
            "threads": threads,
            "chunk_size": chunk_size,
            "per_round": {
                "batched": vec,
                "vmap": vm,
                "loop": loop,
                "aggregation": agg,
                "eval": ev,
            },
        },  # fmt: skip
    )
