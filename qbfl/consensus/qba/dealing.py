"""Simulated key pre-distribution for QBA: each QDS operation's keys drawn once, each party given its share."""

from __future__ import annotations

from qbfl.consensus.qba.messages import TripleId
from qbfl.crypto.keysupply import PairwiseKeySupply
from qbfl.crypto.qds import QdsParams, TripleKeys, deal_many_triple_keys


class TripleKeyDealer:
    """Stands in for the QKD pre-distribution that gives Alice, Bob and Charlie correlated keys.

    The first party to touch an operation draws its keys from the pairwise pools; the others get the
    same draw, so the pools are consumed once per operation, as they would be by both ends of a link.
    A participant must read only its own share (the signer `alice`, Bob `bob`, Charlie `charlie`),
    except that colluding faulty members may read each other's. It is asked only for operations a
    member has admitted (`admission.Admission`: operations of this session naming that member), so
    a peer cannot make it draw for invented ones. Across processes each node would instead draw its
    own share from its own pairwise pool with the signer, named by a key reference in the messages;
    nothing in the participant assumes that the shares come from one shared dealer.
    """

    def __init__(self, keys: PairwiseKeySupply, params: QdsParams) -> None:
        self._keys = keys
        self.params = params
        self._dealt: dict[TripleId, TripleKeys] = {}

    def keys_for(self, triple: TripleId) -> TripleKeys:
        dealt = self._dealt.get(triple)
        if dealt is None:
            self.deal([triple])
            dealt = self._dealt[triple]
        return dealt

    def deal(self, triples: list[TripleId]) -> None:
        """Draw the keys of every operation in `triples` not dealt yet, one supply call per key pair.

        The same bits as one `keys_for` per operation in this order (deal_many_triple_keys).
        """
        fresh = list(dict.fromkeys(t for t in triples if t not in self._dealt))
        ops = [(t.signer, t.bob, t.charlie, t.context()) for t in fresh]
        for t, keys in zip(fresh, deal_many_triple_keys(self._keys, ops, self.params), strict=True):
            self._dealt[t] = keys

    @property
    def operations(self) -> int:
        return len(self._dealt)
