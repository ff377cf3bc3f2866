"""Messages of a later (round, view) held until the node gets there: bounded, overflow counted."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator

from qbfl.consensus.events import Event


class FutureBuffer:
    """A bounded buffer of early events, replayed in arrival order when the node enters their view."""

    def __init__(self, capacity: int, counters: Counter[str]) -> None:
        if capacity < 0:
            raise ValueError("max_buffered must be >= 0")
        self._events: deque[Event] = deque(maxlen=capacity)
        self._counters = counters

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def add(self, sender: int, event: Event) -> None:
        del sender
        if len(self._events) == self._events.maxlen:
            self._counters["buffer_overflow"] += 1
        self._events.append(event)
        self._counters["buffered"] += 1

    def take_all(self) -> list[Event]:
        """Every buffered event, oldest first; the buffer is empty afterwards."""
        pending = list(self._events)
        self._events.clear()
        return pending
