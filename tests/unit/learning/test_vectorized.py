"""The vectorised trainer computes what train_local computes, client by client (atol 1e-5)."""

from __future__ import annotations

import copy

import pytest
import torch

from qbfl.learning.attacks import get_attack
from qbfl.learning.models import build_model, flatten_params
from qbfl.learning.mpo import contract
from qbfl.learning.training import TrainConfig, train_local
from qbfl.learning.vectorized import (
    VectorDPConfig,
    VectorizedClients,
    _with_input_side_contraction,
    batched_dense_weight,
    contract_halves,
)

ATOL = 1e-5  # float32 rounding of batched vs per-client GEMMs over 3 SGD steps (seen: ~6e-8)
CPU = torch.device("cpu")


def _data(n_clients: int, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n_clients, samples, 1, 28, 28, generator=g)
    labels = torch.randint(0, 10, (n_clients, samples), generator=g)
    return images, labels


@pytest.mark.parametrize("method", ["batched", "vmap"])
@pytest.mark.parametrize("model_name", ["fcnn-mpo", "cnn-mpo", "fcnn", "cnn"])
def test_matches_train_local_per_client(model_name: str, method: str) -> None:
    # 130 samples: two full batches of 50 and a short one of 30, like 775 = 15·50 + 25.
    images, labels = _data(3, 130, seed=1)
    model = build_model(model_name, seed=0)
    cfg = TrainConfig(lr=0.05)
    seeds = [10, 11, 12]
    flip = get_attack("labelflip")
    clients = VectorizedClients(
        model, images, labels, cfg, seeds=seeds, attacks={1: flip}, chunk_size=2, method=method
    )
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    weights = flatten_params(model)
    for rnd in range(2):  # the second round checks the shuffle generators advance alike
        got = clients.train_round(weights, round=rnd)
        for i in range(3):
            y = flip.poison_labels(labels[i], round=rnd, generator=gens[i]) if i == 1 else labels[i]
            want = train_local(model, images[i], y, cfg, generator=gens[i], device=CPU)
            torch.testing.assert_close(got[i], want, atol=ATOL, rtol=0)
        assert got.abs().max() > 1e-3  # the comparison is not between zeros


def test_update_attack_applied_after_training() -> None:
    images, labels = _data(2, 60, seed=2)
    model = build_model("fcnn-mpo", seed=0)
    cfg = TrainConfig(lr=0.05)
    honest = VectorizedClients(model, images, labels, cfg, seeds=[1, 2])
    flipped = VectorizedClients(
        model, images, labels, cfg, seeds=[1, 2], attacks={0: get_attack("bitflip")}
    )
    w = flatten_params(model)
    a, b = honest.train_round(w, round=0), flipped.train_round(w, round=0)
    torch.testing.assert_close(b[0], -a[0])
    torch.testing.assert_close(b[1], a[1])


def test_contract_halves_equals_contract() -> None:
    for name in ("fcnn-mpo", "cnn-mpo"):
        model = build_model(name, seed=5)
        layers = [m for m in model.modules() if hasattr(m, "cores")]
        assert layers
        for layer in layers:
            torch.testing.assert_close(contract_halves(layer.cores), contract(layer.cores))


def test_batched_dense_weight_is_each_clients_contraction() -> None:
    for name in ("fcnn-mpo", "cnn-mpo"):
        layers = [
            [m for m in build_model(name, seed=s).modules() if hasattr(m, "cores")]
            for s in (5, 6, 7)
        ]
        for k in range(len(layers[0])):
            stacked = [
                torch.stack(cores) for cores in zip(*(ls[k].cores for ls in layers), strict=True)
            ]
            got = batched_dense_weight(stacked)
            for client, ls in enumerate(layers):
                torch.testing.assert_close(got[client], contract(ls[k].cores))


