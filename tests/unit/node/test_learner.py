"""A node's Learner trains client i exactly as the simulator's vectorised client i (same seeds,
same batches, same attack streams), so a networked run and a simulation are comparable."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from qbfl.errors import ConfigError, InvalidUpdate
from qbfl.learning.attacks import get_attack
from qbfl.learning.data import load_dataset
from qbfl.learning.models import build_model, flatten_params
from qbfl.learning.training import DEFAULT_CLIP_NORM, TASK_TRAIN_CONFIG, derive_seed
from qbfl.learning.vectorized import VectorizedClients
from qbfl.node.learner import Learner
from qbfl.orchestrator.fullsim import FullSimConfig, build_genesis
from qbfl.orchestrator.simulate import SimulationConfig, client_data


@pytest.fixture(scope="module")
def genesis():  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    return build_genesis(FullSimConfig(nodes=6, rounds=3))[0]


@pytest.mark.parametrize(("node", "attack"), [(1, None), (4, "bitflip"), (2, "gaussian")])
def test_learner_matches_the_simulators_client(genesis, node: int, attack: str | None) -> None:  # type: ignore[no-untyped-def]
    learner = Learner(genesis, node, attack=attack, device="cpu")
    config = SimulationConfig(nodes=6, rounds=3, seed=0)
    images, labels = client_data(config, load_dataset("mnist", "train"))
    model = build_model("fcnn-mpo", seed=0)
    clients = VectorizedClients(
        model,
        images,
        labels,
        dataclasses.replace(TASK_TRAIN_CONFIG["mnist"], clip_norm=DEFAULT_CLIP_NORM),
        seeds=[derive_seed(0, 1, i) for i in range(6)],
        attacks={node: get_attack(attack)} if attack else None,
    )
    start = flatten_params(model)
    assert np.array_equal(learner.params, start.numpy())
    for round_index in range(2):  # two rounds: the shuffle and attack streams advance alike
        expected = clients.train_round(start, round=round_index)[node].numpy()
        got = np.frombuffer(learner.train(round_index + 1), dtype="<f4")
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-6)
        learner.apply(got.tobytes())
        start = start + torch.from_numpy(got.copy())


def test_apply_and_load_refuse_the_wrong_size(genesis) -> None:  # type: ignore[no-untyped-def]
    learner = Learner(genesis, 0, device="cpu")
    with pytest.raises(InvalidUpdate):
        learner.apply(b"\x00" * 12)
    with pytest.raises(InvalidUpdate):
        learner.load(np.zeros(3, dtype=np.float32))


def test_a_shard_alone_equals_the_rows_of_the_whole_split(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from qbfl.learning import data
    from qbfl.learning.partition import client_indices

    whole = data.load_dataset("mnist", "train")  # decoded and kept: the shard is sliced from it
    rows = client_indices(whole.labels.numpy(), 3, n_clients=50, seed=0)
    sliced = data.load_shard("mnist", "train", lambda y: client_indices(y, 3, n_clients=50, seed=0))
    monkeypatch.setattr(data, "_DECODED", {})  # a fresh process: only the 775 rows are normalised
    alone = data.load_shard("mnist", "train", lambda y: client_indices(y, 3, n_clients=50, seed=0))
    for shard in (sliced, alone):
        assert torch.equal(shard.images, whole.images[torch.from_numpy(rows)])
        assert torch.equal(shard.labels, whole.labels[torch.from_numpy(rows)])


def test_dp_accounting_run_spreads_the_budget_round_gives_it_to_each_round() -> None:
    dp_genesis = build_genesis(FullSimConfig(nodes=6, rounds=200, dp=True))[0]
    assert dp_genesis.task.dp is not None and dp_genesis.task.dp.target_epsilon == 4.0
    run = Learner(dp_genesis, 0, dp=True, device="cpu")
    per_round = Learner(dp_genesis, 0, dp=True, dp_accounting="round", device="cpu")
    plain = Learner(dp_genesis, 0, device="cpu")
    assert run.noise_multiplier is not None and per_round.noise_multiplier is not None
    # (4, 1e-5) over 200 rounds' steps needs several times the noise of one round's
    assert per_round.noise_multiplier < run.noise_multiplier / 3
    assert plain.noise_multiplier is None
    with pytest.raises(ConfigError, match="dp_accounting"):
        Learner(dp_genesis, 0, dp=True, dp_accounting="epoch", device="cpu")
