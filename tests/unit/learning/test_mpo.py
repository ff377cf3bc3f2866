"""MPO layers: TT-SVD exactness and truncation, parameter counts, forward = dense matmul."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from qbfl.learning.mpo import (
    MPOLinear,
    bond_dims,
    contract,
    gauge_shifts,
    mpo_param_count,
    rank_bounds,
    rebalance_,
    tt_svd,
)


@st.composite
def shapes(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    n = draw(st.integers(1, 4))
    in_dims = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    out_dims = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    return in_dims, out_dims


@settings(max_examples=40, deadline=None)
@given(shapes(), st.integers(0, 2**31 - 1))
def test_full_rank_reconstructs_exactly(dims: tuple[list[int], list[int]], seed: int) -> None:
    in_dims, out_dims = dims
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(math.prod(in_dims), math.prod(out_dims), generator=g)
    cores = tt_svd(m, in_dims, out_dims, None)
    assert len(cores) == len(in_dims)
    assert cores[0].shape[0] == 1 and cores[-1].shape[-1] == 1
    for k, c in enumerate(cores):
        assert c.shape[1:3] == (in_dims[k], out_dims[k])
        assert c.dtype == torch.float32
    for a, b in zip(cores, cores[1:], strict=False):
        assert a.shape[-1] == b.shape[0]
    bounds = rank_bounds(in_dims, out_dims)
    assert all(c.shape[0] <= bounds[k] for k, c in enumerate(cores))
    torch.testing.assert_close(contract(cores), m, rtol=1e-5, atol=1e-5)


def test_truncation_is_the_best_low_rank_approximation_for_two_cores() -> None:
    # With n = 2, TT-SVD is one truncated SVD: the error is the tail of singular values.
    g = torch.Generator().manual_seed(0)
    m = torch.randn(12, 15, generator=g)
    in_dims, out_dims = (3, 4), (5, 3)
    unfolded = m.reshape(3, 4, 5, 3).permute(0, 2, 1, 3).reshape(15, 12)
    s = torch.linalg.svdvals(unfolded.double())
    errors = []
    for chi in (1, 3, 6, 15):
        cores = tt_svd(m, in_dims, out_dims, chi)
        assert cores[0].shape[-1] == min(chi, 12)  # the unfolding is 15 × 12
        err = float((contract(cores) - m).norm())
        assert err == pytest.approx(float(s[chi:].norm()), abs=1e-4)
        errors.append(err)
    assert errors == sorted(errors, reverse=True) and errors[0] > 1.0 and errors[-1] < 1e-4


def test_truncated_bonds_never_exceed_chi() -> None:
    m = torch.randn(784, 256, generator=torch.Generator().manual_seed(1))
    cores = tt_svd(m, (4, 7, 7, 4), (4, 4, 4, 4), 8)
    assert [c.shape for c in cores] == [(1, 4, 4, 8), (8, 7, 4, 8), (8, 7, 4, 8), (8, 4, 4, 1)]
    assert float((contract(cores) - m).norm() / m.norm()) > 0.5  # a random matrix is not low rank


@pytest.mark.parametrize(
    ("in_dims", "out_dims", "chi", "count"),
    [
        ((4, 7, 7, 4), (4, 4, 4, 4), 8, 4096),
        ((4, 4, 4, 4), (1, 1, 10, 1), 4, 746),
        ((2, 2, 5, 10, 2), (2, 2, 5, 3, 2), 4, 1096),
        ((2, 2, 5, 3, 2), (1, 2, 3, 7, 2), 4, 748),
        ((1, 2, 3, 7, 2), (1, 1, 2, 5, 1), 2, 188),
    ],
)
def test_counts_match_table1_and_the_layer(
    in_dims: tuple[int, ...], out_dims: tuple[int, ...], chi: int, count: int
) -> None:
    assert mpo_param_count(in_dims, out_dims, chi) == count
    layer = MPOLinear(in_dims, out_dims, chi, generator=torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in layer.parameters()) == count
    assert [c.shape[0] for c in layer.cores] + [1] == bond_dims(in_dims, out_dims, chi)


def test_forward_equals_dense_matmul() -> None:
    layer = MPOLinear(
        (2, 2, 5, 10, 2), (2, 2, 5, 3, 2), 4, generator=torch.Generator().manual_seed(3)
    )
    x = torch.randn(7, 400, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(layer(x), x @ layer.to_dense() + layer.bias, rtol=1e-5, atol=1e-5)
    assert layer.to_dense().shape == (400, 120)


def test_from_linear_full_rank_matches_the_linear_layer() -> None:
    torch.manual_seed(0)  # nn.Linear's own init; only this test's input depends on it
    linear = nn.Linear(84, 10)
    layer = MPOLinear.from_linear(linear, (1, 2, 3, 7, 2), (1, 1, 2, 5, 1), None, rescale=False)
    x = torch.randn(5, 84)
    torch.testing.assert_close(layer(x), linear(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="factor"):
        MPOLinear.from_linear(linear, (2, 2, 5, 10, 2), (2, 2, 5, 3, 2), 4)


def test_padding_to_chi_keeps_the_product_and_trains() -> None:
    # T^{1,1,2,5,1}_{1,2,3,7,2}(2): I_1 J_1 = 1, so bond 1 is padded from rank 1 to χ = 2.
    linear = nn.Linear(84, 10, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        linear.weight.copy_(torch.randn(10, 84, generator=torch.Generator().manual_seed(5)))
        linear.bias.zero_()
    layer = MPOLinear.from_linear(linear, (1, 2, 3, 7, 2), (1, 1, 2, 5, 1), 2, rescale=False)
    assert layer.cores[0].shape == (1, 1, 1, 2)
    truncated = contract(tt_svd(linear.weight.T, (1, 2, 3, 7, 2), (1, 1, 2, 5, 1), 2))
    torch.testing.assert_close(layer.to_dense(), truncated, rtol=1e-5, atol=1e-5)
    layer(torch.randn(3, 84, generator=torch.Generator().manual_seed(6))).square().sum().backward()
    grad = layer.cores[0].grad
    assert grad is not None and float(grad[..., 1].abs().sum()) > 0


def test_rescale_restores_the_dense_init_norm() -> None:
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    plain = MPOLinear((4, 7, 7, 4), (4, 4, 4, 4), 8, generator=g1, rescale=False)
    scaled = MPOLinear((4, 7, 7, 4), (4, 4, 4, 4), 8, generator=g2, rescale=True)
    dense_norm = math.sqrt(784 * 256 / 3) / 28  # ‖U(−1/28, 1/28)^{784×256}‖_F
    assert float(plain.to_dense().detach().norm()) < 0.5 * dense_norm
    assert float(scaled.to_dense().detach().norm()) == pytest.approx(dense_norm, rel=0.02)
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(
            plain.to_dense().flatten(), scaled.to_dense().flatten(), dim=0
        )
    assert float(cos) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("in_dims", "out_dims", "chi"),
    [((4, 7), (4,), 2), ((), (), 2), ((2, 0), (2, 2), 2), ((2, 2), (2, 2), 0)],
)
def test_invalid_shapes(in_dims: tuple[int, ...], out_dims: tuple[int, ...], chi: int) -> None:
    with pytest.raises(ValueError):
        MPOLinear(in_dims, out_dims, chi)


def test_matrix_shape_must_factor() -> None:
    with pytest.raises(ValueError, match="factor"):
        tt_svd(torch.zeros(10, 10), (2, 4), (2, 5), None)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-20, 20), min_size=4, max_size=4), st.integers(0, 2**31 - 1))
def test_rebalance_keeps_the_output_and_bounds_core_norm_ratios(
    log_scales: list[int], seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    layer = MPOLinear((4, 7, 7, 4), (4, 4, 4, 4), 8, generator=g)
    # Push the gauge far off balance (product changes too, which does not matter here).
    with torch.no_grad():
        for core, e in zip(layer.cores, log_scales, strict=True):
            core.mul_(2.0**e)
    x = torch.randn(5, 784, generator=g)
    before_out, before_w = layer(x).detach(), layer.to_dense().detach()
    shifts = rebalance_(layer)
    assert sum(shifts) == 0
    # Power-of-two factors are exact: the weight is bit-for-bit the same, the output to float tolerance.
    assert torch.equal(layer.to_dense().detach(), before_w)
    torch.testing.assert_close(layer(x).detach(), before_out, rtol=1e-6, atol=1e-6)
    norms = [float(c.detach().norm()) for c in layer.cores]
    assert max(norms) / min(norms) < 2**1.5
    assert rebalance_(layer) == [0, 0, 0, 0]  # idempotent


def test_gauge_shifts_move_weight_from_the_largest_to_the_smallest_core() -> None:
    ones = torch.ones(1, 2, 2, 1)  # squared norm 4 = 2^2, frexp exponent 3
    cores = [ones * 2.0**6, ones, ones * 2.0**-6]
    assert gauge_shifts(cores) == [-6, 0, 6]
    assert gauge_shifts([ones, ones * 2.0]) == [0, 0]  # already within the band
    assert gauge_shifts([ones, torch.zeros(1, 2, 2, 1)]) == [0, 0]  # a zero core: leave it
