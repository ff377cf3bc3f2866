"""Alg. 3 as one node's transport-free state machine: events in, effects out, all state changes here."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from qbfl.aggregation import AggregationResult, aggregate_mismatch, get_aggregator
from qbfl.consensus.agreement import QbaSession, QbaSessionFactory
from qbfl.consensus.attacks import Conduct, ConductPolicy, HonestPolicy
from qbfl.consensus.chainview import ChainView, InvalidBlock
from qbfl.consensus.committee import Committee
from qbfl.consensus.effects import (
    Broadcast,
    CommitBlock,
    Effect,
    RoundCompleted,
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
from qbfl.consensus.wire import Proposal, QbaEnvelope, SyncRequest, SyncResponse, VoteMessage
from qbfl.errors import ForkDetected, QbflError, StaleRound
from qbfl.ledger.block import Block, ConsensusMessage, UpdateSubmission, check_update, make_block
from qbfl.ledger.encoding import EncodingError
from qbfl.ledger.genesis import GenesisBlock
from qbfl.ledger.signer import Signer, digest

MAX_SYNC_BLOCKS = 64


class InvalidMessage(QbflError):
    """A round message breaks the protocol (wrong sender or role, equivocation, wrong value)."""


@dataclass(frozen=True)
class RoundTimeouts:
    """Timers of one view, measured from the moment a node enters it (docs/consensus.md).

    collect_s: members accept submissions until then; the leader then aggregates.
    qba_round_s: length of one QBA multicast round (lock-step, synchronous model).
    deadline_s: no valid block by then → view change; None takes TaskSpec.round_timeout_s.
    """

    collect_s: float = 2.0
    qba_round_s: float = 1.0
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if not self.collect_s > 0 or not self.qba_round_s > 0:
            raise ValueError("collect_s and qba_round_s must be positive")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ValueError("deadline_s must be positive")


@dataclass
class _ViewState:
    """What one node knows about the (round, view) in progress; replaced on every view change."""

    round: int
    view: int
    committee: Committee
    conduct: Conduct
    phase: Phase
    qba: QbaSession | None = None
    qba_rounds_done: int = 0
    proposal: Proposal | None = None
    voted: ConsensusMessage | None = None
    votes: dict[int, VoteMessage] = field(default_factory=dict)
    block_built: bool = False


class ConsensusNode:
    """One node's Alg. 3 round: plain client, committee member or leader, decided per (round, view).

    Feed it events with `handle`; it returns effects for the shell (send, broadcast, set a timer,
    commit a block). Protocol violations raise typed errors and leave the state unchanged; stale
    messages raise StaleRound; messages of a later round or view are buffered (bounded).
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
        aggregator: str = "qbfl",
        relay_blocks: bool = True,
        max_buffered: int = 4096,
    ) -> None:
        if node_id not in genesis.public_keys:
            raise ValueError(f"node {node_id} is not in the genesis roster")
        if max_buffered < 0:
            raise ValueError("max_buffered must be >= 0")
        self.node_id = node_id
        self.chain = ChainView(genesis)
        self.task = genesis.task
        self.timeouts = timeouts or RoundTimeouts()
        self._deadline_s = self.timeouts.deadline_s or self.task.round_timeout_s
        self._key = key
        self._qba_factory = qba
        self._clock = clock
        self._policy: ConductPolicy = policy or HonestPolicy()
        self._aggregator = get_aggregator(aggregator)
        self._relay = relay_blocks
        self._buffer: deque[Event] = deque(maxlen=max_buffered)
        self._others = tuple(n for n in genesis.node_ids if n != node_id)
        f = self.task.f if self.task.f is not None else (4 * self.task.n_nodes) // 10
        self._f = f
        # A leader may leave out at most f submissions (late, or censored); members refuse fewer.
        self.min_inputs = max(self.task.n_nodes - f, 1)
        self.counters: Counter[str] = Counter()
        self._submissions: dict[int, UpdateSubmission] = {}
        self._own_submission: UpdateSubmission | None = None
        self._round_started_at = clock()
        self._views_failed = 0
        self._sync_asked_at = -1
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

    def _is_current(self, event: Event, round: int, view: int | None) -> bool:
        """True for the (round, view) in progress; buffers later ones; raises StaleRound for past ones."""
        here = (self.round, self.view)
        there = (round, self.view if view is None else view)
        if there < here:
            self.counters["stale"] += 1
            raise StaleRound(f"message for round {round} view {view}; node is at {here}")
        if there > here:
            if len(self._buffer) == self._buffer.maxlen:
                self.counters["buffer_overflow"] += 1
            self._buffer.append(event)
            self.counters["buffered"] += 1
            return False
        return True

    # --- rounds and views -----------------------------------------------------------------------

    def _new_view_state(self, view: int) -> _ViewState:
        committee = self.chain.committee(view)
        conduct = self._policy.conduct(self.node_id, self.round, view)
        member = self.node_id in committee.members
        state = _ViewState(
            round=self.round,
            view=view,
            committee=committee,
            conduct=conduct,
            phase=Phase.COLLECTING_UPDATES if member else Phase.WAITING_FOR_BLOCK,
        )
        if member:
            state.qba = self._qba_factory(
                node_id=self.node_id,
                committee=committee.members,
                round=self.round,
                view=view,
                adversary=conduct.qba_adversary(),
            )
        return state

    def _view_timers(self) -> list[Effect]:
        r, v = self.round, self.view
        effects: list[Effect] = [SetTimer(TimerKind.DEADLINE, r, v, self._deadline_s)]
        if self.node_id in self.committee.members:
            effects.append(SetTimer(TimerKind.COLLECT, r, v, self.timeouts.collect_s))
        return effects

    def _enter_view(self, view: int) -> list[Effect]:
        self._state = self._new_view_state(view)
        effects = self._view_timers()
        if self._own_submission is not None:
            effects += self._submit(self._own_submission)
        return effects + self._replay_buffer()

    def _replay_buffer(self) -> list[Effect]:
        pending = list(self._buffer)
        self._buffer.clear()
        effects: list[Effect] = []
        for event in pending:
            try:
                effects += self._dispatch(event)
            except ForkDetected:
                raise
            except QbflError as exc:
                self.counters[f"rejected:{type(exc).__name__}"] += 1
        return effects

    def _on_timer(self, event: TimerFired) -> list[Effect]:
        if (event.round, event.view) != (self.round, self.view):
            return []  # a timer of a view that is over: nothing to cancel in the shell
        if event.kind is TimerKind.COLLECT:
            return self._on_collect_timeout()
        if event.kind is TimerKind.QBA_ROUND:
            return self._on_qba_round_end()
        return self._on_deadline()

    def _on_deadline(self) -> list[Effect]:
        # §4.5: no valid block in time → penalise this committee (derived from the chain by every
        # node once a block records a later view) and draw the next committee with view + 1.
        self._views_failed += 1
        self.counters["view_changes"] += 1
        old = self.view
        return [ViewChanged(self.round, old, old + 1), *self._enter_view(old + 1)]

    # --- clients: local update → signed submission to the committee ------------------------------

    def _on_local_update(self, event: LocalUpdateReady) -> list[Effect]:
        if not self._is_current(event, event.round, None):
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
        if not self._is_current(SubmissionReceived(sender, sub), sub.round, None):
            return []
        if sub.base_block_hash != self.chain.head_hash:
            raise StaleRound(f"update from {sender} was trained on another block")
        key = self.chain.genesis.public_keys.get(sub.client_id)
        if key is None:
            raise InvalidMessage(f"client {sub.client_id} is not in the roster")
        held = self._submissions.get(sub.client_id)
        if held is not None:
            if held != sub:
                raise InvalidMessage(f"client {sub.client_id} sent two different updates")
            return []
        sub.verify(key, expected_param_count=self.chain.genesis.param_count)
        self._submissions[sub.client_id] = sub
        state = self._state
        everyone = len(self._submissions) == self.task.n_nodes
        if everyone and state.committee.leader == self.node_id and state.proposal is None:
            return self._propose()  # all N arrived: no need to wait for the collection timer
        return []

    # --- leader: aggregate (Alg. 2) and broadcast the consensus message via QBA -----------------

    def _aggregate(self, inputs: tuple[int, ...]) -> tuple[np.ndarray, AggregationResult]:
        rows = np.stack(
            [np.frombuffer(self._submissions[c].update, dtype="<f4") for c in inputs]
        ).astype(np.float32)
        stakes = self.chain.stakes
        result = self._aggregator.aggregate(
            rows,
            client_ids=inputs,
            stakes=np.array([stakes[c] for c in inputs], dtype=np.int64),
            f=self._f,
            previous=self.chain.previous_update(),
        )
        return rows, result

    def _propose(self) -> list[Effect]:
        state = self._state
        inputs = tuple(sorted(self._submissions))
        if len(inputs) < self.min_inputs:
            self.counters["too_few_inputs"] += 1
            return []
        _, result = self._aggregate(inputs)
        update = state.conduct.tamper_aggregate(result.update.astype("<f4").tobytes())
        message = ConsensusMessage(self.round, self.view, result.selected, digest(update))
        state.proposal = Proposal(self.round, self.view, inputs, update, message)
        state.phase = Phase.QBA
        effects: list[Effect] = [
            Send(m, state.proposal) for m in state.committee.members if m != self.node_id
        ]
        assert state.qba is not None  # the leader is a member
        return effects + self._qba_out(state.qba.start(message.encode()))

    def _on_collect_timeout(self) -> list[Effect]:
        state = self._state
        effects: list[Effect] = []
        if state.committee.leader == self.node_id and state.proposal is None:
            effects += self._propose()
        if state.phase is Phase.COLLECTING_UPDATES:
            state.phase = Phase.QBA
        return [
            *effects,
            SetTimer(TimerKind.QBA_ROUND, self.round, self.view, self.timeouts.qba_round_s),
        ]

    # --- members: QBA, own message, vote ---------------------------------------------------------

    def _qba_out(self, outgoing: list[tuple[int, object]]) -> list[Effect]:
        envelope = [(to, QbaEnvelope(self.round, self.view, payload)) for to, payload in outgoing]
        return [Send(to, env) for to, env in envelope]

    def _on_proposal(self, event: ProposalReceived) -> list[Effect]:
        proposal = event.proposal
        if not self._is_current(event, proposal.round, proposal.view):
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
        return []

    def _on_qba(self, event: QbaMessageReceived) -> list[Effect]:
        env = event.envelope
        if not self._is_current(event, env.round, env.view):
            return []
        state = self._state
        if state.qba is None or event.sender not in state.committee.members:
            raise InvalidMessage("QBA message outside the committee")
        return self._qba_out(state.qba.on_message(event.sender, env.payload))

    def _on_qba_round_end(self) -> list[Effect]:
        state = self._state
        if state.qba is None or state.qba_rounds_done >= state.qba.rounds:
            return []
        state.qba_rounds_done += 1
        effects = self._qba_out(state.qba.end_round(state.qba_rounds_done))
        if state.qba_rounds_done < state.qba.rounds:
            effects.append(
                SetTimer(TimerKind.QBA_ROUND, self.round, self.view, self.timeouts.qba_round_s)
            )
            return effects
        return effects + self._decide()

    def own_message(self) -> ConsensusMessage | None:
        """Alg. 3 line 10 / DESIGN §5 step 3: recompute Alg. 2 over the leader's input set.

        None when there is no proposal, the input set is too small, or a named submission is not
        held here (an honest member never signs what it cannot check). Otherwise the hash is the
        leader's if its aggregate matches within aggregation.verify's tolerance, else our own.
        """
        proposal = self._state.proposal
        if proposal is None:
            return None
        inputs = tuple(proposal.inputs)
        if (
            list(inputs) != sorted(set(inputs))
            or len(inputs) < self.min_inputs
            or any(c not in self._submissions for c in inputs)
        ):
            return None
        rows, own = self._aggregate(inputs)
        own_bytes = own.update.astype("<f4").tobytes()
        try:
            claimed = AggregationResult(
                np.frombuffer(proposal.update, dtype="<f4"), proposal.message.selected
            )
            reason = aggregate_mismatch(claimed, own, rows, client_ids=inputs)
        except (QbflError, ValueError, TypeError):
            reason = "malformed aggregate"
        update_hash = digest(proposal.update) if reason is None else digest(own_bytes)
        return ConsensusMessage(self.round, self.view, own.selected, update_hash)

    def _decide(self) -> list[Effect]:
        state = self._state
        assert state.qba is not None
        raw = state.qba.output()
        output: ConsensusMessage | None = None
        if raw is not None:
            try:
                output = ConsensusMessage.decode(raw)
            except (EncodingError, ValueError, TypeError):
                output = None
        if output is not None and (output.round, output.view) != (self.round, self.view):
            output = None
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
        if not self._is_current(event, vm.round, vm.view):
            return []
        state = self._state
        if state.committee.leader != self.node_id:
            raise InvalidMessage("vote sent to a node that does not lead this view")
        if event.sender != vm.vote.member_id or vm.vote.member_id not in state.committee.members:
            raise InvalidMessage(f"vote from node {event.sender}, not a committee member")
        if state.proposal is None or vm.message != state.proposal.message:
            raise InvalidMessage(f"vote from {event.sender} is for another message")
        held = state.votes.get(vm.vote.member_id)
        if held is not None:
            if held != vm:
                raise InvalidMessage(f"member {event.sender} voted twice")
            return []
        vm.message.verify_vote(vm.vote, self.chain.genesis.public_keys[vm.vote.member_id])
        state.votes[vm.vote.member_id] = vm
        if 2 * len(state.votes) <= self.task.committee_size or state.block_built:
            return []
        if not state.conduct.builds_block():
            return []
        state.block_built = True
        proposal = state.proposal
        block = make_block(
            height=self.round,
            round=self.round,
            view=self.view,
            prev_hash=self.chain.head_hash,
            committee=state.committee.members,
            selected=proposal.message.selected,
            update=proposal.update,
            votes=tuple(v.vote for v in state.votes.values()),
        )
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
            raise ForkDetected(
                f"node {self.node_id}: a second valid block at height {block.height} "
                f"(view {block.view}) from node {sender}"
            )
        if block.height > height + 1:
            self._is_current(BlockReceived(sender, block), block.round, None)  # buffers it
            return self._ask_sync(sender)
        self.chain.verify(block)
        return self._commit(block, relay=relay)

    def _commit(self, block: Block, *, relay: bool) -> list[Effect]:
        self.chain.apply(block)
        now = self._clock()
        done = RoundCompleted(
            round=block.round,
            view=block.view,
            height=block.height,
            block_hash=block.block_hash,
            started_at=self._round_started_at,
            elapsed_s=now - self._round_started_at,
            view_changes=self._views_failed,
        )
        self._round_started_at = now
        self._views_failed = 0
        self._submissions = {}
        self._own_submission = None
        self._state.phase = Phase.COMMITTED
        effects: list[Effect] = [CommitBlock(block), done]
        if relay:
            # Every honest node forwards a block it accepted once, so a block that reached one honest
            # node reaches all within one more delay even if the leader sent it to only a few.
            effects.append(Broadcast(block))
        return effects + self._enter_view(0)

    def _ask_sync(self, peer: int) -> list[Effect]:
        if self._sync_asked_at == self.chain.height or peer == self.node_id:
            return []
        self._sync_asked_at = self.chain.height
        return [Send(peer, SyncRequest(self.chain.height + 1))]

    def _on_sync_request(self, event: SyncRequested) -> list[Effect]:
        start = event.request.from_height
        if start < 1:
            raise InvalidMessage("sync starts at height 1")
        stop = min(self.chain.height, start + MAX_SYNC_BLOCKS - 1)
        blocks = tuple(self.chain.block_at(h) for h in range(start, stop + 1))
        return [Send(event.sender, SyncResponse(blocks))] if blocks else []

    def _on_sync_blocks(self, event: SyncBlocksReceived) -> list[Effect]:
        effects: list[Effect] = []
        for block in sorted(event.response.blocks, key=lambda b: b.height):
            if block.height > self.chain.height + 1:
                break
            effects += self._on_block(event.sender, block, relay=False)
        return effects


__all__ = ["ConsensusNode", "InvalidBlock", "InvalidMessage", "RoundTimeouts"]
