"""Table 1 models: exact parameter counts, seeded init, the flat parameter vector."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from qbfl.errors import InvalidUpdate
from qbfl.learning.models import (
    MODELS,
    TABLE1,
    TABLE1_TOTALS,
    TASK_MODEL,
    build_model,
    flatten_params,
    load_flat_,
    param_count,
)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_totals_and_output_shape(name: str) -> None:
    model = build_model(name, seed=0)
    assert param_count(model) == TABLE1_TOTALS[name]
    assert model(torch.zeros(4, 1, 28, 28)).shape == (4, 10)


def test_table1_layers_and_reductions() -> None:
    assert [s.mpo_count for s in TABLE1] == [4096, 746, 1096, 748, 188]
    assert [s.paper_count for s in TABLE1] == [4096, 746, 1096, 748, 188]
    for spec in TABLE1:
        layer = getattr(build_model(spec.model, seed=0), spec.layer)
        assert sum(p.numel() for p in layer.parameters()) == spec.mpo_count
        dense = getattr(build_model(spec.model.removesuffix("-mpo"), seed=0), spec.layer)
        assert sum(p.numel() for p in dense.parameters()) == spec.dense_count
    assert round(100 * (1 - 4842 / 203530), 1) == 97.6
    assert round(100 * (1 - 4604 / 61706), 1) == 92.5
    assert TABLE1[0].notation() == "T^{4,4,4,4}_{4,7,7,4}(8)"
    assert TASK_MODEL == {"mnist": "fcnn-mpo", "fashion-mnist": "cnn-mpo"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_seeded_init_leaves_global_rng_alone(name: str) -> None:
    state = torch.get_rng_state()
    a, b, c = build_model(name, seed=5), build_model(name, seed=5), build_model(name, seed=6)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(flatten_params(a), flatten_params(b))
    assert not torch.equal(flatten_params(a), flatten_params(c))


def test_flat_vector_order_and_round_trip() -> None:
    model: Any = build_model("fcnn-mpo", seed=1)
    names = [n for n, _ in model.named_parameters()]
    assert names == [f"fc1.core{k}" for k in range(4)] + ["fc1.bias"] + [
        f"fc2.core{k}" for k in range(4)
    ] + ["fc2.bias"]
    vec = flatten_params(model)
    assert vec.dtype == torch.float32 and vec.shape == (4842,)
    assert torch.equal(vec[:128], model.fc1.core0.detach().reshape(-1))
    other = build_model("fcnn-mpo", seed=2)
    load_flat_(other, vec)
    assert torch.equal(flatten_params(other), vec)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(other(x), model(x))


def test_load_flat_rejects_wrong_size() -> None:
    model = build_model("cnn-mpo", seed=0)
    with pytest.raises(InvalidUpdate, match="4604"):
        load_flat_(model, torch.zeros(4603))


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="fcnn-mpo"):
        build_model("resnet", seed=0)
