"""Invalid round messages are rejected with the right error type and leave the node's state unchanged."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from qbfl.consensus.buffer import TooEarly
from qbfl.consensus.chainview import BlockFork
from qbfl.consensus.effects import CommitBlock, ForkObserved, Send
from qbfl.consensus.events import (
    BlockReceived,
    Event,
    LocalUpdateReady,
    ProposalReceived,
    SubmissionReceived,
    SyncBlocksReceived,
    TimerFired,
    TimerKind,
    VoteReceived,
)
from qbfl.consensus.inmemory import InMemoryNetwork, synthetic_genesis
from qbfl.consensus.round import ConsensusNode, InvalidMessage
from qbfl.consensus.wire import Proposal, SyncRequest, SyncResponse, VoteMessage
from qbfl.crypto.signing import SigningKey
from qbfl.errors import ForkDetected, InvalidSignature, InvalidUpdate, QbflError, StaleRound
from qbfl.ledger.block import Block, ConsensusMessage, UpdateSubmission, make_block
from qbfl.ledger.chain import InvalidBlock

N, P = 7, 8


class EchoQba:
    """Leader's value to every member (the round logic is under test here, not QBA)."""

    rounds = 1

    def __init__(
        self, *, node_id: int, committee: Sequence[int], round: int, view: int, adversary: object
    ) -> None:
        self.me, self.committee, self.value = node_id, tuple(committee), None

    def start(self, value: bytes) -> list[tuple[int, object]]:
        self.value = value
        return [(m, value) for m in self.committee if m != self.me]

    def on_message(self, sender: int, payload: object) -> list[tuple[int, object]]:
        if sender == self.committee[0] and isinstance(payload, bytes):
            self.value = payload
        return []

    def end_round(self, k: int) -> list[tuple[int, object]]:
        return []

    def output(self) -> bytes | None:
        return self.value


def _update(node: int, round: int) -> bytes:
    rng = np.random.default_rng([3, round, node])
    return (np.ones(P) + rng.normal(0, 0.01, P)).astype("<f4").tobytes()


@dataclasses.dataclass
class World:
    net: InMemoryNetwork
    keys: dict[int, SigningKey]
    block1: Block  # the block every node applied at height 1

    @property
    def nodes(self) -> dict[int, ConsensusNode]:
        return dict(self.net.nodes)

    def leader(self) -> ConsensusNode:
        n = self.net.nodes[0]
        return self.net.nodes[n.committee.leader]

    def member(self) -> ConsensusNode:
        n = self.net.nodes[0]
        return self.net.nodes[n.committee.members[1]]

    def outsider(self) -> ConsensusNode:
        members = self.net.nodes[0].committee.members
        return self.net.nodes[min(set(range(N)) - set(members))]

    def submission(
        self, client: int, update: bytes | None = None, **fields: Any
    ) -> UpdateSubmission:
        node = self.net.nodes[client]
        sub = UpdateSubmission(
            round=node.round,
            client_id=client,
            update=_update(client, node.round) if update is None else update,
            base_block_hash=node.chain.head_hash,
        )
        return dataclasses.replace(sub, **fields).signed(self.keys[client])


@pytest.fixture
def world() -> World:
    genesis, keys = synthetic_genesis(N, P, seed=7, committee_size=3, f=2)
    net = InMemoryNetwork(seed=1)  # no automatic updates: round 2 is driven by each test
    for i in range(N):
        net.add(ConsensusNode(i, keys[i], genesis, qba=EchoQba, clock=net.clock))
    net.start()
    for i in range(N):
        net.schedule(i, LocalUpdateReady(1, _update(i, 1)), 0.0)
    assert net.run(lambda: all(n.chain.height == 1 for n in net.nodes.values()), max_steps=10_000)
    return World(net, keys, net.nodes[0].chain.block_at(1))


def snapshot(node: ConsensusNode) -> tuple[Any, ...]:
    s = node._state  # white-box: the whole round state must be untouched by a rejected message
    return (
        node.chain.height,
        node.chain.head_hash,
        tuple(sorted(node.chain.stakes.items())),
        node.round,
        node.view,
        s.phase,
        s.proposal,
        s.voted,
        tuple(sorted(s.votes)),
        tuple(sorted(node._submissions)),
        len(node._buffer),
    )


def rejects(node: ConsensusNode, event: Event, error: type[QbflError]) -> None:
    before = snapshot(node)
    with pytest.raises(error):
        node.handle(event)
    assert snapshot(node) == before


# --- submissions ----------------------------------------------------------------------------


