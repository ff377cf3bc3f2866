"""The in-process simulator: config validation, a tiny run end to end, determinism under a seed."""

from __future__ import annotations

import math

import pytest

from qbfl.orchestrator.simulate import SimulationConfig, malicious_ids, run_simulation

TINY = dict(task="mnist", nodes=6, rounds=2, samples_per_client=60, test_samples=400, seed=3)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("task", "cifar", "unknown task"),
        ("nodes", 0, "nodes"),
        ("malicious", 7, "malicious"),
        ("malicious", -1, "malicious"),
        ("attack", "nope", "unknown attack"),
        ("aggregator", "mean", "unknown aggregator"),
        ("rounds", 0, "rounds"),
        ("f", 6, "f must be"),
        ("model", "resnet", "unknown model"),
        ("samples_per_client", 0, "samples_per_client"),
        ("dp_epsilon", -1.0, "dp_epsilon"),
        ("device", "tpu", "device"),
        ("clip_norm", 0.0, "clip_norm"),
        ("clip_norm", float("nan"), "clip_norm"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, match: str) -> None:
    kwargs = dict(TINY) | {field: value}
    with pytest.raises(ValueError, match=match):
        SimulationConfig(**kwargs)  # type: ignore[arg-type]


def test_config_defaults_follow_the_paper() -> None:
    mnist = SimulationConfig(task="mnist", nodes=50)
    fashion = SimulationConfig(task="fashion-mnist", nodes=50)
    assert (mnist.total_rounds, fashion.total_rounds) == (200, 300)
    assert mnist.fault_tolerance == 20  # ⌊0.4·50⌋
    assert (mnist.model_name, fashion.model_name) == ("fcnn-mpo", "cnn-mpo")
    # the one deliberate deviation: local SGD steps are clipped (docs/bench-simulator.md)
    assert mnist.clip_norm == 5.0 and not mnist.rebalance


def test_malicious_ids_are_a_seeded_choice() -> None:
    a = malicious_ids(SimulationConfig(nodes=50, malicious=15, seed=1))
    b = malicious_ids(SimulationConfig(nodes=50, malicious=15, seed=1))
    c = malicious_ids(SimulationConfig(nodes=50, malicious=15, seed=2))
    assert a == b != c
    assert len(set(a)) == 15 and all(0 <= i < 50 for i in a)


def test_tiny_run_records_rounds_and_is_deterministic() -> None:
    config = SimulationConfig(**TINY, malicious=2, attack="bitflip")  # type: ignore[arg-type]
    seen = []
    first = run_simulation(config, on_round=seen.append)
    second = run_simulation(config)
    assert [r.round for r in first.records] == [1, 2] == [r.round for r in seen]
    for a, b in zip(first.records, second.records, strict=True):
        assert (a.accuracy, a.loss, a.selected) == (b.accuracy, b.loss, b.selected)
    last = first.records[-1]
    assert 0.0 <= last.accuracy <= 1.0 and math.isfinite(last.loss)
    # Alg. 2 keeps N − f − 2 = 6 − 2 − 2 = 2 updates; each gains one stake per round.
    assert len(last.selected) == 2
    total_stake = last.honest_stake * 4 + last.malicious_stake * 2
    assert total_stake == pytest.approx(6 + 2 * 2)
    assert 0.0 <= last.malicious_selected <= 1.0
    assert last.epsilon == 0.0
    assert first.summary()["mean_last_20"] == pytest.approx(
        sum(r.accuracy for r in first.records) / 2
    )


def test_fedavg_without_attack_learns() -> None:
    config = SimulationConfig(
        **TINY | {"rounds": 3, "samples_per_client": 200}, aggregator="fedavg"
    )  # type: ignore[arg-type]
    result = run_simulation(config)
    accuracy = [r.accuracy for r in result.records]
    # Chance is 0.1; the truncated MPO init learns slowly at first (DESIGN.md §4): seen 0.47.
    assert accuracy[-1] > 0.3 and accuracy[-1] > accuracy[0]
    assert len(result.records[-1].selected) == 6


def test_diverged_client_is_dropped_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from qbfl.learning.vectorized import VectorizedClients

    real = VectorizedClients.train_round

    def diverging(self: VectorizedClients, weights: torch.Tensor, *, round: int) -> torch.Tensor:
        updates = real(self, weights, round=round)
        updates[1] = float("nan")
        return updates

    monkeypatch.setattr(VectorizedClients, "train_round", diverging)
    config = SimulationConfig(**TINY, aggregator="fedavg")  # type: ignore[arg-type]
    result = run_simulation(config)
    for record in result.records:
        assert record.dropped == (1,)
        assert 1 not in record.selected and len(record.selected) == 5
        assert math.isfinite(record.loss)


