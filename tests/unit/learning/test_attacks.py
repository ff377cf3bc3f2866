"""Attacks: label flipping, sign flipping, Gaussian noise and the per-round random choice."""

from __future__ import annotations

import pytest
import torch

from qbfl.learning.attacks import ATTACKS, Attack, RandomAttack, get_attack


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_and_protocol() -> None:
    assert sorted(ATTACKS) == ["bitflip", "gaussian", "labelflip", "random"]
    for name in ATTACKS:
        attack = get_attack(name)
        assert isinstance(attack, Attack) and attack.name == name
    with pytest.raises(ValueError, match="bitflip, gaussian, labelflip, random"):
        get_attack("ipm")


def test_labelflip() -> None:
    attack = get_attack("labelflip")
    labels = torch.arange(10)
    assert attack.poison_labels(labels, round=0, generator=_gen(0)).tolist() == list(
        range(9, -1, -1)
    )
    d = torch.randn(20, generator=_gen(1))
    assert torch.equal(attack.poison_update(d, round=0, generator=_gen(0)), d)


def test_bitflip() -> None:
    attack = get_attack("bitflip")
    d = torch.randn(20, generator=_gen(1))
    assert torch.equal(attack.poison_update(d, round=3, generator=_gen(0)), -d)
    labels = torch.arange(10)
    assert torch.equal(attack.poison_labels(labels, round=3, generator=_gen(0)), labels)


def test_gaussian_noise_has_sigma_point_one_and_is_seeded() -> None:
    attack = get_attack("gaussian")
    d = torch.ones(100_000)
    poisoned = attack.poison_update(d, round=0, generator=_gen(2))
    noise = poisoned - d
    assert float(noise.mean()) == pytest.approx(0.0, abs=2e-3)
    assert float(noise.std()) == pytest.approx(0.1, rel=0.02)
    assert torch.equal(poisoned, attack.poison_update(d, round=0, generator=_gen(2)))
    assert not torch.equal(poisoned, attack.poison_update(d, round=0, generator=_gen(3)))


def test_random_draw_is_per_round_and_order_independent() -> None:
    attack = get_attack("random")
    assert isinstance(attack, RandomAttack)
    seen = set()
    labels = torch.arange(10)
    d = torch.ones(50)
    for rnd in range(30):
        g = _gen(11)
        g.manual_seed(11)
        chosen = attack.attack_for_round(rnd, g).name
        seen.add(chosen)
        # Consume the generator first, then ask again: the draw must not move.
        g2 = _gen(11)
        torch.rand(5, generator=g2)
        poisoned_update = attack.poison_update(d, round=rnd, generator=g2)
        poisoned_labels = attack.poison_labels(labels, round=rnd, generator=g2)
        flipped = not torch.equal(poisoned_labels, labels)
        assert flipped == (chosen == "labelflip")
        if chosen == "bitflip":
            assert torch.equal(poisoned_update, -d)
        elif chosen == "labelflip":
            assert torch.equal(poisoned_update, d)
        else:
            assert not torch.equal(poisoned_update, d) and not torch.equal(poisoned_update, -d)
    assert seen == {"labelflip", "bitflip", "gaussian"}
    draws_a = [attack.attack_for_round(r, _gen(1)).name for r in range(20)]
    draws_b = [attack.attack_for_round(r, _gen(2)).name for r in range(20)]
    assert draws_a != draws_b
