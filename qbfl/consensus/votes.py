"""Votes of one (round, view): a member's QBA output check and the leader's tally (Alg. 3 lines 3–4, 10–13)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from qbfl.consensus.committee import Committee
from qbfl.consensus.wire import InvalidMessage, Proposal, VoteMessage
from qbfl.ledger.block import Block, ConsensusMessage, make_block
from qbfl.ledger.encoding import EncodingError


def qba_output_message(raw: bytes | None, *, round: int, view: int) -> ConsensusMessage | None:
    """The QBA output as a ConsensusMessage of this (round, view); None for ⊥ or anything else."""
    if raw is None:
        return None
    try:
        output = ConsensusMessage.decode(raw)
    except (EncodingError, ValueError, TypeError):
        return None
    if (output.round, output.view) != (round, view):
        return None
    return output


class VoteTally(Mapping[int, VoteMessage]):
    """Member id → its verified vote on the proposed message; the leader's side of Alg. 3.

    Counts distinct committee members only: a vote whose transport sender is not the member it
    names, a second different vote by one member, or a vote on another message is rejected.
    """

    def __init__(self, committee: Committee, public_keys: Mapping[int, bytes]) -> None:
        self._committee = committee
        self._keys = public_keys
        self._votes: dict[int, VoteMessage] = {}

    def __getitem__(self, member_id: int) -> VoteMessage:
        return self._votes[member_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self._votes)

    def __len__(self) -> int:
        return len(self._votes)

    def add(self, sender: int, vm: VoteMessage, *, proposed: ConsensusMessage | None) -> bool:
        """Verify and count `vm`; False for an exact duplicate. Raises InvalidMessage or
        InvalidSignature and leaves the tally unchanged."""
        member = vm.vote.member_id
        if sender != member or member not in self._committee.members:
            raise InvalidMessage(f"vote from node {sender}, not a committee member")
        if proposed is None or vm.message != proposed:
            raise InvalidMessage(f"vote from {sender} is for another message")
        held = self._votes.get(member)
        if held is not None:
            if held != vm:
                raise InvalidMessage(f"member {sender} voted twice")
            return False
        vm.message.verify_vote(vm.vote, self._keys[member])
        self._votes[member] = vm
        return True

    @property
    def has_majority(self) -> bool:
        """Alg. 3 line 4: |{σ_i}| > Nc/2, counted over this view's committee."""
        return 2 * len(self._votes) > len(self._committee.members)

    def package(self, proposal: Proposal, *, prev_hash: bytes) -> Block:
        """Alg. 3 line 5: package every counted σ_i with the proposal into the block of its round."""
        return make_block(
            height=proposal.round,  # round r builds height r
            round=proposal.round,
            view=proposal.view,
            prev_hash=prev_hash,
            committee=self._committee.members,
            selected=proposal.message.selected,
            update=proposal.update,
            votes=tuple(vm.vote for vm in self._votes.values()),
        )
