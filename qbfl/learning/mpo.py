"""Matrix product operator (MPO) layers: TT-SVD of a weight matrix and a linear layer built on its cores (Section 2.3, 4.3)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# DESIGN.md §4: whether to rescale the truncated cores to the dense init's Frobenius norm.
# Measured in docs/bench-learning.md; the better of the two is the default.
DEFAULT_RESCALE = True


def _check_dims(in_dims: Sequence[int], out_dims: Sequence[int], chi: int | None) -> None:
    if len(in_dims) != len(out_dims) or not in_dims:
        raise ValueError(
            f"in_dims {tuple(in_dims)} and out_dims {tuple(out_dims)} need equal, non-zero length"
        )
    if any(d < 1 for d in (*in_dims, *out_dims)):
        raise ValueError(f"dimensions must be >= 1: {tuple(in_dims)}, {tuple(out_dims)}")
    if chi is not None and chi < 1:
        raise ValueError(f"bond dimension chi must be >= 1 or None, got {chi}")


def rank_bounds(in_dims: Sequence[int], out_dims: Sequence[int]) -> list[int]:
    """Exact-rank bound of each bond: D_k <= min(Π_{i<=k} I_i J_i, Π_{i>k} I_i J_i), D_0 = D_n = 1."""
    sizes = [i * j for i, j in zip(in_dims, out_dims, strict=True)]
    n = len(sizes)
    return [1] + [min(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, n)] + [1]


def bond_dims(in_dims: Sequence[int], out_dims: Sequence[int], chi: int | None) -> list[int]:
    """Bond dimensions of an MPO layer: D_1 = … = D_{n−1} = χ as in Section 4.3 (exact ranks when χ is None).

    Table 1 counts every inner bond at χ even where the exact rank bound is smaller
    (T^{1,1,2,5,1}_{1,2,3,7,2}(2) has I_1 J_1 = 1), so layers keep χ there too.
    """
    _check_dims(in_dims, out_dims, chi)
    bounds = rank_bounds(in_dims, out_dims)
    if chi is None:
        return bounds
    return [1] + [chi] * (len(in_dims) - 1) + [1]


def mpo_param_count(in_dims: Sequence[int], out_dims: Sequence[int], chi: int | None) -> int:
    """Trainable parameters of an MPO layer: Σ_k D_{k−1} I_k J_k D_k + N_out (bias).

    Eq. 6 is typeset as a product; the sum is what matches Table 1 (DESIGN.md §4).
    """
    d = bond_dims(in_dims, out_dims, chi)
    cores = sum(
        d[k] * i * j * d[k + 1] for k, (i, j) in enumerate(zip(in_dims, out_dims, strict=True))
    )
    return cores + math.prod(out_dims)


def tt_svd(
    matrix: torch.Tensor, in_dims: Sequence[int], out_dims: Sequence[int], chi: int | None
) -> list[torch.Tensor]:
    """Decompose an (N_in, N_out) matrix into MPO cores of shape (D_{k−1}, I_k, J_k, D_k).

    Sequential SVDs (in float64) truncated to min(χ, attainable rank); with χ None (or at
    least the exact rank) the cores reproduce the matrix to the precision of its dtype.
    Row index r = (i_1, …, i_n) and column c = (j_1, …, j_n) are read row-major.
    """
    _check_dims(in_dims, out_dims, chi)
    n = len(in_dims)
    if matrix.ndim != 2 or matrix.shape != (math.prod(in_dims), math.prod(out_dims)):
        raise ValueError(
            f"matrix of shape {tuple(matrix.shape)} does not factor as "
            f"{tuple(in_dims)} x {tuple(out_dims)}"
        )
    interleave = [a for k in range(n) for a in (k, n + k)]  # (I_1, J_1, I_2, J_2, …)
    rest = matrix.detach().to(torch.float64).reshape(*in_dims, *out_dims).permute(interleave)
    cores: list[torch.Tensor] = []
    d_prev = 1
    for k in range(n - 1):
        unfolded = rest.reshape(d_prev * in_dims[k] * out_dims[k], -1)
        u, s, vh = torch.linalg.svd(unfolded, full_matrices=False)
        d = s.numel() if chi is None else min(chi, s.numel())
        cores.append(u[:, :d].reshape(d_prev, in_dims[k], out_dims[k], d))
        rest = s[:d, None] * vh[:d]
        d_prev = d
    cores.append(rest.reshape(d_prev, in_dims[-1], out_dims[-1], 1))
    return [c.to(matrix.dtype) for c in cores]


def contract(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """The dense (N_in, N_out) matrix of a list of cores: a chain of matmuls (a batched GEMM under vmap)."""
    in_dims = [c.shape[1] for c in cores]
    out_dims = [c.shape[2] for c in cores]
    n = len(cores)
    result = cores[0].reshape(-1, cores[0].shape[-1])
    for core in cores[1:]:
        result = (result @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[-1])
    # (I_1, J_1, …, I_n, J_n) -> (I_1 … I_n, J_1 … J_n)
    order = [2 * k for k in range(n)] + [2 * k + 1 for k in range(n)]
    interleaved = [d for pair in zip(in_dims, out_dims, strict=True) for d in pair]
    return (
        result.reshape(interleaved).permute(order).reshape(math.prod(in_dims), math.prod(out_dims))
    )


def _pad_cores(
    cores: list[torch.Tensor], dims: Sequence[int], generator: torch.Generator
) -> list[torch.Tensor]:
    """Grow each core's bonds to `dims` without changing the product.

    New right-bond columns are zero, new left-bond rows random: the product is unchanged,
    and the pair is not stuck at the saddle both-zero padding would create.
    """
    padded: list[torch.Tensor] = []
    for k, core in enumerate(cores):
        left, i, j, right = core.shape
        new = torch.zeros(dims[k], i, j, dims[k + 1], dtype=core.dtype)
        if dims[k] > left:
            scale = float(core.std()) if core.numel() > 1 else float(core.abs().mean())
            noise = torch.randn(dims[k] - left, i, j, right, generator=generator, dtype=core.dtype)
            new[left:, :, :, :right] = noise * (scale if scale > 0 else 1.0)
        new[:left, :, :, :right] = core
        padded.append(new)
    return padded


def _dense_init(
    n_in: int, n_out: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    # nn.Linear's default (kaiming_uniform with a=√5): U(−1/√fan_in, 1/√fan_in) for weight and bias.
    bound = 1.0 / math.sqrt(n_in)
    weight = torch.empty(n_in, n_out).uniform_(-bound, bound, generator=generator)
    bias = torch.empty(n_out).uniform_(-bound, bound, generator=generator)
    return weight, bias


class MPOLinear(nn.Module):
    """Linear layer T^{J_1…J_n}_{I_1…I_n}(χ): weight held as MPO cores, bias dense (Section 4.3).

    Parameters are `core0` … `core{n−1}` then `bias` (registered as plain attributes, not a
    ParameterList, so Opacus' hooks see them on this module). The forward contracts the
    cores into the dense weight once per call and uses one GEMM: cheaper than contracting
    the input through each core at these sizes, and a batched GEMM under torch.func.vmap.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dims: Sequence[int],
        chi: int | None,
        *,
        generator: torch.Generator | None = None,
        rescale: bool = DEFAULT_RESCALE,
    ) -> None:
        super().__init__()
        _check_dims(in_dims, out_dims, chi)
        self.in_dims = tuple(int(d) for d in in_dims)
        self.out_dims = tuple(int(d) for d in out_dims)
        self.chi = chi
        self.in_features = math.prod(self.in_dims)
        self.out_features = math.prod(self.out_dims)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        weight, bias = _dense_init(self.in_features, self.out_features, gen)
        self._set_from(weight, bias, gen, rescale)

    def _set_from(
        self, weight: torch.Tensor, bias: torch.Tensor | None, gen: torch.Generator, rescale: bool
    ) -> None:
        cores = tt_svd(weight.float(), self.in_dims, self.out_dims, self.chi)
        cores = _pad_cores(cores, bond_dims(self.in_dims, self.out_dims, self.chi), gen)
        if rescale:
            approx = contract(cores).norm()
            if float(approx) > 0:
                # DESIGN §4: truncation to χ keeps only part of the init's norm; spread the
                # correction evenly over the n cores.
                factor = float(weight.norm() / approx) ** (1.0 / len(cores))
                cores = [c * factor for c in cores]
        for k, core in enumerate(cores):
            self.register_parameter(f"core{k}", nn.Parameter(core.contiguous()))
        b = torch.zeros(self.out_features) if bias is None else bias.detach().float().clone()
        self.bias = nn.Parameter(b)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        in_dims: Sequence[int],
        out_dims: Sequence[int],
        chi: int | None,
        *,
        rescale: bool = DEFAULT_RESCALE,
        generator: torch.Generator | None = None,
    ) -> MPOLinear:
        """An MPO layer initialised by TT-SVD of `linear`'s weight (truncated to χ), keeping its bias."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        _check_dims(in_dims, out_dims, chi)
        layer.in_dims = tuple(int(d) for d in in_dims)
        layer.out_dims = tuple(int(d) for d in out_dims)
        layer.chi = chi
        layer.in_features = math.prod(layer.in_dims)
        layer.out_features = math.prod(layer.out_dims)
        if (linear.in_features, linear.out_features) != (layer.in_features, layer.out_features):
            raise ValueError(
                f"Linear({linear.in_features}, {linear.out_features}) does not factor as "
                f"{layer.in_dims} x {layer.out_dims}"
            )
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        # nn.Linear stores (out, in); the MPO convention is (N_in, N_out), lower indices = input.
        layer._set_from(linear.weight.detach().T, linear.bias, gen, rescale)
        return layer

    @property
    def cores(self) -> list[torch.Tensor]:
        return [getattr(self, f"core{k}") for k in range(len(self.in_dims))]

    def to_dense(self) -> torch.Tensor:
        """The (N_in, N_out) weight the cores represent."""
        return contract(self.cores)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.to_dense().T, self.bias)

    def extra_repr(self) -> str:
        return f"in_dims={self.in_dims}, out_dims={self.out_dims}, chi={self.chi}"


def _squared_norm_exponent(core: torch.Tensor) -> int | None:
    """E with ‖core‖² in [2^(E−1), 2^E): an exactly rounded sum (math.fsum), so every CPU agrees."""
    values = core.detach().to("cpu", torch.float64).reshape(-1).tolist()
    total = math.fsum(v * v for v in values)
    if not (math.isfinite(total) and total > 0):
        return None
    return math.frexp(total)[1]


def gauge_shifts(cores: Sequence[torch.Tensor]) -> list[int]:
    """Power-of-two gauge that evens out the core norms: core k is scaled by 2^s_k with Σ s_k = 0.

    Only integer arithmetic on the exponents of exactly rounded squared norms, so the
    result is the same on every platform; scaling by a power of two is exact in floating
    point, so the contracted weight is bit-for-bit unchanged (barring under/overflow).
    Afterwards the squared-norm exponents differ by at most 2, i.e. any two core norms are
    within a factor 2^1.5 < 2.83 of each other. All zeros when a core is zero or not finite.
    """
    exps = [_squared_norm_exponent(c) for c in cores]
    if len(cores) < 2 or any(e is None for e in exps):
        return [0] * len(cores)
    levels = [int(e) for e in exps if e is not None]
    shifts = [0] * len(cores)
    while True:
        hi = max(range(len(levels)), key=lambda k: (levels[k], -k))
        lo = min(range(len(levels)), key=lambda k: (levels[k], k))
        # Moving one factor 2 from the largest to the smallest core changes their squared-norm
        # exponents by ∓2; it narrows the spread only while the gap is at least 3.
        if levels[hi] - levels[lo] < 3:
            return shifts
        shifts[hi] -= 1
        shifts[lo] += 1
        levels[hi] -= 2
        levels[lo] += 2


def rebalance_(layer: MPOLinear) -> list[int]:
    """Apply `gauge_shifts` to the layer's cores in place (function-preserving); returns the shifts.

    The MPO product is invariant under G_k -> c_k G_k with Π c_k = 1, but the gradient of one
    core scales with the other cores' norms, so an uneven split of the same weight trains
    with a larger effective step on some cores. Evening the norms removes that freedom.
    """
    shifts = gauge_shifts(layer.cores)
    with torch.no_grad():
        for core, s in zip(layer.cores, shifts, strict=True):
            if s:
                core.mul_(2.0**s)
    return shifts
