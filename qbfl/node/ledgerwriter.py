"""Blocks written to the node's SQLite ledger on a thread of their own, in order, off the event loop.

With synchronous=FULL every block costs an fsync; 50 nodes of one machine committing the same
block at once queue on the disk (measured: ~50 ms per append at N = 50 against 3.7 ms alone), and
on the event loop that delay held up verifying, relaying and training on the block everyone waits
for. The loop now applies a block in memory and hands it here. A crash can lose the blocks still
queued — exactly the lost-tail case a restarted node already repairs by comparing with its peers
at start-up (docs/ledger.md §4, docs/network.md §2).
"""

from __future__ import annotations

import logging
import queue
import threading

from qbfl.errors import QbflError
from qbfl.ledger.block import Block
from qbfl.ledger.store import LedgerStore

log = logging.getLogger("qbfl.node")


class LedgerWriter:
    """Appends blocks to `store` in the order given; `flush` waits until all are on disk."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store
        self._queue: queue.Queue[Block | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._idle = threading.Condition()
        self._pending = 0
        self.failed: str | None = None
        self._thread.start()

    def append(self, block: Block) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(block)

    def flush(self, timeout_s: float = 30.0) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        self.flush(timeout_s)
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            block = self._queue.get()
            if block is None:
                return
            try:
                if self.failed is None and block.height > self._store.height:
                    self._store.append(block)
            except QbflError as exc:  # the node goes on from memory; a restart repairs the file
                self.failed = f"block {block.height}: {exc}"
                log.error("ledger write failed, no more blocks are written: %s", self.failed)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
