"""Opacus DP client: ε accounting across rounds and per-sample gradients through MPOLinear."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qbfl.learning.dp import DPClientTrainer, DPConfig
from qbfl.learning.models import flatten_params
from qbfl.learning.mpo import MPOLinear
from qbfl.learning.training import TrainConfig

CPU = torch.device("cpu")


class TinyMPONet(nn.Module):
    """784 -> 10 through one MPO layer: cheap, and exercises Opacus' fallback for MPOLinear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = MPOLinear(
            (4, 7, 7, 4), (1, 1, 10, 1), 3, generator=torch.Generator().manual_seed(0)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _trainer(
    rounds: int, seed: int = 0, accountant: str = "rdp", sigma: float | None = 1.0
) -> DPClientTrainer:
    images, labels = _data(60)
    return DPClientTrainer(
        TinyMPONet(),
        images,
        labels,
        TrainConfig(lr=0.05, batch_size=20),
        DPConfig(total_rounds=rounds, accountant=accountant, noise_multiplier=sigma),
        generator=torch.Generator().manual_seed(seed),
        device=CPU,
    )


@pytest.mark.parametrize("accountant", [pytest.param("prv", marks=pytest.mark.slow), "rdp"])
def test_epsilon_grows_and_stays_within_budget(accountant: str) -> None:
    # Calibrated σ (a search of a few seconds; prv's is slower, so it runs with -m slow).
    trainer = _trainer(rounds=3, accountant=accountant, sigma=None)
    assert trainer.spent_epsilon() == 0.0
    assert trainer.noise_multiplier > 0.3
    spent = []
    for _ in range(3):
        update = trainer.train_round()
        assert torch.isfinite(update).all() and float(update.abs().sum()) > 0
        spent.append(trainer.spent_epsilon())
    assert spent[0] < spent[1] < spent[2] <= 4.0 + 1e-6
    assert spent[2] > 2.0  # the budget is actually used, not wasted on excess noise
    with pytest.raises(ValueError, match="3 rounds"):
        trainer.train_round()


def test_seeded_rounds_are_reproducible() -> None:
    a = _trainer(rounds=1, seed=4).train_round()
    b = _trainer(rounds=1, seed=4).train_round()
    c = _trainer(rounds=1, seed=5).train_round()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_per_sample_gradients_flow_through_mpo_cores() -> None:
    trainer = _trainer(rounds=1)
    images, labels = _data(5)
    trainer.optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(trainer.module(images), labels).backward()
    layer: Any = trainer.model.fc
    for name, param in layer.named_parameters():
        gs = getattr(param, "grad_sample", None)
        assert gs is not None and gs.shape == (5, *param.shape), name
    # Each per-sample gradient equals the gradient of that sample's own loss
    # (Opacus scales the mean-reduced backprops by the batch size).
    for i in range(5):
        ref: Any = TinyMPONet()
        ref.fc.load_state_dict(layer.state_dict())
        F.cross_entropy(ref(images[i : i + 1]), labels[i : i + 1]).backward()
        for name, param in layer.named_parameters():
            expected = getattr(ref.fc, name).grad
            torch.testing.assert_close(param.grad_sample[i], expected, rtol=1e-4, atol=1e-6)


def test_mpo_grad_sampler_is_registered_and_handles_sequence_inputs() -> None:
    from opacus import GradSampleModule

    from qbfl.learning.dp import mpo_grad_sample

    assert GradSampleModule.GRAD_SAMPLERS[MPOLinear] is mpo_grad_sample
    layer = MPOLinear((2, 3), (2, 2), 2, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    x, back = torch.randn(4, 3, 6, generator=g), torch.randn(4, 3, 4, generator=g)
    got = mpo_grad_sample(layer, [x], back)
    for b in range(4):
        layer.zero_grad()
        (layer(x[b]) * back[b]).sum().backward()
        for param in layer.parameters():
            assert param.grad is not None
            torch.testing.assert_close(got[param][b], param.grad, rtol=1e-5, atol=1e-6)


def test_labels_can_change_per_round_and_model_is_restored() -> None:
    trainer = _trainer(rounds=2)
    w0 = flatten_params(trainer.model)
    images, labels = _data(60)
    trainer.train_round(labels=9 - labels)
    assert torch.equal(flatten_params(trainer.model), w0)
    with pytest.raises(ValueError):
        trainer.train_round(labels=labels[:10])


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        DPConfig(total_rounds=0)
    with pytest.raises(ValueError):
        DPConfig(total_rounds=5, target_epsilon=-1.0)
    with pytest.raises(ValueError):
        DPConfig(total_rounds=5, target_delta=1.0)
    with pytest.raises(ValueError):
        DPConfig(total_rounds=5, noise_multiplier=0.0)
    with pytest.raises(ValueError, match="prv, rdp"):
        DPConfig(total_rounds=5, accountant="gdp")
    for bad in (0, 6):
        with pytest.raises(ValueError, match="calibration_rounds"):
            DPConfig(total_rounds=5, calibration_rounds=bad)
    assert DPConfig(total_rounds=5, calibration_rounds=1).calibration_rounds == 1
