"""The CUDA path of local training (DESIGN §5 step 2: CUDA when present, CPU otherwise).

Marked `gpu`: deselected by default and skipped without CUDA; run with `pytest -m gpu` on a
machine with a GPU. The CPU and CUDA results agree to float tolerance (different GEMM kernels)."""

from __future__ import annotations

import pytest
import torch

from qbfl.learning.attacks import get_attack
from qbfl.learning.models import build_model, flatten_params
from qbfl.learning.training import TrainConfig, select_device, train_local
from qbfl.learning.vectorized import VectorDPConfig, VectorizedClients

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
CUDA = torch.device("cuda")


def _data(n: int, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, samples, 1, 28, 28, generator=g), torch.randint(
        0, 10, (n, samples), generator=g
    )


def test_auto_picks_cuda() -> None:
    assert select_device("auto").type == "cuda"


@pytest.mark.parametrize("model_name", ["fcnn-mpo", "cnn-mpo"])
def test_vectorised_round_on_cuda_matches_cpu(model_name: str) -> None:
    images, labels = _data(4, 130)
    model = build_model(model_name, seed=0)
    cfg = TrainConfig(lr=0.05, clip_norm=5.0)
    attacks = {1: get_attack("labelflip"), 2: get_attack("gaussian")}
    w = flatten_params(model)
    cpu = VectorizedClients(model, images, labels, cfg, seeds=[1, 2, 3, 4], attacks=attacks)
    gpu = VectorizedClients(
        model, images, labels, cfg, seeds=[1, 2, 3, 4], attacks=attacks, device=CUDA
    )
    for rnd in range(2):
        want, got = cpu.train_round(w, round=rnd), gpu.train_round(w, round=rnd)
        assert got.device.type == "cpu"  # updates come back to the CPU for aggregation
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def test_train_local_on_cuda_matches_cpu() -> None:
    images, labels = _data(1, 130)
    model = build_model("fcnn-mpo", seed=0)
    cfg = TrainConfig(lr=0.05)
    want = train_local(
        model, images[0], labels[0], cfg,
        generator=torch.Generator().manual_seed(3), device=torch.device("cpu"),
    )  # fmt: skip
    got = train_local(
        model, images[0], labels[0], cfg, generator=torch.Generator().manual_seed(3), device=CUDA
    )
    torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-3)


def test_vectorised_dp_runs_on_cuda() -> None:
    images, labels = _data(2, 100)
    model = build_model("fcnn-mpo", seed=0)
    dp = VectorDPConfig(total_rounds=2)
    clients = VectorizedClients(
        model, images, labels, TrainConfig(lr=0.05), seeds=[1, 2], dp=dp, device=CUDA
    )
    update = clients.train_round(flatten_params(model), round=0)
    assert torch.isfinite(update).all() and 0 < clients.spent_epsilon() <= 4.0
