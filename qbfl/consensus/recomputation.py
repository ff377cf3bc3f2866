"""Alg. 2 over a named input set, as the leader runs it and as every member re-runs it (DESIGN §5 step 3)."""

from __future__ import annotations

import numpy as np

from qbfl.aggregation import AggregationResult, aggregate_mismatch, get_aggregator
from qbfl.consensus.attacks import Conduct
from qbfl.consensus.chainview import ChainView
from qbfl.consensus.submissions import SubmissionPool
from qbfl.consensus.wire import Proposal
from qbfl.errors import QbflError
from qbfl.ledger.block import ConsensusMessage
from qbfl.ledger.signer import digest


class Recomputation:
    """The leader's proposal and a member's own message (Alg. 3 line 10) from one aggregation rule.

    Both sides aggregate with the chain stakes at the head and the last block's update as
    `previous`, so leader and members compute over the same numbers whatever view they are in.
    """

    def __init__(self, aggregator: str, *, f: int, min_inputs: int) -> None:
        self._aggregator = get_aggregator(aggregator)
        self.f = f
        # A leader may leave out at most f submissions (late, or censored); members refuse fewer.
        # The rule must also be able to aggregate that many at all (Aggregator.max_faults ≥ 0).
        floor = next((n for n in range(1, 1 << 16) if self._aggregator.max_faults(n) >= 0), 1)
        self.min_inputs = max(min_inputs, floor)

    def faults_for(self, n_inputs: int) -> int:
        """The f the rule uses over `n_inputs` present submissions: the task's f, capped at what the
        rule can tolerate with that many inputs (issue 10, finding 11). Leader and members compute
        over the same named inputs, so they use the same value."""
        return min(self.f, self._aggregator.max_faults(n_inputs))

    def aggregate(
        self, pool: SubmissionPool, inputs: tuple[int, ...], chain: ChainView
    ) -> tuple[np.ndarray, AggregationResult]:
        rows = pool.rows(inputs)
        stakes = chain.stakes
        result = self._aggregator.aggregate(
            rows,
            client_ids=inputs,
            stakes=np.array([stakes[c] for c in inputs], dtype=np.int64),
            f=self.faults_for(len(inputs)),
            previous=chain.previous_update(),
        )
        return rows, result

    def proposal(
        self, pool: SubmissionPool, chain: ChainView, *, round: int, view: int, conduct: Conduct
    ) -> Proposal | None:
        """The leader's Proposal over every held submission; None below min_inputs."""
        inputs = tuple(sorted(pool))
        if len(inputs) < self.min_inputs:
            return None
        _, result = self.aggregate(pool, inputs, chain)
        update = conduct.tamper_aggregate(result.update.astype("<f4").tobytes())
        message = ConsensusMessage(round, view, result.selected, digest(update))
        return Proposal(round, view, inputs, update, message)

    def own_message(
        self,
        proposal: Proposal | None,
        pool: SubmissionPool,
        chain: ChainView,
        *,
        round: int,
        view: int,
    ) -> ConsensusMessage | None:
        """Alg. 3 line 10 / DESIGN §5 step 3: recompute Alg. 2 over the leader's input set.

        None when there is no proposal, the input set is too small, or a named submission is not
        held here (an honest member never signs what it cannot check). Otherwise the hash is the
        leader's if its aggregate matches within aggregation.verify's tolerance, else our own.
        """
        if proposal is None:
            return None
        inputs = tuple(proposal.inputs)
        if (
            list(inputs) != sorted(set(inputs))
            or len(inputs) < self.min_inputs
            or not pool.holds_all(inputs)
        ):
            return None
        rows, own = self.aggregate(pool, inputs, chain)
        own_bytes = own.update.astype("<f4").tobytes()
        try:
            claimed = AggregationResult(
                np.frombuffer(proposal.update, dtype="<f4"), proposal.message.selected
            )
            reason = aggregate_mismatch(claimed, own, rows, client_ids=inputs)
        except (QbflError, ValueError, TypeError):
            reason = "malformed aggregate"
        update_hash = digest(proposal.update) if reason is None else digest(own_bytes)
        return ConsensusMessage(round, view, own.selected, update_hash)