def test_round_where_every_client_diverged_keeps_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from qbfl.learning.vectorized import VectorizedClients

    real = VectorizedClients.train_round

    def diverging(self: VectorizedClients, weights: torch.Tensor, *, round: int) -> torch.Tensor:
        updates = real(self, weights, round=round)
        if round == 1:
            updates[:] = float("inf")
        return updates

    monkeypatch.setattr(VectorizedClients, "train_round", diverging)
    config = SimulationConfig(**TINY | {"rounds": 3}, aggregator="fedavg")  # type: ignore[arg-type]
    first, second, third = run_simulation(config).records
    assert second.selected == () and len(second.dropped) == 6
    assert second.accuracy == first.accuracy and second.loss == first.loss
    assert len(third.selected) == 6


def test_rebalancing_keeps_the_function_and_norms_are_recorded() -> None:
    plain = run_simulation(SimulationConfig(**(TINY | {"rounds": 1})))  # type: ignore[arg-type]
    balanced = run_simulation(SimulationConfig(**(TINY | {"rounds": 1}), rebalance=True))  # type: ignore[arg-type]
    a, b = plain.records[0], balanced.records[0]
    # Power-of-two gauge factors leave the contracted weights bit-identical.
    assert (a.accuracy, a.loss) == (b.accuracy, b.loss)
    assert a.norms["fc1.W"] == b.norms["fc1.W"] > 0
    cores = [b.norms[f"fc1.core{k}"] for k in range(4)]
    assert max(cores) / min(cores) < 2**1.5
    assert b.norms["update"] > 0 and b.norms["client_update_max"] >= b.norms["update"]


@pytest.mark.parametrize("knowledge", ["omniscient", "colluders"])
def test_colluding_attack_replaces_the_malicious_rows(
    knowledge: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qbfl.orchestrator.simulate as simulate

    seen: list[tuple[int, int]] = []
    real = simulate._collude

    def spy(updates, attack, is_bad, finite, **kwargs):  # type: ignore[no-untyped-def]
        real(updates, attack, is_bad, finite, **kwargs)
        # every malicious row now carries the one crafted vector
        rows = updates[is_bad]
        assert (rows == rows[0]).all()
        seen.append((int(is_bad.sum()), attack.knowledge.value == knowledge))

    monkeypatch.setattr(simulate, "_collude", spy)
    config = SimulationConfig(
        **TINY, malicious=2, attack="ipm", aggregator="multi-krum", attack_knowledge=knowledge
    )  # type: ignore[arg-type]
    result = run_simulation(config)
    assert seen == [(2, True)] * 2
    assert len(result.records) == 2
    doc = config.to_json()
    assert ("attack_knowledge" in doc) == (knowledge != "omniscient")


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_a_crafted_update_that_overflows_float32_is_dropped_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import qbfl.orchestrator.simulate as simulate
    from qbfl.learning.collusion import InnerProductManipulation

    # IPM with ε = 1e300: −ε·μ is finite in float64 and ±inf once stored as float32
    huge = InnerProductManipulation(epsilon=1e300, name="ipm")
    monkeypatch.setattr(simulate, "get_colluding_attack", lambda name, knowledge: huge)
    config = SimulationConfig(**TINY, malicious=2, attack="ipm", aggregator="qbfl")  # type: ignore[arg-type]
    result = run_simulation(config)
    assert len(result.records) == 2
    for record in result.records:
        assert set(record.dropped) == set(result.malicious_ids)  # refused, as a node would
        assert not set(record.selected) & set(result.malicious_ids)
        assert math.isfinite(record.accuracy)


def test_bulyan_runs_with_the_f_it_can_serve() -> None:
    config = SimulationConfig(**TINY, malicious=1, attack="alie", aggregator="bulyan")  # type: ignore[arg-type]
    result = run_simulation(config)
    # 6 nodes, task f = ⌊2.4⌋ = 2, Bulyan needs N ≥ 4f + 3: it aggregates with f = 0
    assert result.extra["f_used"] == [0]


def test_added_fields_keep_old_cache_keys() -> None:
    doc = SimulationConfig(task="mnist", nodes=50).to_json()
    for name in ("partition", "alpha", "dp_accounting", "attack_knowledge"):
        assert name not in doc
    doc = SimulationConfig(task="mnist", partition="dirichlet", alpha=0.5).to_json()
    assert (doc["partition"], doc["alpha"]) == ("dirichlet", 0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"partition": "dirichlet"}, "needs alpha"),
        ({"partition": "iid", "alpha": 0.5}, "only by the dirichlet"),
        ({"partition": "shards"}, "unknown partition"),
        ({"dp_accounting": "epoch"}, "dp_accounting"),
        ({"attack_knowledge": "oracle"}, "attack_knowledge"),
        ({"attack": "alie", "malicious": 6}, "all are malicious"),
    ],
)
def test_new_options_are_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SimulationConfig(**(dict(TINY) | kwargs))  # type: ignore[arg-type]
