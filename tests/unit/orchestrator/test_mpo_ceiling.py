"""bench/mpo_ceiling.py's two experiment hooks: dense-weight averaging and the IID partition."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from qbfl.learning import mpo
from qbfl.learning.data import ImageDataset
from qbfl.learning.models import build_model, load_flat_
from qbfl.learning.partition import client_indices
from qbfl.orchestrator import simulate

SCRIPT = Path(__file__).resolve().parents[3] / "bench" / "mpo_ceiling.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mpo_ceiling", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mpo_ceiling", module)
    spec.loader.exec_module(module)
    return module


def _dense(weights: torch.Tensor) -> list[torch.Tensor]:
    model = build_model("fcnn-mpo", seed=0)
    load_flat_(model, weights)
    return [m.to_dense().detach() for m in model.modules() if isinstance(m, mpo.MPOLinear)]


def _bias(weights: torch.Tensor) -> list[torch.Tensor]:
    model = build_model("fcnn-mpo", seed=0)
    load_flat_(model, weights)
    return [m.bias.detach().clone() for m in model.modules() if isinstance(m, mpo.MPOLinear)]


def test_dense_average_of_one_client_is_that_client_in_another_gauge() -> None:
    dense_avg = _script().DenseAverage("fcnn-mpo", seed=0)
    start = dense_avg.weights.clone()
    update = (np.random.default_rng(1).standard_normal(start.numel()) * 0.01).astype(np.float32)
    result = dense_avg.aggregate(
        update[None], client_ids=[4], stakes=np.ones(1), f=0, previous=None
    )
    client, merged = start + torch.from_numpy(update), start + torch.from_numpy(result.update)
    assert result.selected == (4,)
    # A single client's MPO has bond dimension ≤ χ, so the TT-SVD re-projection is exact ...
    for a, b in zip(_dense(client), _dense(merged), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # ... but the cores themselves are not the client's: they were re-decomposed.
    assert not torch.allclose(client, merged)


def _regauged(weights: torch.Tensor) -> torch.Tensor:
    """The same function in another gauge: core0 × 2 and core1 × 0.5 in every MPO layer."""
    model = build_model("fcnn-mpo", seed=0)
    load_flat_(model, weights)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, mpo.MPOLinear):
                layer.cores[0].mul_(2.0)
                layer.cores[1].mul_(0.5)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_dense_average_averages_functions_not_cores() -> None:
    dense_avg = _script().DenseAverage("fcnn-mpo", seed=0)
    start = dense_avg.weights.clone()
    rng = np.random.default_rng(2)
    client = start + torch.from_numpy(
        (rng.standard_normal(start.numel()) * 0.05).astype(np.float32)
    )
    twin = _regauged(client)  # same dense weights and biases, different cores
    updates = torch.stack([client - start, twin - start]).numpy()
    result = dense_avg.aggregate(updates, client_ids=[0, 1], stakes=np.ones(2), f=0, previous=None)
    merged = start + torch.from_numpy(result.update)
    for a, b in zip(_dense(merged), _dense(client), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for a, b in zip(_bias(merged), _bias(client), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # Averaging the cores instead scales the weight by (1 + 2)/2 · (1 + 0.5)/2 = 1.125.
    core_mean = (client + twin) / 2
    assert not torch.allclose(_dense(core_mean)[0], _dense(client)[0], atol=1e-3)


def test_dense_average_takes_the_mean_of_biases() -> None:
    dense_avg = _script().DenseAverage("fcnn-mpo", seed=0)
    start = dense_avg.weights.clone()
    rng = np.random.default_rng(3)
    updates = (rng.standard_normal((3, start.numel())) * 0.05).astype(np.float32)
    result = dense_avg.aggregate(
        updates, client_ids=[0, 1, 2], stakes=np.ones(3), f=1, previous=None
    )
    merged = start + torch.from_numpy(result.update)
    clients = [start + torch.from_numpy(u) for u in updates]
    for k, bias in enumerate(_bias(merged)):
        torch.testing.assert_close(bias, sum(_bias(c)[k] for c in clients) / 3, atol=1e-6, rtol=0)


def test_central_union_is_what_the_clients_hold() -> None:
    script = _script()
    labels = torch.arange(60_000) % 10
    train = ImageDataset(images=torch.zeros(60_000, 1, 28, 28), labels=labels)
    # Derived independently of the simulator: the partition's own rows, and the IID randperm.
    rows = [client_indices(labels.numpy(), i, n_clients=50, seed=0) for i in range(50)]
    clients = torch.from_numpy(np.unique(np.concatenate(rows)))
    iid = torch.randperm(60_000, generator=torch.Generator().manual_seed(0))[: 50 * 775]
    assert clients.numel() == 50 * 775
    torch.testing.assert_close(script._union_index(train, "mnist", "clients"), clients)
    torch.testing.assert_close(script._union_index(train, "mnist", "iid"), iid.sort().values)


def test_iid_partition_gives_each_client_as_many_distinct_images_drawn_across_labels() -> None:
    labels = torch.arange(60_000) % 10
    train = ImageDataset(images=torch.arange(60_000, dtype=torch.float32), labels=labels)
    config = simulate.SimulationConfig(task="mnist", nodes=50, aggregator="fedavg")
    images, iid_labels = _script()._iid(simulate.client_data)(config, train)
    non_iid = simulate.client_data(config, train)[1]
    assert iid_labels.shape == non_iid.shape == (50, 775)
    assert images.unique().numel() == 50 * 775  # without replacement, across clients too
    # Non-IID clients hold label-sorted shards (4–8 labels here); IID ones see every label.
    assert all(row.unique().numel() == 10 for row in iid_labels)
    assert max(row.unique().numel() for row in non_iid) < 10
