"""Malicious client behaviour on data and updates (Section 5.1, DESIGN.md §7), chosen by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

N_CLASSES = 10


@runtime_checkable
class Attack(Protocol):
    """What a malicious client does to its labels before training and to its update after."""

    @property
    def name(self) -> str: ...

    def poison_labels(
        self, labels: torch.Tensor, *, round: int, generator: torch.Generator
    ) -> torch.Tensor: ...

    def poison_update(
        self, update: torch.Tensor, *, round: int, generator: torch.Generator
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class LabelFlip:
    """Section 5.1: samples of class i are relabelled 9 − i; the update is sent as trained."""

    name: str = "labelflip"

    def poison_labels(
        self, labels: torch.Tensor, *, round: int, generator: torch.Generator
    ) -> torch.Tensor:
        return (N_CLASSES - 1) - labels

    def poison_update(
        self, update: torch.Tensor, *, round: int, generator: torch.Generator
    ) -> torch.Tensor:
        return update


@dataclass(frozen=True)
class BitFlip:
    """Section 5.1: upload the update with inverted sign, −d."""

    name: str = "bitflip"

    def poison_labels(
        self, labels: torch.Tensor, *, round: int, generator: torch.Generator
    ) -> torch.Tensor:
        return labels

    def poison_update(
        self, update: torch.Tensor, *, round: int, generator: torch.Generator
    ) -> torch.Tensor:
        return -update


@dataclass(frozen=True)
class GaussianNoise:
    """Section 5.1: d + N(0, σ²) with σ = 0.1, noise drawn from the passed generator."""

    name: str = "gaussian"
    sigma: float = 0.1

    def poison_labels(
        self, labels: torch.Tensor, *, round: int, generator: torch.Generator
    ) -> torch.Tensor:
        return labels

    def poison_update(
        self, update: torch.Tensor, *, round: int, generator: torch.Generator
    ) -> torch.Tensor:
        noise = torch.randn(
            update.shape, generator=generator, dtype=update.dtype, device=generator.device
        )
        return update + self.sigma * noise.to(update.device)


def _round_draw(generator: torch.Generator, round: int, n: int) -> int:
    # Derived from (generator seed, round) and not from the generator's position, so that
    # poison_labels and poison_update agree on the round's attack whatever the call order.
    g = torch.Generator().manual_seed((generator.initial_seed() * 1_000_003 + round) % (2**63))
    return int(torch.randint(n, (1,), generator=g))


@dataclass(frozen=True)
class RandomAttack:
    """DESIGN.md §7: each round one of labelflip, bitflip, gaussian, drawn from (seed, round)."""

    name: str = "random"
    choices: tuple[Attack, ...] = (LabelFlip(), BitFlip(), GaussianNoise())

    def attack_for_round(self, round: int, generator: torch.Generator) -> Attack:
        return self.choices[_round_draw(generator, round, len(self.choices))]

    def poison_labels(
        self, labels: torch.Tensor, *, round: int, generator: torch.Generator
    ) -> torch.Tensor:
        attack = self.attack_for_round(round, generator)
        return attack.poison_labels(labels, round=round, generator=generator)

    def poison_update(
        self, update: torch.Tensor, *, round: int, generator: torch.Generator
    ) -> torch.Tensor:
        attack = self.attack_for_round(round, generator)
        return attack.poison_update(update, round=round, generator=generator)


ATTACKS: dict[str, Callable[[], Attack]] = {
    "labelflip": LabelFlip,
    "bitflip": BitFlip,
    "gaussian": GaussianNoise,
    "random": RandomAttack,
}


def get_attack(name: str) -> Attack:
    """The attack registered under `name`."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name]()
