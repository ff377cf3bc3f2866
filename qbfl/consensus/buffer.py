"""Messages of a later (round, view) held until the node gets there: bounded, overflow counted."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator

from qbfl.consensus.events import Event


class FutureBuffer:
    """A bounded buffer of early events, replayed in arrival order when the node enters their view.

    When full, the oldest event of the sender that holds the most is dropped (the newcomer's own
    if it would hold the most): one peer flooding far-future messages then evicts only its own,
    never an honest peer's early proposal or vote (a plain FIFO would let it push those out).
    """

    def __init__(self, capacity: int, counters: Counter[str]) -> None:
        if capacity < 0:
            raise ValueError("max_buffered must be >= 0")
        self._capacity = capacity
        self._counters = counters
        self._by_sender: dict[int, deque[tuple[int, Event]]] = {}
        self._size = 0
        self._seq = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Event]:
        items = sorted(item for queue in self._by_sender.values() for item in queue)
        return iter([event for _, event in items])

    def add(self, sender: int, event: Event) -> None:
        self._counters["buffered"] += 1
        if self._size >= self._capacity:
            self._counters["buffer_overflow"] += 1
            counts = {s: len(q) for s, q in self._by_sender.items()}
            counts[sender] = counts.get(sender, 0) + 1
            hog = max(counts, key=counts.__getitem__)  # ties: the sender buffered first
            if hog not in self._by_sender:
                return  # capacity 0, or the newcomer alone would exceed its share: drop it
            queue = self._by_sender[hog]
            queue.popleft()
            self._size -= 1
            if not queue:
                del self._by_sender[hog]
        self._seq += 1
        self._by_sender.setdefault(sender, deque()).append((self._seq, event))
        self._size += 1

    def take_all(self) -> list[Event]:
        """Every buffered event, oldest first; the buffer is empty afterwards."""
        pending = list(self)
        self._by_sender.clear()
        self._size = 0
        return pending
