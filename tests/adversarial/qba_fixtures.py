"""Shared setup for the QBA adversarial suites: small-n QDS parameters and reused polynomials."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence

from qbfl.consensus.qba import (
    QbaAdversary,
    QbaMessage,
    QbaMode,
    QbaParticipant,
    TripleKeyDealer,
)
from qbfl.crypto import gf2
from qbfl.crypto.gf2 import PolynomialSource
from qbfl.crypto.keysupply import PairwiseKeySupply, SeededKeySupply
from qbfl.crypto.qds import QdsParams

# The protocol logic does not depend on n; n = 32 keeps thousands of runs fast. A random or broken
# signature is still rejected: a tamper flips at least one bit that the verifier recomputes exactly.
SEARCH_PARAMS = QdsParams(n=32)


def search_polys(n: int = SEARCH_PARAMS.n) -> gf2.CyclicPolynomialSource:
    return gf2.CyclicPolynomialSource(
        [gf2.random_irreducible(n, random.Random(s)) for s in range(16)]
    )


def full_polys() -> gf2.CyclicPolynomialSource:
    return gf2.CyclicPolynomialSource(
        [gf2.random_irreducible(128, random.Random(s)) for s in range(8)]
    )


class Harness:
    """A lock-step QBA run driven by hand, so that a test can act as a hostile peer on the wire.

    Like `run_qba` (FIFO delivery, flush when idle in batch mode), but the test sees every message,
    can rewrite or drop it (`rewrite`), inject its own, and reach every member and the dealer.
    Uses only QbaParticipant's message interface, as a node's network shell would.
    """

    def __init__(
        self,
        committee: Sequence[int],
        *,
        f: int = 1,
        mode: QbaMode = QbaMode.DETECTABLE,
        params: QdsParams = SEARCH_PARAMS,
        keys: PairwiseKeySupply | None = None,
        polys: PolynomialSource | None = None,
        batch: bool = False,
        faulty: Collection[int] = (),
        adversary: QbaAdversary | None = None,
    ) -> None:
        self.committee = list(committee)
        self.keys = keys if keys is not None else SeededKeySupply(0)
        self.dealer = TripleKeyDealer(self.keys, params)
        self.batch = batch
        self.members = {
            m: QbaParticipant(
                me=m,
                committee=self.committee,
                f=f,
                mode=mode,
                dealer=self.dealer,
                polys=polys if polys is not None else search_polys(params.n),
                batch=batch,
                faulty=faulty,
                adversary=adversary,
            )
            for m in self.committee
        }
        self.sent: list[QbaMessage] = []  # everything delivered, in order

    def deliver(
        self,
        messages: Iterable[QbaMessage],
        rewrite: Callable[[QbaMessage], QbaMessage | None] | None = None,
    ) -> None:
        """Deliver `messages` and every reply until the members are quiet."""
        queue = deque(messages)
        while queue:
            while queue:
                msg = queue.popleft()
                if rewrite is not None:
                    changed = rewrite(msg)
                    if changed is None:
                        continue
                    msg = changed
                self.sent.append(msg)
                queue.extend(self.members[msg.recipient].on_message(msg))
            if self.batch:
                for m in self.committee:
                    queue.extend(self.members[m].flush())

    def run(
        self,
        value: bytes,
        rounds: int,
        rewrite: Callable[[QbaMessage], QbaMessage | None] | None = None,
    ) -> dict[int, bytes | None]:
        """A whole instance: start, every multicast round, outputs of every member."""
        self.deliver(self.members[self.committee[0]].start(value), rewrite)
        for r in range(1, rounds + 1):
            self.end_round(r, rewrite)
        return {m: p.output() for m, p in self.members.items()}

    def end_round(
        self, r: int, rewrite: Callable[[QbaMessage], QbaMessage | None] | None = None
    ) -> None:
        out: list[QbaMessage] = []
        for m in self.committee:
            out += self.members[m].end_multicast_round(r)
        self.deliver(out, rewrite)
