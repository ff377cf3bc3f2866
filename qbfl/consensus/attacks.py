"""Consensus attacks of DESIGN §7 (equivocate, wrongagg, oppose, silent) as a node's conduct per view."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from qbfl.consensus.effects import Broadcast, Effect, Send
from qbfl.ledger.block import ConsensusMessage, UpdateSubmission


class Conduct:
    """How a node behaves in one (round, view); this base class is the honest node (Alg. 3).

    The round state machine consults these hooks at every point where a faulty node could deviate;
    attacks override some of them. Only the hooks are attack-specific: all state changes stay in
    ConsensusNode.
    """

    name = "honest"

    def outgoing(self, effects: list[Effect]) -> list[Effect]:
        """Messages this node really sends (an honest node sends all)."""
        return effects

    def tamper_aggregate(self, update: bytes) -> bytes:
        """The aggregate a leader proposes (an honest leader proposes its own)."""
        return update

    def qba_adversary(self) -> object | None:
        """A qbfl.consensus.qba adversary driving this member's QBA messages (None: honest)."""
        return None

    def choose_vote(
        self,
        *,
        own: ConsensusMessage | None,
        output: ConsensusMessage | None,
        proposed: ConsensusMessage | None,
    ) -> ConsensusMessage | None:
        """Alg. 3 line 11: sign iff the QBA output equals the member's own message."""
        if output is not None and output == own:
            return output
        return None

    def builds_block(self) -> bool:
        """Whether a leader holding > Nc/2 votes packages and broadcasts the block (Alg. 3 line 5)."""
        return True


HONEST = Conduct()


class Equivocate(Conduct):
    """As leader, sends conflicting QDS-signed values to different triples; as relay, tampers.

    The QBA package's equivocating strategy decides what each triple sees; the leader's proposal
    message itself is the honest one, so only the QBA broadcast is attacked.
    """

    name = "equivocate"

    def __init__(self, rng: np.random.Generator) -> None:
        self._seed = int(rng.integers(2**32))

    def qba_adversary(self) -> object | None:
        from qbfl.consensus.agreement import equivocating_adversary

        return equivocating_adversary(seed=self._seed)


class WrongAggregate(Conduct):
    """As leader, proposes a tampered aggregate (its hash is what QBA broadcasts); as member,
    colludes: signs whatever QBA output it gets."""

    name = "wrongagg"

    def __init__(self, rng: np.random.Generator) -> None:
        self._shift = float(rng.uniform(0.05, 0.5))

    def tamper_aggregate(self, update: bytes) -> bytes:
        values = np.frombuffer(update, dtype="<f4").copy()
        values[: max(1, values.size // 4)] += np.float32(self._shift)
        return values.astype("<f4").tobytes()

    def choose_vote(
        self,
        *,
        own: ConsensusMessage | None,
        output: ConsensusMessage | None,
        proposed: ConsensusMessage | None,
    ) -> ConsensusMessage | None:
        return output if output is not None else proposed


class Oppose(Conduct):
    """As member, refuses to sign valid messages and signs invalid ones (§5.1 "opposing votes");
    as leader, never packages a block."""

    name = "oppose"

    def __init__(self, rng: np.random.Generator) -> None:
        del rng

    def choose_vote(
        self,
        *,
        own: ConsensusMessage | None,
        output: ConsensusMessage | None,
        proposed: ConsensusMessage | None,
    ) -> ConsensusMessage | None:
        for candidate in (output, proposed):
            if candidate is not None and candidate != own:
                return candidate
        return None

    def builds_block(self) -> bool:
        return False


class Silent(Conduct):
    """On the committee, sends nothing in this view: no proposal, QBA message, vote or block.

    Its own client update still goes out: DESIGN §7's consensus attacks are what a node does on the
    committee, and the paper's Fig. 4 adversary sends a (random) model update every round. A node
    that sends nothing at all is a crash: `qbfl-orchestrator perturb N kill|pause`.
    """

    name = "silent"

    def __init__(self, rng: np.random.Generator) -> None:
        del rng

    def outgoing(self, effects: list[Effect]) -> list[Effect]:
        return [
            e
            for e in effects
            if not isinstance(e, Send | Broadcast) or isinstance(e.message, UpdateSubmission)
        ]

    def choose_vote(
        self,
        *,
        own: ConsensusMessage | None,
        output: ConsensusMessage | None,
        proposed: ConsensusMessage | None,
    ) -> ConsensusMessage | None:
        return None

    def builds_block(self) -> bool:
        return False


CONSENSUS_ATTACKS: dict[str, Callable[[np.random.Generator], Conduct]] = {
    "equivocate": Equivocate,
    "wrongagg": WrongAggregate,
    "oppose": Oppose,
    "silent": Silent,
}


class ConductPolicy(Protocol):
    """Chooses a node's conduct for each (round, view)."""

    def conduct(self, node_id: int, round: int, view: int) -> Conduct: ...


class HonestPolicy:
    """Every view honest."""

    def conduct(self, node_id: int, round: int, view: int) -> Conduct:
        return HONEST


class ConsensusAttacker:
    """A malicious node's policy: one attack per (round, view), drawn from `attacks` by a generator
    seeded with (seed, node, round, view) — reproducible and independent of event order."""

    def __init__(self, attacks: Sequence[str], *, seed: int) -> None:
        names = tuple(attacks)
        if not names:
            raise ValueError("ConsensusAttacker needs at least one attack name")
        unknown = [n for n in names if n not in CONSENSUS_ATTACKS]
        if unknown:
            raise ValueError(
                f"unknown consensus attack(s) {unknown}; valid: {sorted(CONSENSUS_ATTACKS)}"
            )
        if seed < 0:
            raise ValueError("seed must be >= 0")
        self.attacks = names
        self._seed = seed

    def conduct(self, node_id: int, round: int, view: int) -> Conduct:
        rng = np.random.default_rng([self._seed, node_id, round, view])
        name = self.attacks[int(rng.integers(len(self.attacks)))]
        return CONSENSUS_ATTACKS[name](rng)


def get_consensus_attacker(spec: str, *, seed: int) -> ConsensusAttacker:
    """Parse "oppose", "wrongagg,silent" or "random" (all four) into a policy."""
    names = sorted(CONSENSUS_ATTACKS) if spec == "random" else [s for s in spec.split(",") if s]
    return ConsensusAttacker(names, seed=seed)