def test_submission_with_bad_signature(world: World) -> None:
    sub = world.submission(4)
    forged = dataclasses.replace(sub, signature=world.keys[5].sign(sub.signing_payload()))
    rejects(world.member(), SubmissionReceived(4, forged), InvalidSignature)
    flipped = dataclasses.replace(sub, update=_update(4, 99))  # content changed after signing
    rejects(world.member(), SubmissionReceived(4, flipped), InvalidSignature)


def test_submission_sender_must_be_its_client(world: World) -> None:
    rejects(world.member(), SubmissionReceived(3, world.submission(4)), InvalidMessage)


def test_submission_for_a_past_round_or_another_block(world: World) -> None:
    stale = world.submission(4, round=1)
    rejects(world.member(), SubmissionReceived(4, stale), StaleRound)
    other_base = world.submission(4, base_block_hash=b"\x01" * 32)
    rejects(world.member(), SubmissionReceived(4, other_base), StaleRound)


@pytest.mark.parametrize(
    "values",
    [
        np.full(P, np.nan, dtype="<f4").tobytes(),
        np.array([1.0] * (P - 1) + [np.inf], dtype="<f4").tobytes(),
        np.ones(P - 1, dtype="<f4").tobytes(),  # wrong length
        np.ones(P * 1000, dtype="<f4").tobytes(),  # oversize
    ],
    ids=["nan", "inf", "short", "oversize"],
)
def test_submission_with_malformed_update(world: World, values: bytes) -> None:
    rejects(world.member(), SubmissionReceived(4, world.submission(4, values)), InvalidUpdate)


def test_local_update_malformed_is_refused(world: World) -> None:
    node = world.outsider()
    rejects(node, LocalUpdateReady(2, np.full(P, np.nan, "<f4").tobytes()), InvalidUpdate)
    rejects(node, LocalUpdateReady(1, _update(0, 1)), StaleRound)


def test_client_sending_two_updates_keeps_the_first(world: World) -> None:
    node = world.member()
    node.handle(SubmissionReceived(4, world.submission(4)))
    rejects(node, SubmissionReceived(4, world.submission(4, _update(4, 50))), InvalidMessage)
    assert node.handle(SubmissionReceived(4, node._submissions[4])) == []  # exact duplicate: no-op


def test_next_round_messages_are_buffered_not_applied(world: World) -> None:
    node = world.member()
    future = dataclasses.replace(world.submission(4), round=node.round + 1).signed(world.keys[4])
    before = len(node._buffer)
    assert node.handle(SubmissionReceived(4, future)) == []
    assert len(node._buffer) == before + 1 and 4 not in node._submissions


def test_messages_beyond_the_round_window_are_refused_not_held(world: World) -> None:
    node = world.member()
    far = dataclasses.replace(world.submission(4), round=node.round + 3).signed(world.keys[4])
    rejects(node, SubmissionReceived(4, far), TooEarly)
    assert len(node._buffer) == 0


# --- proposals and votes ------------------------------------------------------------------------


def _message(world: World, **fields: Any) -> ConsensusMessage:
    node = world.leader()
    base = ConsensusMessage(node.round, node.view, (0, 1, 2), b"\x00" * 32)
    return dataclasses.replace(base, **fields)


def test_proposal_from_non_leader_and_wrong_view(world: World) -> None:
    member = world.member()
    msg = _message(world)
    proposal = Proposal(msg.round, msg.view, tuple(range(N)), _update(0, 2), msg)
    not_leader = member.committee.members[2]
    rejects(member, ProposalReceived(not_leader, proposal), InvalidMessage)
    old = dataclasses.replace(proposal, round=1)
    rejects(member, ProposalReceived(member.committee.leader, old), StaleRound)


def _leader_with_proposal(world: World) -> tuple[ConsensusNode, ConsensusMessage]:
    leader = world.leader()
    for i in range(N):
        leader.handle(SubmissionReceived(i, world.submission(i)))  # all N → proposes
    assert leader._state.proposal is not None
    return leader, leader._state.proposal.message


def test_vote_from_a_non_member(world: World) -> None:
    leader, msg = _leader_with_proposal(world)
    outsider = world.outsider().node_id
    vote = VoteMessage(msg.round, msg.view, msg, msg.sign_vote(outsider, world.keys[outsider]))
    rejects(leader, VoteReceived(outsider, vote), InvalidMessage)


