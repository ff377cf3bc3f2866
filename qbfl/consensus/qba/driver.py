"""In-memory lock-step driver: runs one QBA instance, every message crossing through it."""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from qbfl.consensus.qba.admission import validate_setup
from qbfl.consensus.qba.adversary import QbaAdversary
from qbfl.consensus.qba.batching import end_round_together, flush_together
from qbfl.consensus.qba.dealing import TripleKeyDealer
from qbfl.consensus.qba.messages import QbaMessage, QbaMode
from qbfl.consensus.qba.participant import QbaParticipant
from qbfl.crypto.gf2 import PolynomialSource
from qbfl.crypto.keysupply import PairwiseKeySupply
from qbfl.crypto.qds import QdsParams

# a hook that sees every message in flight: return it (possibly changed) or None to drop it
Interceptor = Callable[[QbaMessage], QbaMessage | None]


@dataclass(frozen=True)
class QbaOutcome:
    """outputs: honest members only; None is ⊥. deviations: what the faulty members did differently.

    qds_operations: signatures computed, each with one polynomial — the operations signed and, when
    faulty members forge (a colluder's tampered forward, a re-forge), those signatures too.
    """

    outputs: Mapping[int, bytes | None]
    qds_operations: int
    key_bits: int
    messages: int
    deviations: tuple[str, ...] = ()
    excluded: Mapping[int, frozenset[int]] | None = None


def run_qba(
    *,
    mode: QbaMode = QbaMode.DETECTABLE,
    committee: Sequence[int],
    leader_value: bytes,
    f: int,
    keys: PairwiseKeySupply,
    polys: PolynomialSource | Mapping[int, PolynomialSource],
    adversary: QbaAdversary | None = None,
    faulty: Collection[int] = (),
    params: QdsParams | None = None,
    intercept: Interceptor | None = None,
    batch: bool = True,
) -> QbaOutcome:
    """Run QBA among `committee` (leader first) with synchronous rounds; messages are delivered FIFO.

    `polys` is one source for every signer or one per member. `intercept` lets a test tamper with or
    drop messages in flight (the adversary hook is the normal way; this one models the network).
    `batch`: members check signatures together whenever their inbox is empty (vectorised hashing);
    outputs are identical either way.
    """
    # a paper-mode 9/4 instance allocates ~10^5 short-lived, acyclic objects (messages, ids, keys);
    # the cyclic collector would rescan the growing live set many times over (15-30 % of the run
    # measured) while reference counting alone frees them: pause it for the run, restore it after
    paused = gc.isenabled()
    gc.disable()
    try:
        return _run(
            mode=mode,
            committee=committee,
            leader_value=leader_value,
            f=f,
            keys=keys,
            polys=polys,
            adversary=adversary,
            faulty=faulty,
            params=params,
            intercept=intercept,
            batch=batch,
        )
    finally:
        if paused:
            gc.enable()


def _run(
    *,
    mode: QbaMode,
    committee: Sequence[int],
    leader_value: bytes,
    f: int,
    keys: PairwiseKeySupply,
    polys: PolynomialSource | Mapping[int, PolynomialSource],
    adversary: QbaAdversary | None,
    faulty: Collection[int],
    params: QdsParams | None,
    intercept: Interceptor | None,
    batch: bool,
) -> QbaOutcome:
    validate_setup(committee, f, mode)
    unknown = set(faulty) - set(committee)
    if unknown:
        raise ValueError(f"faulty members {sorted(unknown)} are not on the committee")
    params = params or QdsParams()
    dealer = TripleKeyDealer(keys, params)
    bits_before = keys.consumed_bits()
    members = {
        m: QbaParticipant(
            me=m,
            committee=committee,
            f=f,
            mode=mode,
            dealer=dealer,
            polys=polys[m] if isinstance(polys, Mapping) else polys,
            adversary=adversary,
            faulty=faulty,
            batch=batch,
        )
        for m in committee
    }
    leader = members[committee[0]]
    ordered = [members[m] for m in committee]
    queue: deque[QbaMessage] = deque(leader.start(leader_value))
    delivered = 0
    for r in range(1, leader.rounds + 1):
        while queue:
            if intercept is None:
                # the plain path, ~35 000 messages at paper 9/4: no per-message hook test
                while queue:
                    msg = queue.popleft()
                    delivered += 1
                    queue.extend(members[msg.recipient].on_message(msg))
            else:
                while queue:
                    changed = intercept(queue.popleft())
                    if changed is None:
                        continue
                    delivered += 1
                    queue.extend(members[changed.recipient].on_message(changed))
            if batch:
                # every member flushes when its inbox is empty; the checks of all are hashed together
                queue.extend(flush_together(ordered))
        if batch:
            queue.extend(end_round_together(ordered, r))
        else:
            for m in committee:
                queue.extend(members[m].end_multicast_round(r))
    honest = [m for m in committee if m not in set(faulty)]
    return QbaOutcome(
        outputs={m: members[m].output() for m in honest},
        qds_operations=sum(p.signed for p in members.values()),
        key_bits=keys.consumed_bits() - bits_before,
        messages=delivered,
        deviations=tuple(d for m in committee for d in members[m].deviations),
        excluded={m: frozenset(members[m].excluded) for m in honest},
    )
