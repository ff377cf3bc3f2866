"""Messages of a later (round, view) held until the node gets there: checked first, bounded by bytes.

What a peer can make a node hold here (docs/consensus.md, "Bounds a peer can make a node hold"):
only messages for the next round or for at most VIEW_WINDOW views ahead in this round, from a
roster member in the role the message needs (a proposal from that view's leader, QBA traffic
between its members, votes to its leader — checkable now, because the committee of a later view
of this round depends only on the chain), with an update of exactly the task's size; at most
MAX_BYTES_PER_SENDER per sender and `max_bytes` in all, and `capacity` events.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator

from qbfl.consensus.committee import Committee
from qbfl.consensus.events import (
    BlockReceived,
    Event,
    LocalUpdateReady,
    ProposalReceived,
    QbaMessageReceived,
    SubmissionReceived,
    VoteReceived,
)
from qbfl.consensus.wire import InvalidMessage
from qbfl.errors import InvalidUpdate, QbflError

VIEW_WINDOW = 8  # views ahead of the current one that a buffered message may be for
ROUND_WINDOW = 1  # rounds ahead (a node one block behind its peers); further: catch up instead
MAX_BYTES_PER_SENDER = 8 << 20
DEFAULT_MAX_BYTES = 256 << 20
_SMALL = 4096  # what a message without an update costs in the accounting (QBA values, votes)


class TooEarly(QbflError):
    """A message for a round or view too far ahead to hold: the node catches up instead."""


def event_size(event: Event) -> int:
    """Bytes a buffered event keeps alive, to within a few KB (the update dominates)."""
    if isinstance(event, SubmissionReceived):
        return len(event.submission.update) + _SMALL
    if isinstance(event, ProposalReceived):
        return len(event.proposal.update) + _SMALL
    if isinstance(event, BlockReceived):
        return len(event.block.update) + _SMALL
    if isinstance(event, LocalUpdateReady):
        return len(event.update) + _SMALL
    return _SMALL


def check_early(
    event: Event,
    *,
    sender: int,
    me: int,
    here: tuple[int, int],
    there: tuple[int, int],
    roster: Collection[int],
    committee_at: Callable[[int], Committee],
    update_bytes: int,
) -> None:
    """Raise unless `event` (for `there` > `here`) is a message an honest peer could send now."""
    (round_now, view_now), (round_then, view_then) = here, there
    if sender != me and sender not in roster:
        raise InvalidMessage(f"node {sender} is not on the roster")
    if round_then > round_now + ROUND_WINDOW:
        raise TooEarly(f"message for round {round_then}; node is at round {round_now}")
    if round_then == round_now and view_then > view_now + VIEW_WINDOW:
        raise TooEarly(f"message for view {view_then}; node is at view {view_now}")
    update = (
        event.submission.update
        if isinstance(event, SubmissionReceived)
        else event.proposal.update
        if isinstance(event, ProposalReceived)
        else event.block.update
        if isinstance(event, BlockReceived)
        else None
    )
    if update is not None and len(update) != update_bytes:
        raise InvalidUpdate(f"update of {len(update)} bytes; the task's updates are {update_bytes}")
    if round_then != round_now:
        return  # the next round's committee depends on a block this node does not hold yet
    committee = committee_at(view_then)
    if isinstance(event, ProposalReceived) and (
        sender != committee.leader or me not in committee.members
    ):
        raise InvalidMessage(f"node {sender} does not lead view {view_then} to this node")
    if isinstance(event, QbaMessageReceived) and (
        sender not in committee.members or me not in committee.members
    ):
        raise InvalidMessage(f"QBA message outside the committee of view {view_then}")
    if isinstance(event, VoteReceived) and (
        sender not in committee.members or me != committee.leader
    ):
        raise InvalidMessage(f"vote of view {view_then} not from a member to its leader")


class FutureBuffer:
    """A bounded buffer of early events, replayed in arrival order when the node enters their view.

    Bounded by count, by bytes in all and by bytes per sender. When it is full, the oldest event
    of the sender that holds the most bytes is dropped (the newcomer itself if that sender is the
    newcomer's): one peer flooding messages then evicts only its own, never an honest peer's
    early proposal or vote (a plain FIFO would let it push those out).
    """

    def __init__(
        self,
        capacity: int,
        counters: Counter[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_bytes_per_sender: int = MAX_BYTES_PER_SENDER,
    ) -> None:
        if capacity < 0 or max_bytes < 0 or max_bytes_per_sender < 0:
            raise ValueError("buffer bounds must be >= 0")
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._per_sender = max_bytes_per_sender
        self._counters = counters
        self._by_sender: dict[int, deque[tuple[int, Event, int]]] = {}
        self._bytes: Counter[int] = Counter()
        self._size = 0
        self._total = 0
        self._seq = 0

    def __len__(self) -> int:
        return self._size

    @property
    def bytes(self) -> int:
        return self._total

    def __iter__(self) -> Iterator[Event]:
        items = sorted(
            (seq, event) for queue in self._by_sender.values() for seq, event, _ in queue
        )
        return iter([event for _, event in items])

    def _drop_oldest(self, sender: int) -> None:
        queue = self._by_sender[sender]
        _, _, size = queue.popleft()
        self._size -= 1
        self._total -= size
        self._bytes[sender] -= size
        if not queue:
            del self._by_sender[sender]
            del self._bytes[sender]

    def add(self, sender: int, event: Event, size: int | None = None) -> None:
        size = event_size(event) if size is None else size
        self._counters["buffered"] += 1
        if size > self._per_sender:
            self._counters["buffer_overflow"] += 1
            return
        # the sender's own share first: it only ever pushes out its own older messages
        while sender in self._by_sender and self._bytes[sender] + size > self._per_sender:
            self._counters["buffer_overflow"] += 1
            self._drop_oldest(sender)
        while self._size + 1 > self._capacity or self._total + size > self._max_bytes:
            self._counters["buffer_overflow"] += 1
            weights = dict(self._bytes)
            weights[sender] = weights.get(sender, 0) + size
            hog = max(weights, key=weights.__getitem__)  # ties: the sender buffered first
            if hog not in self._by_sender:
                return  # capacity 0, or the newcomer alone would exceed its share: drop it
            self._drop_oldest(hog)
        self._seq += 1
        self._by_sender.setdefault(sender, deque()).append((self._seq, event, size))
        self._bytes[sender] += size
        self._size += 1
        self._total += size

    def take_all(self) -> list[Event]:
        """Every buffered event, oldest first; the buffer is empty afterwards."""
        pending = list(self)
        self._by_sender.clear()
        self._bytes.clear()
        self._size = 0
        self._total = 0
        return pending
