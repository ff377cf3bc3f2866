"""Alg. 3 as one node's transport-free state machine: events in, effects out, all state changes here."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from qbfl.consensus.agreement import QbaSessionFactory
from qbfl.consensus.attacks import ConductPolicy, HonestPolicy
from qbfl.consensus.buffer import FutureBuffer, check_early
from qbfl.consensus.catchup import SyncTracker, sync_blocks
from qbfl.consensus.chainview import BlockFork, ChainView, InvalidBlock
from qbfl.consensus.committee import Committee
from qbfl.consensus.effects import (
    Broadcast,
    CommitBlock,
    Effect,
    ForkObserved,
    Send,
    SetTimer,
    ViewChanged,
)
from qbfl.consensus.events import (
    BlockReceived,
    Event,
    LocalUpdateReady,
    Phase,
    ProposalReceived,
    QbaMessageReceived,
    SubmissionReceived,
    SyncBlocksReceived,
    SyncRequested,
    TimerFired,
    TimerKind,
    VoteReceived,
)
from qbfl.consensus.recomputation import Recomputation
from qbfl.consensus.stakes import MAX_VIEWS_PER_ROUND
from qbfl.consensus.submissions import SubmissionPool
from qbfl.consensus.viewstate import RoundMetrics, RoundTimeouts, ViewState
from qbfl.consensus.votes import qba_output_message
from qbfl.consensus.wire import (
    InvalidMessage,
    QbaEnvelope,
    SyncRequest,
    SyncResponse,
    VoteMessage,
)
from qbfl.errors import QbflError, StaleRound
from qbfl.ledger.block import Block, ConsensusMessage, UpdateSubmission, check_update
from qbfl.ledger.genesis import GenesisBlock
from qbfl.ledger.signer import Signer


class ConsensusNode:
    """One node's Alg. 3 round: plain client, committee member or leader, decided per (round, view).

    Feed it events with `handle`; it returns effects for the shell (send, broadcast, set a timer,
    commit a block). Protocol violations raise typed errors and leave the state unchanged; stale
    messages raise StaleRound; messages of a later round or view are buffered (bounded).

    The data of a round lives in small components (SubmissionPool, VoteTally, FutureBuffer,
    SyncTracker, ViewState); only this class decides when they change, so every transition of
    the round can be read here, in the order of Alg. 3.
    """

    def __init__(
        self,
        node_id: int,
        key: Signer,
        genesis: GenesisBlock,
        *,
        qba: QbaSessionFactory,
        clock: Callable[[], float],
        timeouts: RoundTimeouts | None = None,
        policy: ConductPolicy | None = None,
        aggregator: str | None = None,
        relay_blocks: bool = True,
        relay_fanout: int | None = None,
        max_buffered: int = 4096,
    ) -> None:
        if node_id not in genesis.public_keys:
            raise ValueError(f"node {node_id} is not in the genesis roster")
        self.node_id = node_id
        self.chain = ChainView(genesis)
        self.task = genesis.task
        self.timeouts = timeouts or RoundTimeouts()
        self._key = key
        self._qba_factory = qba
        self._clock = clock
        self._policy: ConductPolicy = policy or HonestPolicy()
        self._relay = relay_blocks
        if relay_fanout is not None and relay_fanout < 1:
            raise ValueError("relay_fanout must be >= 1 (or None: every peer)")
        self._fanout = relay_fanout
        self.counters: Counter[str] = Counter()
        self._buffer = FutureBuffer(max_buffered, self.counters)
        f = self.task.f if self.task.f is not None else (4 * self.task.n_nodes) // 10
        # the genesis names the rule; a caller may override it only in tests and simulations
        rule = aggregator if aggregator is not None else self.task.aggregator
        self._recompute = Recomputation(rule, f=f, min_inputs=max(self.task.n_nodes - f, 1))
        self.min_inputs = self._recompute.min_inputs
        self._submissions = SubmissionPool(genesis)
        self._own_submission: UpdateSubmission | None = None
        self._sync = SyncTracker()
        # (held, rival) pairs of valid blocks at one height seen here: evidence for the operator
        self.forks: list[tuple[Block, Block]] = []
        self.last_error: str | None = None  # the last failure a shell should log (no exception)
        self._metrics = RoundMetrics(clock())
        self._state = self._new_view_state(0)

    # --- public surface -------------------------------------------------------------------------

    @property
    def round(self) -> int:
        return self.chain.height + 1

    @property
    def view(self) -> int:
        return self._state.view

    @property
    def phase(self) -> Phase:
        return self._state.phase

    @property
    def committee(self) -> Committee:
        return self._state.committee

    @property
    def voted(self) -> ConsensusMessage | None:
        return self._state.voted

    def start(self) -> list[Effect]:
        """Enter view 0 of the first round: set its timers."""
        return self._filter(self._view_timers())

    def handle(self, event: Event) -> list[Effect]:
        """The one place where round state changes (CometBFT's receiveRoutine)."""
        effects = self._dispatch(event)
        return self._filter(effects)

    def catch_up(self, blocks: tuple[Block, ...]) -> list[Effect]:
        """Verify and apply blocks fetched from a peer, in order (a node that fell behind)."""
        return self.handle(SyncBlocksReceived(self.node_id, SyncResponse(blocks)))

    def own_message(self) -> ConsensusMessage | None:
        """This member's own message for the current proposal (Alg. 3 line 10); see Recomputation."""
        return self._recompute.own_message(
            self._state.proposal, self._submissions, self.chain, round=self.round, view=self.view
        )

    # --- dispatch -------------------------------------------------------------------------------

    def _dispatch(self, event: Event) -> list[Effect]:
        if isinstance(event, TimerFired):
            return self._on_timer(event)
        if isinstance(event, LocalUpdateReady):
            return self._on_local_update(event)
        if isinstance(event, SubmissionReceived):
            return self._on_submission(event.sender, event.submission)
        if isinstance(event, ProposalReceived):
            return self._on_proposal(event)
        if isinstance(event, QbaMessageReceived):
            return self._on_qba(event)
        if isinstance(event, VoteReceived):
            return self._on_vote(event)
        if isinstance(event, BlockReceived):
            return self._on_block(event.sender, event.block, relay=self._relay)
        if isinstance(event, SyncRequested):
            return self._on_sync_request(event)
        if isinstance(event, SyncBlocksReceived):
            return self._on_sync_blocks(event)
        raise TypeError(f"not a consensus event: {type(event).__name__}")

    def _filter(self, effects: list[Effect]) -> list[Effect]:
        return self._state.conduct.outgoing(effects)

    def _is_current(self, sender: int, event: Event, round: int, view: int | None) -> bool:
        """True for the (round, view) in progress; buffers later ones; raises StaleRound for past ones.

        A later message is buffered only if an honest peer could have sent it now (buffer.py:
        sender on the roster and in the role the message needs, within the view and round windows,
        an update of the task's size); otherwise it raises TooEarly / InvalidMessage / InvalidUpdate
        and nothing is held.
        """
        here = (self.round, self.view)
        there = (round, self.view if view is None else view)
        if there < here:
            self.counters["stale"] += 1
            raise StaleRound(f"message for round {round} view {view}; node is at {here}")
        if there > here:
            check_early(
                event,
                sender=sender,
                me=self.node_id,
                here=here,
                there=there,
                roster=self.chain.genesis.public_keys,
                committee_at=self.chain.committee,
                update_bytes=4 * self.chain.genesis.param_count,
            )
            self._buffer.add(sender, event)
            return False
        return True

    # --- rounds and views -----------------------------------------------------------------------

    def _new_view_state(self, view: int) -> ViewState:
        return ViewState.open(
            node_id=self.node_id,
            chain=self.chain,
            view=view,
            policy=self._policy,
            qba=self._qba_factory,
        )

    def _view_timers(self) -> list[Effect]:
        r, v = self.round, self.view
        deadline = self.timeouts.deadline(v, self.task.round_timeout_s)
        effects: list[Effect] = [SetTimer(TimerKind.DEADLINE, r, v, deadline)]
        if self.node_id in self.committee.members:
            effects.append(SetTimer(TimerKind.COLLECT, r, v, self.timeouts.collect(v)))
        return effects

    def _enter_view(self, view: int) -> list[Effect]:
        self._state = self._new_view_state(view)
        effects = self._view_timers()
        if self._own_submission is not None:
            effects += self._submit(self._own_submission)
        return effects + self._replay_buffer()

    def _replay_buffer(self) -> list[Effect]:
        effects: list[Effect] = []
        for event in self._buffer.take_all():
            try:
                effects += self._dispatch(event)
            except QbflError as exc:
                effects += self._rejected_after_progress(exc)
        return effects

    def _rejected_after_progress(self, exc: QbflError) -> list[Effect]:
        """An error after this event already changed the state (a block was applied before a
        buffered or synced one failed): raising now would hide the effects of what was applied
        and claim that nothing changed, so count it, keep any fork evidence, and go on."""
        self.counters[f"rejected:{type(exc).__name__}"] += 1
        if isinstance(exc, BlockFork):
            self.forks.append((exc.held, exc.rival))
            return [ForkObserved(exc.held, exc.rival)]
        return []

    def _on_timer(self, event: TimerFired) -> list[Effect]:
        if (event.round, event.view) != (self.round, self.view):
            return []  # a timer of a view that is over: nothing to cancel in the shell
        if event.kind is TimerKind.COLLECT:
            return self._on_collect_timeout()
        if event.kind is TimerKind.QBA_ROUND:
            return self._on_qba_round_end(event.seq)
        return self._on_deadline()

    def _on_deadline(self) -> list[Effect]:
        # §4.5: no valid block in time → penalise this committee (derived from the chain by every
        # node once a block records a later view) and draw the next committee with view + 1.
        self._sync.timed_out()
        old = self.view
        if old >= MAX_VIEWS_PER_ROUND:
            # No block may claim a later view (chain.py): stay in the last one and wait for a
            # block or a catch-up instead of drawing a committee no verifier would accept.
            self.counters["view_cap_reached"] += 1
            deadline = self.timeouts.deadline(old, self.task.round_timeout_s)
            return [SetTimer(TimerKind.DEADLINE, self.round, old, deadline)]
        self._metrics.views_failed += 1
        self.counters["view_changes"] += 1
        return [ViewChanged(self.round, old, old + 1), *self._enter_view(old + 1)]

    # --- clients: local update → signed submission to the committee ------------------------------

    def _on_local_update(self, event: LocalUpdateReady) -> list[Effect]:
        if not self._is_current(self.node_id, event, event.round, None):
            return []
        if self._own_submission is not None:
            raise InvalidMessage(f"node {self.node_id} already submitted for round {self.round}")
        check_update(event.update, self.chain.genesis.param_count)
        submission = UpdateSubmission(
            round=self.round,
            client_id=self.node_id,
            update=event.update,
            base_block_hash=self.chain.head_hash,
        ).signed(self._key)
        self._own_submission = submission
        return self._submit(submission)

    def _submit(self, submission: UpdateSubmission) -> list[Effect]:
        effects: list[Effect] = []
        for member in self.committee.members:
            if member == self.node_id:
                effects += self._on_submission(self.node_id, submission)
            else:
                effects.append(Send(member, submission))
        return effects

    def _on_submission(self, sender: int, sub: UpdateSubmission) -> list[Effect]:
        if sub.client_id != sender:
            raise InvalidMessage(f"node {sender} sent an update signed as client {sub.client_id}")
        if not self._is_current(sender, SubmissionReceived(sender, sub), sub.round, None):
            return []
        if not self._submissions.admit(sub, head_hash=self.chain.head_hash):
            return []
        state = self._state
        everyone = len(self._submissions) == self.task.n_nodes
        if everyone and state.committee.leader == self.node_id and state.proposal is None:
            return self._propose()  # all N arrived: no need to wait for the collection timer
        if state.proposal is not None and sub.client_id in state.proposal.inputs:
            return self._close_ready_qba_rounds()  # the last named input may complete a member
        return []

    # --- leader: aggregate (Alg. 2) and broadcast the consensus message via QBA -----------------

    def _propose(self) -> list[Effect]:
        state = self._state
        proposal = self._recompute.proposal(
            self._submissions, self.chain, round=self.round, view=self.view, conduct=state.conduct
        )
        if proposal is None:
            self.counters["too_few_inputs"] += 1
            return []
        assert state.qba is not None  # the leader is a member
        try:
            # QBA first: without key material (a QKD link down or eavesdropped) the leader cannot
            # sign, proposes nothing, and the view changes (DESIGN §6), with the state unchanged
            signatures = state.qba.start(proposal.message.encode())
        except QbflError as exc:
            self.counters[f"qba_start_failed:{type(exc).__name__}"] += 1
            self.last_error = f"round {self.round} view {self.view}: QBA could not start: {exc}"
            return []
        state.proposal = proposal
        state.phase = Phase.QBA
        effects: list[Effect] = [
            Send(m, proposal) for m in state.committee.members if m != self.node_id
        ]
        effects += self._qba_out(signatures)
        return effects + self._close_ready_qba_rounds()

    def _on_collect_timeout(self) -> list[Effect]:
        state = self._state
        effects: list[Effect] = []
        if state.committee.leader == self.node_id and state.proposal is None:
            effects += self._propose()
        if state.phase is Phase.COLLECTING_UPDATES:
            state.phase = Phase.QBA
        return [*effects, self._qba_timer()]

    def _qba_timer(self) -> SetTimer:
        """The upper bound of the next QBA multicast round (lock-step), tagged with its number."""
        state = self._state
        return SetTimer(
            TimerKind.QBA_ROUND,
            self.round,
            self.view,
            self.timeouts.qba_round(self.view),
            seq=state.qba_rounds_done + 1,
        )

    def _qba_ready(self) -> bool:
        """Event-driven end of a QBA round: every QBA message this member expects has arrived, and
        it holds the proposal and every submission the proposal names (so its own message can be
        computed). Lock-step keeps its meaning: a round closes early only when nothing it waits
        for is missing, so no member is excluded for keys that were merely slow; otherwise the
        round's timer closes it (docs/consensus.md, "Progress on events")."""
        state = self._state
        complete = getattr(state.qba, "complete", None)
        proposal = state.proposal
        if complete is None or proposal is None or not complete():
            return False
        return state.committee.leader == self.node_id or self._submissions.holds_all(
            proposal.inputs
        )

    def _close_ready_qba_rounds(self) -> list[Effect]:
        effects: list[Effect] = []
        state = self._state
        while state.qba is not None and state.qba_rounds_done < state.qba.rounds:
            if not self._qba_ready():
                break
            self.counters["qba_rounds_closed_early"] += 1
            effects += self._on_qba_round_end(state.qba_rounds_done + 1)
        return effects

    # --- members: QBA, own message, vote ---------------------------------------------------------

    def _qba_out(self, outgoing: list[tuple[int, object]]) -> list[Effect]:
        return [Send(to, QbaEnvelope(self.round, self.view, payload)) for to, payload in outgoing]

    def _on_proposal(self, event: ProposalReceived) -> list[Effect]:
        proposal = event.proposal
        if not self._is_current(event.sender, event, proposal.round, proposal.view):
            return []
        state = self._state
        if event.sender != state.committee.leader:
            raise InvalidMessage(f"node {event.sender} is not the leader of this view")
        if self.node_id not in state.committee.members:
            raise InvalidMessage("proposal sent to a node outside the committee")
        if state.proposal is not None:
            if state.proposal != proposal:
                self.counters["leader_equivocated"] += 1
                raise InvalidMessage("the leader sent two different proposals; keeping the first")
            return []
        state.proposal = proposal
        return self._close_ready_qba_rounds()

    def _on_qba(self, event: QbaMessageReceived) -> list[Effect]:
        env = event.envelope
        if not self._is_current(event.sender, event, env.round, env.view):
            return []
        state = self._state
        if state.qba is None or event.sender not in state.committee.members:
            raise InvalidMessage("QBA message outside the committee")
        effects = self._qba_out(state.qba.on_message(event.sender, env.payload))
        return effects + self._close_ready_qba_rounds()

    def _on_qba_round_end(self, seq: int = 0) -> list[Effect]:
        """End multicast round `seq` (0: the current one); a round already closed is ignored."""
        state = self._state
        if state.qba is None or state.qba_rounds_done >= state.qba.rounds:
            return []
        if seq and seq != state.qba_rounds_done + 1:
            return []  # the timer of a round its messages already closed
        state.qba_rounds_done += 1
        effects = self._qba_out(state.qba.end_round(state.qba_rounds_done))
        if state.qba_rounds_done < state.qba.rounds:
            effects.append(self._qba_timer())
            return effects
        return effects + self._decide()

    def _decide(self) -> list[Effect]:
        state = self._state
        assert state.qba is not None
        output = qba_output_message(state.qba.output(), round=self.round, view=self.view)
        proposed = state.proposal.message if state.proposal is not None else None
        chosen = state.conduct.choose_vote(own=self.own_message(), output=output, proposed=proposed)
        state.phase = Phase.VOTING
        if chosen is None:
            self.counters["refused_to_sign"] += 1
            return []
        state.voted = chosen
        vote = VoteMessage(self.round, self.view, chosen, chosen.sign_vote(self.node_id, self._key))
        if state.committee.leader == self.node_id:
            return self._on_vote(VoteReceived(self.node_id, vote))
        return [Send(state.committee.leader, vote)]

    # --- leader: gather > Nc/2 votes, package and broadcast the block ----------------------------

    def _on_vote(self, event: VoteReceived) -> list[Effect]:
        vm = event.vote
        if not self._is_current(event.sender, event, vm.round, vm.view):
            return []
        state = self._state
        if state.committee.leader != self.node_id:
            raise InvalidMessage("vote sent to a node that does not lead this view")
        proposed = state.proposal.message if state.proposal is not None else None
        if not state.votes.add(event.sender, vm, proposed=proposed):
            return []
        if not state.votes.has_majority or state.block_built:
            return []
        if not state.conduct.builds_block():
            return []
        assert state.proposal is not None  # a counted vote is on the proposal's message
        state.block_built = True
        block = state.votes.package(state.proposal, prev_hash=self.chain.head_hash)
        effects: list[Effect] = [Broadcast(block)]
        return effects + self._on_block(self.node_id, block, relay=False)

    # --- every node: verify and apply blocks; sync --------------------------------------------

    def _on_block(self, sender: int, block: Block, *, relay: bool) -> list[Effect]:
        height = self.chain.height
        if block.height <= height:
            if self.chain.block_at(block.height).block_hash == block.block_hash:
                self.counters["duplicate_block"] += 1
                return []
            self.chain.verify(block, height=block.height)  # raises if it is simply invalid
            raise BlockFork(
                self.chain.block_at(block.height), block, f"node {self.node_id}, from {sender}"
            )
        if block.height > height + 1:
            # A peer is ahead: fetch the gap from it; hold the block itself only if it is the next
            # but one (further blocks come with the sync answer anyway).
            effects = self._ask_sync(sender)
            if block.height == height + 2:
                self._is_current(sender, BlockReceived(sender, block), block.round, None)
            else:
                self.counters["ahead_not_buffered"] += 1
            return effects
        self.chain.verify(block)
        return self._commit(block, relay=relay)

    def _commit(self, block: Block, *, relay: bool) -> list[Effect]:
        self.chain.apply(block)
        done = self._metrics.completed(block, self._clock())
        self._submissions.clear()
        self._own_submission = None
        self._state.phase = Phase.COMMITTED
        effects: list[Effect] = [CommitBlock(block), done]
        if relay:
            # Every honest node forwards a block it accepted once, so a block that reached one honest
            # node reaches all within one more delay even if the leader sent it to only a few. With
            # a fanout, to that many peers drawn from the block hash and this node's id (gossip:
            # O(N·fanout) messages instead of O(N²); catch-up covers any node it misses).
            if self._fanout is None:
                effects.append(Broadcast(block))
            else:
                effects += [Send(peer, block) for peer in self._relay_peers(block)]
        return effects + self._enter_view(0)

    def _relay_peers(self, block: Block) -> list[int]:
        assert self._fanout is not None
        others = [i for i in self.chain.genesis.node_ids if i not in (self.node_id, block.leader)]
        rng = random.Random(block.block_hash + self.node_id.to_bytes(8, "big"))
        return rng.sample(others, min(self._fanout, len(others)))

    def _ask_sync(self, peer: int) -> list[Effect]:
        if peer == self.node_id or not self._sync.should_ask(height=self.chain.height, peer=peer):
            return []
        return [Send(peer, SyncRequest(self.chain.height + 1))]

    def _on_sync_request(self, event: SyncRequested) -> list[Effect]:
        blocks = sync_blocks(self.chain, event.request.from_height)
        return [Send(event.sender, SyncResponse(blocks))] if blocks else []

    def _on_sync_blocks(self, event: SyncBlocksReceived) -> list[Effect]:
        effects: list[Effect] = []
        start = self.chain.height
        for block in sorted(event.response.blocks, key=lambda b: b.height):
            if block.height > self.chain.height + 1:
                break
            try:
                effects += self._on_block(event.sender, block, relay=False)
            except QbflError as exc:
                if self.chain.height == start:
                    raise  # nothing applied: reject the response as a whole
                return effects + self._rejected_after_progress(exc)
        return effects


__all__ = ["ConsensusNode", "InvalidBlock", "InvalidMessage", "RoundTimeouts"]
