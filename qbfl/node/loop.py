"""The threads of a node process: one event loop that alone touches the runtime, a ticker that turns
timers into events, and a training worker (CometBFT's receive routine + ticker, DESIGN §8)."""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from qbfl.consensus.events import TimerFired, TimerKind
from qbfl.net.status import Overloaded

log = logging.getLogger("qbfl.node")

Work = tuple[Callable[[], Any], "Future[Any] | None"]
TRAINING_NICE = (
    19  # the lowest priority: 25 training threads then weigh less than one protocol thread
)


class EventLoop:
    """A single thread that runs every state change of the node, in arrival order.

    `post` queues work from any thread (gRPC handlers, the ticker, the trainer) and returns a
    Future with its result or exception, so a handler can answer its caller with the right status.
    The queue is bounded: when it is full, `post` raises Overloaded (RESOURCE_EXHAUSTED) instead
    of letting one peer grow the node's memory without bound.
    """

    def __init__(self, *, capacity: int = 4096, name: str = "node-loop") -> None:
        self._queue: queue.Queue[Work | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopped = threading.Event()
        self.processed = 0
        self.busy_s = 0.0

    def start(self) -> None:
        self._thread.start()

    def post(self, work: Callable[[], Any], *, wait: bool = True) -> Future[Any]:
        future: Future[Any] = Future()
        if self._stopped.is_set():
            future.set_exception(Overloaded("the node is shutting down"))
            return future
        try:
            self._queue.put_nowait((work, future if wait else None))
        except queue.Full:
            raise Overloaded("the node's inbound queue is full; retry later") from None
        if not wait:
            future.set_result(None)
        return future

    def call(self, work: Callable[[], Any], timeout_s: float = 30.0) -> Any:
        """Run `work` on the loop and return its result (re-raising its exception)."""
        return self.post(work).result(timeout=timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopped.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while not self._stopped.is_set():
            item = self._queue.get()
            if item is None:
                break
            work, future = item
            started = time.perf_counter()
            try:
                result = work()
            except BaseException as exc:  # delivered to the caller; the loop goes on
                if future is not None:
                    future.set_exception(exc)
                else:  # nobody waits for this result: a bug here would otherwise stall silently
                    log.error("loop work failed", exc_info=exc)
            else:
                if future is not None:
                    future.set_result(result)
            self.busy_s += time.perf_counter() - started
            self.processed += 1


class Ticker:
    """Turns SetTimer effects into TimerFired events at their due time (monotonic clock)."""

    def __init__(self, fire: Callable[[TimerFired], None], clock: Callable[[], float]) -> None:
        self._fire = fire
        self._clock = clock
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="node-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def schedule(
        self, kind: TimerKind, round: int, view: int, delay_s: float, seq: int = 0
    ) -> None:
        event = TimerFired(kind, round, view, seq)
        self.call_later(delay_s, lambda: self._fire(event))

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        """Run `fn` on the ticker thread after `delay_s` (timers, and retries with backoff)."""
        with self._cv:
            self._seq += 1
            heapq.heappush(self._heap, (self._clock() + delay_s, self._seq, fn))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > self._clock()):
                    timeout = self._heap[0][0] - self._clock() if self._heap else None
                    self._cv.wait(timeout)
                if self._stopped:
                    return
                _, _, item = heapq.heappop(self._heap)
            try:
                item()
            except Exception as exc:  # a failed retry must not stop the timers
                log.debug("ticker callback failed: %r", exc)


class TrainingWorker:
    """Trains one round at a time off the event loop; a newer request replaces a pending one.

    `train(round)` returns the update bytes or None (stale round, diverged); `deliver(round,
    update)` hands it back to the loop. A node that fell several blocks behind trains only for
    the round it is in once it has caught up.
    """

    def __init__(
        self,
        train: Callable[[int], bytes | None],
        deliver: Callable[[int, bytes], None],
    ) -> None:
        self._train = train
        self._deliver = deliver
        self._pending: int | None = None
        self._last: int = 0
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="node-trainer", daemon=True)
        self.busy = False

    def start(self) -> None:
        self._thread.start()

    def request(self, round: int) -> None:
        with self._cv:
            if round <= self._last:
                return  # already trained (or training) this round
            self._pending = round
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def _run(self) -> None:
        # Training is the bulk of a node's CPU; the protocol (verifying and committing the block
        # everyone waits for, QBA, votes) must not queue behind it. On Linux a thread is a task
        # with its own nice value: this one yields to every protocol thread of every node.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), TRAINING_NICE)
        while True:
            with self._cv:
                while not self._stopped and self._pending is None:
                    self._cv.wait()
                if self._stopped:
                    return
                round, self._pending = self._pending, None
                assert round is not None
                self._last = round
                self.busy = True
            try:
                update = self._train(round)
                if update is not None:
                    self._deliver(round, update)
            except Exception:
                log.exception("training for round %d failed", round)
            finally:
                self.busy = False
