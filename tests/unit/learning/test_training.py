"""Local training: loss goes down, the update is deterministic per generator, errors are typed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qbfl.errors import InvalidUpdate
from qbfl.learning.data import ImageDataset
from qbfl.learning.models import build_model, flatten_params, load_flat_
from qbfl.learning.training import (
    TASK_TRAIN_CONFIG,
    TrainConfig,
    evaluate,
    select_device,
    train_local,
)

CPU = torch.device("cpu")


def _toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten noisy class prototypes: learnable in a few SGD steps."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(123))
    labels = torch.randint(0, 10, (n,), generator=g)
    images = prototypes[labels] + 0.5 * torch.randn(n, 1, 28, 28, generator=g)
    return images, labels


@pytest.mark.parametrize("name", ["fcnn-mpo", "cnn-mpo"])
def test_a_round_reduces_the_loss(name: str) -> None:
    images, labels = _toy_data(200, seed=0)
    model = build_model(name, seed=0)
    with torch.no_grad():
        before = float(F.cross_entropy(model(images), labels))
    w_old = flatten_params(model)
    cfg = TrainConfig(lr=0.05, batch_size=20, epochs=3)
    update = train_local(
        model, images, labels, cfg, generator=torch.Generator().manual_seed(1), device=CPU
    )
    assert update.dtype == torch.float32 and update.shape == w_old.shape
    assert torch.equal(flatten_params(model), w_old)  # the model is left at w_old
    load_flat_(model, w_old + update)
    with torch.no_grad():
        after = float(F.cross_entropy(model(images), labels))
    assert after < 0.7 * before


def test_same_generator_same_update() -> None:
    images, labels = _toy_data(120, seed=2)
    model = build_model("fcnn-mpo", seed=3)
    cfg = TASK_TRAIN_CONFIG["mnist"]

    def run(seed: int) -> torch.Tensor:
        return train_local(
            model, images, labels, cfg, generator=torch.Generator().manual_seed(seed), device=CPU
        )

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_momentum_does_not_carry_over_between_rounds() -> None:
    images, labels = _toy_data(100, seed=4)
    model = build_model("fcnn-mpo", seed=0)
    cfg = TrainConfig(lr=0.05)
    first = train_local(
        model, images, labels, cfg, generator=torch.Generator().manual_seed(0), device=CPU
    )
    second = train_local(
        model, images, labels, cfg, generator=torch.Generator().manual_seed(0), device=CPU
    )
    assert torch.equal(first, second)


def test_non_finite_loss_raises_invalid_update() -> None:
    images, labels = _toy_data(50, seed=5)
    images[3, 0, 0, 0] = float("nan")
    model = build_model("fcnn", seed=0)
    w_old = flatten_params(model)
    with pytest.raises(InvalidUpdate):
        train_local(
            model, images, labels, TrainConfig(lr=0.05), generator=torch.Generator(), device=CPU
        )
    assert torch.equal(flatten_params(model), w_old)


def test_evaluate_counts_correct_predictions() -> None:
    images, labels = _toy_data(30, seed=6)
    model = build_model("fcnn-mpo", seed=0)
    with torch.no_grad():
        predicted = model(images).argmax(1)
    labels = predicted.clone()
    labels[:6] = (labels[:6] + 1) % 10
    acc = evaluate(model, ImageDataset(images=images, labels=labels), CPU, batch_size=7)
    assert acc == pytest.approx(24 / 30)


def test_config_and_device_validation() -> None:
    with pytest.raises(ValueError):
        TrainConfig(lr=0.0)
    with pytest.raises(ValueError):
        TrainConfig(lr=0.1, batch_size=0)
    with pytest.raises(ValueError):
        TrainConfig(lr=0.1, momentum=1.0)
    assert select_device("cpu") == CPU
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            select_device("cuda")


def test_plain_sgd_is_bit_identical_to_torch_sgd() -> None:
    import copy

    from qbfl.learning.models import build_model
    from qbfl.learning.training import PlainSGD

    torch.manual_seed(0)
    ours = build_model("fcnn-mpo", seed=3)
    theirs = copy.deepcopy(ours)
    sgd = PlainSGD(ours.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    reference = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for step in range(12):
        x = torch.randn(50, 1, 28, 28, generator=torch.Generator().manual_seed(step))
        y = torch.randint(10, (50,), generator=torch.Generator().manual_seed(100 + step))
        for model, opt in ((ours, sgd), (theirs, reference)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