def test_fast_mpo_layers_compute_the_same_forward() -> None:
    x = torch.randn(7, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for name in ("fcnn-mpo", "cnn-mpo"):
        model = build_model(name, seed=5)
        want = model(x)
        fast = _with_input_side_contraction(copy.deepcopy(model))
        assert type(fast.fc1) is not type(model.fc1)
        torch.testing.assert_close(fast(x), want, atol=1e-6, rtol=1e-5)


def test_rejects_unequal_shapes_and_wrong_parameter_count() -> None:
    images, labels = _data(2, 20, seed=3)
    model = build_model("fcnn-mpo", seed=0)
    cfg = TrainConfig(lr=0.05)
    with pytest.raises(ValueError, match="seeds"):
        VectorizedClients(model, images, labels, cfg, seeds=[1])
    with pytest.raises(ValueError, match="method"):
        VectorizedClients(model, images, labels, cfg, seeds=[1, 2], method="loop")
    with pytest.raises(ValueError, match="labels"):
        VectorizedClients(model, images, labels[:, :10], cfg, seeds=[1, 2])
    clients = VectorizedClients(model, images, labels, cfg, seeds=[1, 2])
    with pytest.raises(ValueError, match="global parameters"):
        clients.train_round(torch.zeros(7), round=0)


def test_dp_uses_opacus_sigma_and_spends_the_budget() -> None:
    from opacus.accountants.utils import get_noise_multiplier

    images, labels = _data(2, 40, seed=4)
    model = build_model("fcnn-mpo", seed=0)
    cfg = TrainConfig(lr=0.05)
    dp = VectorDPConfig(total_rounds=3, accountant="rdp")
    clients = VectorizedClients(model, images, labels, cfg, seeds=[1, 2], dp=dp, dp_seed=9)
    assert clients.accountant is not None
    sigma = get_noise_multiplier(
        target_epsilon=4.0, target_delta=1e-5, sample_rate=1.0, steps=3, accountant="rdp"
    )
    assert clients.accountant.noise_multiplier == pytest.approx(sigma)
    w = flatten_params(model)
    plain = VectorizedClients(model, images, labels, cfg, seeds=[1, 2]).train_round(w, round=0)
    eps = []
    for rnd in range(3):
        update = clients.train_round(w, round=rnd)
        assert torch.isfinite(update).all()
        eps.append(clients.spent_epsilon())
    assert eps[0] < eps[1] < eps[2] <= 4.0 + 1e-6
    assert eps[2] > 3.5  # the calibrated σ spends (nearly) the whole budget in the planned rounds
    assert not torch.allclose(update, plain, atol=1e-4)


def test_gradient_clipping_matches_train_local_and_changes_the_update() -> None:
    images, labels = _data(2, 80, seed=4)
    model = build_model("fcnn-mpo", seed=0)
    clipped, plain = TrainConfig(lr=0.05, clip_norm=0.2), TrainConfig(lr=0.05)
    weights = flatten_params(model)
    got = VectorizedClients(model, images, labels, clipped, seeds=[5, 6]).train_round(
        weights, round=0
    )
    unclipped = VectorizedClients(model, images, labels, plain, seeds=[5, 6]).train_round(
        weights, round=0
    )
    for i, seed in enumerate([5, 6]):
        gen = torch.Generator().manual_seed(seed)
        want = train_local(model, images[i], labels[i], clipped, generator=gen, device=CPU)
        torch.testing.assert_close(got[i], want, atol=ATOL, rtol=0)
    # random labels give gradients far above 0.2, so clipping must shrink the step
    assert float(got.norm()) < 0.8 * float(unclipped.norm())


def test_round_accounting_spends_the_budget_each_round_and_reports_the_composition() -> None:
    images, labels = _data(2, 40, seed=4)
    model = build_model("fcnn-mpo", seed=0)
    cfg = TrainConfig(lr=0.05)
    per_run = VectorizedClients(
        model,
        images,
        labels,
        cfg,
        seeds=[1, 2],
        dp=VectorDPConfig(total_rounds=3, accountant="rdp"),
    )
    per_round = VectorizedClients(
        model,
        images,
        labels,
        cfg,
        seeds=[1, 2],
        dp=VectorDPConfig(total_rounds=3, accountant="rdp", accounting="round"),
    )
    assert per_round.accountant is not None and per_run.accountant is not None
    # less noise: one round's release, not three, is held to (4, 1e-5)
    assert per_round.accountant.noise_multiplier < per_run.accountant.noise_multiplier
    assert per_round.accountant.round_epsilon() == pytest.approx(4.0, abs=0.05)
    w = flatten_params(model)
    spent = []
    for rnd in range(3):
        per_round.train_round(w, round=rnd)
        spent.append(per_round.spent_epsilon())
    assert spent[0] == pytest.approx(4.0, abs=0.05)
    assert 4.5 < spent[1] < spent[2]  # the composition of three (4, 1e-5) releases
    with pytest.raises(ValueError, match="accounting"):
        VectorDPConfig(total_rounds=3, accounting="epoch")
