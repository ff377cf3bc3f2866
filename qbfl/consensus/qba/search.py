"""Adversarial search support: record a faulty run's deviations, replay them, check the properties, shrink."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from qbfl.consensus.qba.adversary import (
    ForwardChoice,
    HonestAdversary,
    KeyChoice,
    QbaAdversary,
    ReplayStep,
    SignChoice,
)
from qbfl.consensus.qba.driver import QbaOutcome, run_qba
from qbfl.consensus.qba.messages import QbaMode, TripleId
from qbfl.crypto.gf2 import PolynomialSource
from qbfl.crypto.keysupply import SeededKeySupply
from qbfl.crypto.qds import QdsParams

# (hook name, faulty member, operation): identifies one point where a faulty member sends; the
# replay hook's name carries its step ("replay:check"), since one member replays at several steps
DecisionKey = tuple[str, int, TripleId]
Decision = SignChoice | ForwardChoice | KeyChoice | bool | bytes | None


def replay_hook(step: ReplayStep) -> str:
    return f"replay:{step.value}"


class RecordingAdversary:
    """Passes decisions through from `inner` and keeps those that differ from honest behaviour."""

    def __init__(self, inner: QbaAdversary) -> None:
        self._inner = inner
        self._honest = HonestAdversary()
        self.decisions: dict[DecisionKey, Decision] = {}

    def sign(self, signer: int, triple: TripleId, honest: bytes | None) -> SignChoice | None:
        choice = self._inner.sign(signer, triple, honest)
        if choice != self._honest.sign(signer, triple, honest):
            self.decisions[("sign", signer, triple)] = choice
        return choice

    def forward(self, bob: int, triple: TripleId, received: bytes) -> ForwardChoice | None:
        choice = self._inner.forward(bob, triple, received)
        if choice != ForwardChoice():
            self.decisions[("forward", bob, triple)] = choice
        return choice

    def reveal(self, charlie: int, triple: TripleId) -> KeyChoice:
        choice = self._inner.reveal(charlie, triple)
        if choice is not KeyChoice.HONEST:
            self.decisions[("reveal", charlie, triple)] = choice
        return choice

    def announce(self, bob: int, triple: TripleId, verified: bool) -> bool:
        choice = self._inner.announce(bob, triple, verified)
        if choice != verified:
            self.decisions[("announce", bob, triple)] = choice
        return choice

    def reforge(self, member: int, triple: TripleId) -> bytes | None:
        choice = self._inner.reforge(member, triple)
        if choice is not None:
            self.decisions[("reforge", member, triple)] = choice
        return choice

    def replay(self, member: int, triple: TripleId, step: ReplayStep) -> bool:
        choice = self._inner.replay(member, triple, step)
        if choice:
            self.decisions[(replay_hook(step), member, triple)] = True
        return choice


class ScriptedAdversary(HonestAdversary):
    """Replays recorded deviations; every other decision is honest."""

    def __init__(self, script: Mapping[DecisionKey, Decision]) -> None:
        self._script = dict(script)

    def sign(self, signer: int, triple: TripleId, honest: bytes | None) -> SignChoice | None:
        key = ("sign", signer, triple)
        if key in self._script:
            choice = self._script[key]
            assert choice is None or isinstance(choice, SignChoice)
            return choice
        return super().sign(signer, triple, honest)

    def forward(self, bob: int, triple: TripleId, received: bytes) -> ForwardChoice | None:
        key = ("forward", bob, triple)
        if key in self._script:
            choice = self._script[key]
            assert choice is None or isinstance(choice, ForwardChoice)
            return choice
        return ForwardChoice()

    def reveal(self, charlie: int, triple: TripleId) -> KeyChoice:
        choice = self._script.get(("reveal", charlie, triple), KeyChoice.HONEST)
        assert isinstance(choice, KeyChoice)
        return choice

    def announce(self, bob: int, triple: TripleId, verified: bool) -> bool:
        choice = self._script.get(("announce", bob, triple), verified)
        assert isinstance(choice, bool)
        return choice

    def reforge(self, member: int, triple: TripleId) -> bytes | None:
        choice = self._script.get(("reforge", member, triple))
        assert choice is None or isinstance(choice, bytes)
        return choice

    def replay(self, member: int, triple: TripleId, step: ReplayStep) -> bool:
        return self._script.get((replay_hook(step), member, triple)) is True


@dataclass(frozen=True)
class Trial:
    """One adversarial run, fully determined: replaying it gives the same outputs."""

    mode: QbaMode
    committee: tuple[int, ...]
    f: int
    faulty: frozenset[int]
    leader_value: bytes
    script: Mapping[DecisionKey, Decision] = field(default_factory=dict)
    key_seed: int = 0


def run_trial(trial: Trial, *, polys: PolynomialSource, params: QdsParams) -> QbaOutcome:
    return run_qba(
        mode=trial.mode,
        committee=trial.committee,
        leader_value=trial.leader_value,
        f=trial.f,
        keys=SeededKeySupply(trial.key_seed),
        polys=polys,
        adversary=ScriptedAdversary(trial.script),
        faulty=trial.faulty,
        params=params,
    )


def violations(trial: Trial, outcome: QbaOutcome) -> list[str]:
    """Validity (honest leader → every honest member outputs its value) and consistency
    (no two honest members output different non-⊥ values)."""
    found = []
    leader = trial.committee[0]
    if leader not in trial.faulty:
        wrong = {m: v for m, v in outcome.outputs.items() if v != trial.leader_value}
        if wrong:
            found.append(f"validity: honest leader sent {trial.leader_value!r}, but {wrong}")
    decided = {v for v in outcome.outputs.values() if v is not None}
    if len(decided) > 1:
        found.append(f"consistency: honest members decided {dict(outcome.outputs)}")
    return found


def shrink(trial: Trial, fails: Callable[[Trial], bool]) -> Trial:
    """Greedy minimisation: drop faulty members, then single deviations, while the trial still fails."""
    current = trial
    progress = True
    while progress:
        progress = False
        for member in sorted(current.faulty):
            script = {k: v for k, v in current.script.items() if k[1] != member}
            candidate = replace(current, faulty=current.faulty - {member}, script=script)
            if fails(candidate):
                current, progress = candidate, True
        for key in list(current.script):
            script = {k: v for k, v in current.script.items() if k != key}
            candidate = replace(current, script=script)
            if fails(candidate):
                current, progress = candidate, True
    return current


def describe(trial: Trial, outcome: QbaOutcome, problems: Sequence[str]) -> str:
    """A trace a person can follow: setup, each deviation, the outputs, what broke."""
    lines = [
        f"mode={trial.mode.value} committee={list(trial.committee)} (leader {trial.committee[0]}) "
        f"f={trial.f} faulty={sorted(trial.faulty)} value={trial.leader_value!r}",
        f"{len(trial.script)} deviation(s):",
    ]
    for (hook, member, triple), choice in sorted(trial.script.items(), key=lambda kv: kv[0][2]):
        lines.append(f"  {hook:16s} by {member} in {triple}: {choice!r}")
    lines.append(f"outputs (honest): {dict(outcome.outputs)}")
    lines += [f"VIOLATION {p}" for p in problems]
    return "\n".join(lines)