def test_vote_with_bad_signature_or_other_message(world: World) -> None:
    leader, msg = _leader_with_proposal(world)
    m = leader.committee.members[1]
    bad = VoteMessage(msg.round, msg.view, msg, msg.sign_vote(m, world.keys[(m + 1) % N]))
    rejects(leader, VoteReceived(m, bad), InvalidSignature)
    other = _message(world, selected=(5,))
    wrong = VoteMessage(msg.round, msg.view, other, other.sign_vote(m, world.keys[m]))
    rejects(leader, VoteReceived(m, wrong), InvalidMessage)
    spoofed = VoteMessage(msg.round, msg.view, msg, msg.sign_vote(m, world.keys[m]))
    rejects(leader, VoteReceived(leader.committee.members[2], spoofed), InvalidMessage)


def test_duplicate_vote(world: World) -> None:
    leader, msg = _leader_with_proposal(world)
    m = leader.committee.members[1]
    vote = VoteMessage(msg.round, msg.view, msg, msg.sign_vote(m, world.keys[m]))
    leader.handle(VoteReceived(m, vote))
    assert leader.handle(VoteReceived(m, vote)) == []  # the same vote again: ignored
    again = VoteMessage(
        msg.round, msg.view, msg, msg.sign_vote(m, world.keys[m])
    )  # hedged: new bytes
    rejects(leader, VoteReceived(m, again), InvalidMessage)


# --- blocks -----------------------------------------------------------------------------------


def _block2(world: World, **overrides: Any) -> Block:
    """A correctly signed block at height 2 built by hand, then altered by `overrides`."""
    node = world.outsider()
    committee = node.committee.members
    update = _update(0, 2)
    base = make_block(
        height=2,
        round=2,
        view=0,
        prev_hash=node.chain.head_hash,
        committee=committee,
        selected=(0, 1, 2),
        update=update,
    )
    msg = base.consensus_message()
    votes = tuple(msg.sign_vote(m, world.keys[m]) for m in sorted(committee))
    return dataclasses.replace(dataclasses.replace(base, votes=votes), **overrides)


def test_a_correct_hand_built_block_is_accepted(world: World) -> None:
    node = world.outsider()
    node.handle(BlockReceived(0, _block2(world)))
    assert node.chain.height == 2  # so each rejection below is due to its single defect


Mutation = Callable[[World, Block], Block]


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda w, b: dataclasses.replace(b, votes=b.votes[:1]), InvalidBlock),  # too few votes
        (lambda w, b: dataclasses.replace(b, prev_hash=b"\x02" * 32), InvalidBlock),
        (
            lambda w, b: dataclasses.replace(b, committee=tuple(reversed(b.committee))),
            InvalidBlock,
        ),  # wrong committee / leader
        (lambda w, b: dataclasses.replace(b, view=1), InvalidBlock),  # view 1 has another committee
        (lambda w, b: dataclasses.replace(b, update=_update(1, 2)), InvalidBlock),  # hash mismatch
        (lambda w, b: dataclasses.replace(b, selected=(0, 1, 3)), InvalidBlock),  # not signed
        (
            lambda w, b: dataclasses.replace(
                b,
                votes=tuple(
                    dataclasses.replace(v, signature=b.votes[0].signature) for v in b.votes
                ),
            ),
            InvalidBlock,
        ),  # forged votes: defect VOTE_SIGNATURE
    ],
    ids=["too-few-votes", "prev-hash", "committee", "view", "update-hash", "selected", "forged"],
)
def test_invalid_block_rejected(world: World, mutate: Mutation, error: type[QbflError]) -> None:
    rejects(world.outsider(), BlockReceived(0, mutate(world, _block2(world))), error)


def test_vote_from_non_member_in_block(world: World) -> None:
    block = _block2(world)
    outsider = world.outsider().node_id
    msg = block.consensus_message()
    votes = (*block.votes[:1], msg.sign_vote(outsider, world.keys[outsider]))
    forged = dataclasses.replace(block, votes=tuple(sorted(votes, key=lambda v: v.member_id)))
    rejects(world.outsider(), BlockReceived(0, forged), InvalidBlock)


def test_second_valid_block_at_a_filled_height_is_a_fork(world: World) -> None:
    node = world.outsider()
    b1 = world.block1
    msg = dataclasses.replace(b1.consensus_message(), selected=(0,))
    votes = tuple(msg.sign_vote(m, world.keys[m]) for m in sorted(b1.committee))  # dishonest
    rival = dataclasses.replace(b1, selected=(0,), votes=votes)
    rejects(node, BlockReceived(0, rival), ForkDetected)
    assert node.handle(BlockReceived(0, b1)) == []  # the block it holds: a harmless duplicate
    broken = dataclasses.replace(rival, votes=rival.votes[:1])
    rejects(node, BlockReceived(0, broken), InvalidBlock)  # an invalid rival is no fork


