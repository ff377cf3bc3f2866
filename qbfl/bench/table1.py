"""qbfl-bench table1: Table 1's parameter counts, and a quick accuracy check of MPO vs dense models."""

from __future__ import annotations

import time
from typing import Any

import click
import numpy as np
import torch
from torch import nn

from qbfl.bench.report import emit
from qbfl.command_line import NumberList
from qbfl.learning import mpo
from qbfl.learning.data import DATASETS, ImageDataset, load_dataset
from qbfl.learning.models import (
    TABLE1,
    TABLE1_TOTALS,
    TASK_MODEL,
    build_model,
    flatten_params,
    load_flat_,
    param_count,
)
from qbfl.learning.partition import client_indices
from qbfl.learning.training import TASK_TRAIN_CONFIG, evaluate, select_device, train_local

DENSE_OF = {"fcnn-mpo": "fcnn", "cnn-mpo": "cnn"}
# Table 1's last column, η = N_MPO / N_ori in % as printed in the paper (the reference, not ours).
PAPER_ETA = {
    ("fcnn-mpo", "fc1"): 2.0,
    ("fcnn-mpo", "fc2"): 29.0,
    ("cnn-mpo", "fc1"): 2.3,
    ("cnn-mpo", "fc2"): 7.4,
    ("cnn-mpo", "fc3"): 22.1,
}


def count_rows() -> list[dict[str, Any]]:
    """One row per MPO layer of Table 1, then one per model total."""
    rows: list[dict[str, Any]] = []
    for spec in TABLE1:
        rows.append(
            {
                "model": spec.model,
                "layer": spec.layer,
                "original": f"Linear({spec.in_features}, {spec.out_features})",
                "N_ori": spec.dense_count,
                "mpo_layer": spec.notation(),
                "N_MPO": spec.mpo_count,
                "eta_%": round(100 * spec.mpo_count / spec.dense_count, 1),
                "paper_N_MPO": spec.paper_count,
                "paper_eta_%": PAPER_ETA[(spec.model, spec.layer)],
                "match": spec.mpo_count == spec.paper_count,
            }
        )
    for name, dense in DENSE_OF.items():
        n_ori = param_count(build_model(dense, seed=0))
        n_mpo = param_count(build_model(name, seed=0))
        rows.append(
            {
                "model": name,
                "layer": "total",
                "original": dense,
                "N_ori": n_ori,
                "mpo_layer": f"reduction {100 * (1 - n_mpo / n_ori):.1f} %",
                "N_MPO": n_mpo,
                "eta_%": round(100 * n_mpo / n_ori, 1),
                "paper_N_MPO": TABLE1_TOTALS[name],
                "paper_eta_%": None,
                "match": n_mpo == TABLE1_TOTALS[name] and n_ori == TABLE1_TOTALS[dense],
            }
        )
    return rows


def _build(variant: str, task: str, seed: int) -> nn.Module:
    name = TASK_MODEL[task]
    if variant == "dense":
        return build_model(DENSE_OF[name], seed=seed)
    model = build_model(name, seed=seed)
    # Rebuild each MPO layer from the same dense init, with and without the norm rescale.
    gen = torch.Generator().manual_seed(seed)
    for spec in TABLE1:
        if spec.model == name:
            layer = mpo.MPOLinear(
                spec.in_dims,
                spec.out_dims,
                spec.chi,
                generator=gen,
                rescale=variant == "mpo-rescaled",
            )
            setattr(model, spec.layer, layer)
    return model


def _checkpoints(
    model: nn.Module,
    train: ImageDataset,
    test: ImageDataset,
    task: str,
    steps: list[int],
    seed: int,
) -> dict[str, float]:
    """Centralised SGD with the task's settings; test accuracy after each checkpoint step count."""
    cfg = TASK_TRAIN_CONFIG[task]
    device = torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    perm = torch.randperm(len(train), generator=gen)
    out: dict[str, float] = {}
    done = 0
    for target in steps:
        while done < target:
            idx = perm[(done * cfg.batch_size) % len(train) :][: cfg.batch_size]
            loss = nn.functional.cross_entropy(model(train.images[idx]), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
        out[f"acc@{target}"] = round(evaluate(model, test, device), 4)
    return out


def _fedavg(
    model: nn.Module, train: ImageDataset, test: ImageDataset, task: str, rounds: int, seed: int
) -> dict[str, float]:
    """Plain FedAvg over 50 LotteryFL clients (one epoch each): the setting DESIGN §4 measured."""
    cfg = TASK_TRAIN_CONFIG[task]
    device = torch.device("cpu")
    labels = train.labels.numpy()
    parts = [client_indices(labels, k, seed=seed) for k in range(50)]
    out: dict[str, float] = {}
    for rnd in range(1, rounds + 1):
        updates = []
        for k, idx in enumerate(parts):
            client = train.subset(idx)
            gen = torch.Generator().manual_seed(seed * 100_003 + rnd * 101 + k)
            updates.append(
                train_local(model, client.images, client.labels, cfg, generator=gen, device=device)
            )
        load_flat_(model, flatten_params(model) + torch.stack(updates).mean(0))
        out[f"fedavg@{rnd}"] = round(evaluate(model, test, device), 4)
    return out


def accuracy_rows(steps: list[int], fedavg_rounds: int, seed: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for task in DATASETS:
        train, test = load_dataset(task, "train"), load_dataset(task, "test")
        for variant in ("dense", "mpo-rescaled", "mpo-plain"):
            t0 = time.perf_counter()
            model = _build(variant, task, seed)
            row: dict[str, Any] = {"task": task, "variant": variant, "params": param_count(model)}
            row.update(_checkpoints(model, train, test, task, steps, seed))
            if fedavg_rounds:
                row.update(
                    _fedavg(_build(variant, task, seed), train, test, task, fedavg_rounds, seed)
                )
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            click.echo(f"  {task} {variant}: {row}", err=True)  # progress: a run takes minutes
    return rows


@click.command(
    name="table1",
    help="Table 1: MPO layer parameter counts vs the paper (and, with --accuracy, MPO vs dense).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the JSON document instead of the table."
)
@click.option(
    "--accuracy",
    is_flag=True,
    help="Also train dense, MPO (rescaled) and MPO (plain) models and report test accuracy.",
)
@click.option(
    "--steps",
    type=NumberList(int, low=1),
    default="16,200,1200",
    show_default=True,
    help="Centralised SGD step counts to evaluate at (1200 = one epoch).",
)
@click.option(
    "--fedavg-rounds",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also run this many FedAvg rounds over 50 LotteryFL clients.",
)
@click.option("--seed", default=0, show_default=True)
def command(as_json: bool, accuracy: bool, steps: list[int], fedavg_rounds: int, seed: int) -> None:
    torch.set_num_threads(1)
    select_device("cpu")
    emit("table1", count_rows(), as_json=as_json, title="Table 1: parameters of the MPO layers")
    if accuracy:
        step_list = sorted(set(steps))
        rows = accuracy_rows(step_list, fedavg_rounds, seed)
        emit(
            "table1-accuracy",
            rows,
            as_json=as_json,
            title=f"\nTest accuracy, centralised SGD (task settings, seed {seed}); fedavg@r = FedAvg round r",
            extra={"numpy": np.__version__, "torch": torch.__version__},
        )
