"""Local training of one client for one round (Section 4.3, DESIGN.md §5 step 2) and test accuracy."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qbfl.errors import InvalidUpdate
from qbfl.learning.data import ImageDataset
from qbfl.learning.models import flatten_params, load_flat_


@dataclass(frozen=True)
class TrainConfig:
    """SGD settings of one client round (DESIGN.md §5 step 2)."""

    lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 50
    epochs: int = 1
    # Per-step clip of the whole gradient's L2 norm (torch.nn.utils.clip_grad_norm_), before
    # weight decay and momentum; None: no clipping (the paper's setting).
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.clip_norm is not None and not (
            math.isfinite(self.clip_norm) and self.clip_norm > 0
        ):
            raise ValueError(f"clip_norm must be positive or None, got {self.clip_norm}")


TASK_TRAIN_CONFIG = {"mnist": TrainConfig(lr=0.05), "fashion-mnist": TrainConfig(lr=0.02)}

# Per-step gradient-norm clip of local training (a deviation from Section 5.2's plain SGD):
# without it label-flipping clients' SGD diverges after ~180 MNIST rounds and the huge
# updates break the round (docs/bench-simulator.md). Honest clients' step norms are
# 1.3 median, <= 4.8 max, so 5 leaves honest training unchanged.
DEFAULT_CLIP_NORM = 5.0


def derive_seed(seed: int, *words: int) -> int:
    """An independent 63-bit seed for (seed, *words): one stream per client and purpose.

    Client i's shuffling stream is derive_seed(seed, 1, i) in the simulator and in a networked
    node alike, so both train client i on the same batches.
    """
    state = np.random.SeedSequence([seed, *words]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) % (2**63)


def select_device(spec: str = "auto") -> torch.device:
    """ "auto" -> CUDA when present, else CPU; "cpu", "cuda" or "cuda:N" -> that device (checked)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {spec!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} requested but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_finite(update: torch.Tensor, what: str = "update") -> None:
    """Raise InvalidUpdate when a tensor holds NaN or Inf."""
    if not bool(torch.isfinite(update).all()):
        raise InvalidUpdate(f"{what} contains NaN or Inf")


class PlainSGD:
    """torch.optim.SGD's step as it runs on the CPU (its single-tensor path: no foreach, no
    fused kernel), written out with the same operations in the same order — bit-identical
    results (tests/unit/learning/test_training.py).

    Why not torch.optim.SGD itself: its first step imports torch._dynamo (~820 modules, +70 MB
    resident), a cost every node container and every standalone node process would pay once,
    for nothing the clients use.
    """

    def __init__(
        self, params: Iterable[nn.Parameter], *, lr: float, momentum: float, weight_decay: float
    ) -> None:
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self._buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            if self.momentum != 0:
                buf = self._buffers[i]
                if buf is None:
                    buf = torch.clone(grad).detach()
                    self._buffers[i] = buf
                else:
                    buf.mul_(self.momentum).add_(grad, alpha=1)  # dampening 0
                grad = buf
            p.add_(grad, alpha=-self.lr)


def batch_order(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's shuffled mini-batches of sample indices; the last batch may be short."""
    perm = torch.randperm(n, generator=generator)
    return list(perm.split(batch_size))


def train_local(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    *,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Train `cfg.epochs` epochs of SGD and return the flat update d = w_new − w_old (float32, CPU).

    The model is moved to `device` and left holding w_old: the chain, not the client,
    decides the next global model (DESIGN.md §5 step 2: the next round starts from the
    block's update). A fresh optimizer is built every round, so momentum does not carry
    over — the paper's clients keep no state between rounds. Shuffling comes from
    `generator` (a CPU generator) only.
    """
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(
            f"{images.shape[0]} images and {labels.shape[0]} labels: need equal, non-zero"
        )
    model.to(device)
    w_old = flatten_params(model)
    optimizer = PlainSGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    x_all, y_all = images.to(device), labels.to(device)
    was_training = model.training
    model.train()
    try:
        for _ in range(cfg.epochs):
            for idx in batch_order(len(labels), cfg.batch_size, generator):
                idx = idx.to(device)
                loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
                if not bool(torch.isfinite(loss)):
                    raise InvalidUpdate(f"training loss became {float(loss.detach())}")
                optimizer.zero_grad()
                loss.backward()
                if cfg.clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
                optimizer.step()
        update = flatten_params(model) - w_old
        check_finite(update)
    finally:
        load_flat_(model, w_old)
        model.train(was_training)
    return update


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: ImageDataset, device: torch.device, batch_size: int = 1000
) -> float:
    """Top-1 accuracy of `model` on `dataset`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.to(device)
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(dataset), batch_size):
        x = dataset.images[start : start + batch_size].to(device)
        y = dataset.labels[start : start + batch_size].to(device)
        correct += int((model(x).argmax(dim=1) == y).sum())
    model.train(was_training)
    return correct / max(len(dataset), 1)