# --- catch-up and buffering against faulty peers -------------------------------------------------


def _fresh_node(world: World, node_id: int, **options: Any) -> ConsensusNode:
    genesis = world.net.nodes[0].chain.genesis
    node = ConsensusNode(
        node_id, world.keys[node_id], genesis, qba=EchoQba, clock=world.net.clock, **options
    )
    node.start()
    return node


def _rival2(world: World) -> Block:
    """A second valid block at height 2 (the committee signed two messages: dishonest)."""
    unsigned = _block2(world, selected=(0, 1))
    msg = unsigned.consensus_message()
    votes = tuple(msg.sign_vote(m, world.keys[m]) for m in sorted(unsigned.committee))
    return dataclasses.replace(unsigned, votes=votes)


def test_a_second_sync_request_goes_to_another_peer(world: World) -> None:
    node = world.outsider()
    ahead = dataclasses.replace(world.block1, height=3, round=3)  # only buffered, never verified
    first = node.handle(BlockReceived(5, ahead))
    assert [(e.to, e.message) for e in first if isinstance(e, Send)] == [(5, SyncRequest(2))]
    assert node.handle(BlockReceived(6, ahead)) == []  # one request outstanding at a time
    # Peer 5 never answers (dropped or faulty): after the view deadline, peer 6, which showed the
    # later block too, must be asked, or the node stays behind for good.
    again = node.handle(TimerFired(TimerKind.DEADLINE, node.round, node.view))
    assert [(e.to, e.message) for e in again if isinstance(e, Send)] == [(6, SyncRequest(2))]


def test_sync_response_with_a_bad_tail_keeps_the_good_blocks(world: World) -> None:
    node = world.outsider()
    good = _block2(world)
    bad = dataclasses.replace(good, height=3, round=3)  # wrong prev hash
    effects = node.catch_up((good, bad))
    assert [e.block for e in effects if isinstance(e, CommitBlock)] == [good]
    assert node.chain.height == 2 and node.counters["rejected:InvalidBlock"] == 1
    fresh = _fresh_node(world, 6)  # a bad first block: the response is rejected, nothing changes
    bad1 = dataclasses.replace(world.block1, votes=world.block1.votes[:1])
    rejects(fresh, SyncBlocksReceived(5, SyncResponse((bad1, world.block1))), InvalidBlock)


def test_a_buffered_rival_block_does_not_swallow_the_commit(world: World) -> None:
    fresh = _fresh_node(world, 6)
    block2, rival = _block2(world), _rival2(world)
    fresh.handle(BlockReceived(4, block2))  # both ahead of genesis: buffered
    fresh.handle(BlockReceived(5, rival))
    effects = fresh.handle(BlockReceived(0, world.block1))  # commit 1, replay 2, then its rival
    assert [e.block for e in effects if isinstance(e, CommitBlock)] == [world.block1, block2]
    forks = [e for e in effects if isinstance(e, ForkObserved)]
    assert [(f.held, f.rival) for f in forks] == [(block2, rival)]
    assert fresh.chain.height == 2 and fresh.forks == [(block2, rival)]


def test_a_second_valid_block_carries_both_blocks_as_evidence(world: World) -> None:
    node = world.outsider()
    block2, rival = _block2(world), _rival2(world)  # hedged signatures: build each once
    node.handle(BlockReceived(0, block2))
    with pytest.raises(BlockFork) as caught:
        node.handle(BlockReceived(5, rival))
    assert (caught.value.held, caught.value.rival) == (block2, rival)


def test_a_flooding_peer_cannot_evict_other_peers_buffered_messages(world: World) -> None:
    node = _fresh_node(world, 6, max_buffered=8)
    honest = SubmissionReceived(4, world.submission(4, round=2))
    node.handle(honest)
    for k in range(20):  # next-round junk from one peer: it only ever evicts its own
        node.handle(SubmissionReceived(5, world.submission(5, _update(5, k), round=2)))
    assert len(node._buffer) == 8 and honest in list(node._buffer)
    assert node.counters["buffer_overflow"] == 13
    for k in range(5):  # beyond the round window: refused, nothing held
        with pytest.raises(TooEarly):
            node.handle(SubmissionReceived(5, world.submission(5, _update(5, k), round=9 + k)))
    assert len(node._buffer) == 8 and honest in list(node._buffer)
