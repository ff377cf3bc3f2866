"""Batched QDS arithmetic for QBA members: one vectorised pass signs or checks many operations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from qbfl.consensus.qba.messages import QbaMessage, TripleId
from qbfl.crypto import qds

if TYPE_CHECKING:
    from qbfl.consensus.qba.participant import QbaParticipant

QueuedCheck = tuple[TripleId, bytes, int, int, int]  # (operation, doc, sig, K_X, K_Y)


def sign_batch(
    inputs: Sequence[tuple[list[bytes], list[qds.SignerKeys], list[int]]], params: qds.QdsParams
) -> list[list[int]]:
    """Signatures for several signers' `_sign_inputs`, hashed in one vectorised batch."""
    docs = [d for batch in inputs for d in batch[0]]
    keys = [k for batch in inputs for k in batch[1]]
    polys = [p for batch in inputs for p in batch[2]]
    sigs = qds.signature_ints(docs, keys, polys, params)
    out, start = [], 0
    for batch in inputs:
        out.append(sigs[start : start + len(batch[0])])
        start += len(batch[0])
    return out


def end_round_together(members: Sequence[QbaParticipant], r: int) -> list[QbaMessage]:
    """`end_multicast_round(r)` on every member, in order, with all their signing in one batch.

    The in-memory driver's shortcut: each member still plans, takes its keys and polynomials and signs
    only its own operations, in the same order as one call per member; only the arithmetic is pooled.
    """
    closed = [m._close_round(r) for m in members]
    stale = [msg for _, replays in closed for msg in replays]
    todos = [todo for todo, _ in closed]
    inputs = [m._sign_inputs(todo) for m, todo in zip(members, todos, strict=True)]
    sigs = sign_batch(inputs, members[0]._params) if members else []
    return stale + [
        msg for m, todo, s in zip(members, todos, sigs, strict=True) for msg in m._signed(todo, s)
    ]


def flush_together(members: Sequence[QbaParticipant]) -> list[QbaMessage]:
    """`flush()` on every member, in order, with all their queued checks in one vectorised batch.

    Each member's checks use only its own data and its verdicts are applied exactly as its own flush
    would apply them; pooling the hashing across members is an in-memory simulation shortcut.
    """
    if not members:
        return []
    queues = [m._take_queues() for m in members]
    items = [item[1:] for bobs, charlies in queues for item in (*bobs, *charlies)]
    verdicts = iter(qds.check_many(items, members[0]._params))
    out: list[QbaMessage] = []
    for m, (bobs, charlies) in zip(members, queues, strict=True):
        out += m._apply_checks(bobs, charlies, verdicts)
    return out
