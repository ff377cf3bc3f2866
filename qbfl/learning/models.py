"""The paper's models (Section 5.1, Table 1): FCNN and LeNet-5, dense and MPO, plus the flat parameter vector."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from qbfl.errors import InvalidUpdate
from qbfl.learning.mpo import MPOLinear, mpo_param_count


@dataclass(frozen=True)
class MPOLayerSpec:
    """One row of Table 1: which dense layer becomes which MPO layer, and the paper's count."""

    model: str
    layer: str
    in_dims: tuple[int, ...]  # lower indices I_k: input
    out_dims: tuple[int, ...]  # upper indices J_k: output
    chi: int
    paper_count: int

    @property
    def in_features(self) -> int:
        return math.prod(self.in_dims)

    @property
    def out_features(self) -> int:
        return math.prod(self.out_dims)

    @property
    def dense_count(self) -> int:
        return (self.in_features + 1) * self.out_features

    @property
    def mpo_count(self) -> int:
        return mpo_param_count(self.in_dims, self.out_dims, self.chi)

    def notation(self) -> str:
        up = ",".join(map(str, self.out_dims))
        low = ",".join(map(str, self.in_dims))
        return f"T^{{{up}}}_{{{low}}}({self.chi})"


TABLE1: tuple[MPOLayerSpec, ...] = (
    MPOLayerSpec("fcnn-mpo", "fc1", (4, 7, 7, 4), (4, 4, 4, 4), 8, 4096),
    MPOLayerSpec("fcnn-mpo", "fc2", (4, 4, 4, 4), (1, 1, 10, 1), 4, 746),
    MPOLayerSpec("cnn-mpo", "fc1", (2, 2, 5, 10, 2), (2, 2, 5, 3, 2), 4, 1096),
    MPOLayerSpec("cnn-mpo", "fc2", (2, 2, 5, 3, 2), (1, 2, 3, 7, 2), 4, 748),
    MPOLayerSpec("cnn-mpo", "fc3", (1, 2, 3, 7, 2), (1, 1, 2, 5, 1), 2, 188),
)
# Table 1's model totals: dense -> MPO.
TABLE1_TOTALS = {"fcnn": 203_530, "fcnn-mpo": 4_842, "cnn": 61_706, "cnn-mpo": 4_604}


def _uniform_(tensor: torch.Tensor, fan_in: int, generator: torch.Generator) -> None:
    # PyTorch's default for Linear/Conv2d (kaiming_uniform, a=√5): U(−1/√fan_in, 1/√fan_in).
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        tensor.uniform_(-bound, bound, generator=generator)


def _linear(n_in: int, n_out: int, generator: torch.Generator) -> nn.Linear:
    # Built on the meta device so construction draws nothing from the global RNG.
    layer = nn.Linear(n_in, n_out, device="meta").to_empty(device="cpu")
    _uniform_(layer.weight, n_in, generator)
    _uniform_(layer.bias, n_in, generator)
    return layer


def _conv(
    c_in: int, c_out: int, kernel: int, padding: int, generator: torch.Generator
) -> nn.Conv2d:
    layer = nn.Conv2d(c_in, c_out, kernel, padding=padding, device="meta").to_empty(device="cpu")
    fan_in = c_in * kernel * kernel
    _uniform_(layer.weight, fan_in, generator)
    assert layer.bias is not None  # constructed with bias=True
    _uniform_(layer.bias, fan_in, generator)
    return layer


def _mpo(model: str, layer: str, generator: torch.Generator) -> MPOLinear:
    spec = next(s for s in TABLE1 if s.model == model and s.layer == layer)
    return MPOLinear(spec.in_dims, spec.out_dims, spec.chi, generator=generator)


class FCNN(nn.Module):
    """MNIST model: 784 -> 256 -> 10 with ReLU (Section 5.1)."""

    def __init__(self, fc1: nn.Module, fc2: nn.Module) -> None:
        super().__init__()
        self.fc1 = fc1
        self.fc2 = fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(-3))))


class LeNet5(nn.Module):
    """Fashion-MNIST model: conv(1→6,5,pad 2)–pool–conv(6→16,5)–pool–400→120→84→10 (DESIGN.md §4)."""

    def __init__(
        self, conv1: nn.Module, conv2: nn.Module, fc1: nn.Module, fc2: nn.Module, fc3: nn.Module
    ) -> None:
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2
        self.fc1 = fc1
        self.fc2 = fc2
        self.fc3 = fc3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(-3)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def _fcnn(generator: torch.Generator) -> nn.Module:
    return FCNN(_linear(784, 256, generator), _linear(256, 10, generator))


def _fcnn_mpo(generator: torch.Generator) -> nn.Module:
    return FCNN(_mpo("fcnn-mpo", "fc1", generator), _mpo("fcnn-mpo", "fc2", generator))


def _cnn(generator: torch.Generator) -> nn.Module:
    return LeNet5(
        _conv(1, 6, 5, 2, generator),
        _conv(6, 16, 5, 0, generator),
        _linear(400, 120, generator),
        _linear(120, 84, generator),
        _linear(84, 10, generator),
    )


def _cnn_mpo(generator: torch.Generator) -> nn.Module:
    # Table 1: the convolutions stay dense, the three FC layers become MPO layers.
    return LeNet5(
        _conv(1, 6, 5, 2, generator),
        _conv(6, 16, 5, 0, generator),
        _mpo("cnn-mpo", "fc1", generator),
        _mpo("cnn-mpo", "fc2", generator),
        _mpo("cnn-mpo", "fc3", generator),
    )


MODELS: dict[str, Callable[..., nn.Module]] = {
    "fcnn": _fcnn,
    "fcnn-mpo": _fcnn_mpo,
    "cnn": _cnn,
    "cnn-mpo": _cnn_mpo,
}
TASK_MODEL = {"mnist": "fcnn-mpo", "fashion-mnist": "cnn-mpo"}


def build_model(name: str, *, seed: int) -> nn.Module:
    """A freshly initialised model; the init depends only on `seed` (the global RNG is untouched)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name](torch.Generator().manual_seed(seed))


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flatten_params(model: nn.Module) -> torch.Tensor:
    """All parameters as one 1-D float32 CPU tensor.

    Canonical (wire and ledger) order: `model.named_parameters()` order, each tensor
    flattened row-major — e.g. fcnn-mpo: fc1.core0…core3, fc1.bias, fc2.core0…core3, fc2.bias.
    """
    return torch.cat([p.detach().reshape(-1).to("cpu", torch.float32) for p in model.parameters()])


def load_flat_(model: nn.Module, vec: torch.Tensor) -> None:
    """Overwrite the model's parameters from a vector in `flatten_params` order."""
    total = param_count(model)
    if vec.ndim != 1 or vec.numel() != total:
        raise InvalidUpdate(f"parameter vector of shape {tuple(vec.shape)}, model needs ({total},)")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(vec[offset : offset + n].view_as(p))
            offset += n
