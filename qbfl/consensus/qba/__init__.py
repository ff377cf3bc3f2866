"""Quantum Byzantine agreement (paper App. A.2) in two modes, `paper` and `detectable`, with an adversary hook."""

from qbfl.consensus.qba.adversary import (
    EquivocatingLeader,
    ForwardChoice,
    HonestAdversary,
    KeyChoice,
    QbaAdversary,
    RandomByzantine,
    ReplayStep,
    SignChoice,
    SilentAdversary,
    TamperingRelay,
    enumerate_leader_signings,
    round_one_pairs,
)
from qbfl.consensus.qba.dealing import TripleKeyDealer
from qbfl.consensus.qba.driver import QbaOutcome, run_qba
from qbfl.consensus.qba.messages import (
    QBA_DOC_MAX_BYTES,
    QBA_MAX_COMMITTEE,
    QBA_MAX_PATH,
    Accepted,
    Forwarded,
    InvalidQbaMessage,
    KeysRevealed,
    QbaMessage,
    QbaMode,
    SignedValue,
    TripleId,
)
from qbfl.consensus.qba.participant import QbaParticipant
from qbfl.consensus.qba.rules import (
    detectable_qds_operations,
    majority,
    paper_qds_operations,
    verifier_operations,
)

__all__ = [
    "QBA_DOC_MAX_BYTES",
    "QBA_MAX_COMMITTEE",
    "QBA_MAX_PATH",
    "Accepted",
    "EquivocatingLeader",
    "ForwardChoice",
    "Forwarded",
    "HonestAdversary",
    "InvalidQbaMessage",
    "KeyChoice",
    "KeysRevealed",
    "QbaAdversary",
    "QbaMessage",
    "QbaMode",
    "QbaOutcome",
    "QbaParticipant",
    "RandomByzantine",
    "ReplayStep",
    "SignChoice",
    "SignedValue",
    "SilentAdversary",
    "TamperingRelay",
    "TripleId",
    "TripleKeyDealer",
    "detectable_qds_operations",
    "enumerate_leader_signings",
    "majority",
    "paper_qds_operations",
    "round_one_pairs",
    "run_qba",
    "verifier_operations",
]
