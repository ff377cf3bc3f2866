"""The Blake3-chained ledger: canonical encoding, blocks, genesis, verification and the SQLite store."""

from qbfl.ledger.block import (
    BLOCK_CONTEXT,
    UPDATE_CONTEXT,
    VOTE_CONTEXT,
    Block,
    CommitteeVote,
    ConsensusMessage,
    UpdateSubmission,
    check_update,
    make_block,
)
from qbfl.ledger.chain import BlockDefect, Chain, InvalidBlock, verify_block, verify_chain
from qbfl.ledger.encoding import EncodingError
from qbfl.ledger.genesis import (
    GENESIS_CONTEXT,
    DpSettings,
    GenesisBlock,
    QbaMode,
    RosterEntry,
    TaskName,
    TaskSpec,
    make_genesis,
    verify_genesis,
)
from qbfl.ledger.recovery import RecoveryReport, recover_ledger
from qbfl.ledger.signer import Signer, digest
from qbfl.ledger.store import (
    GenesisMismatch,
    InMemoryLedgerStore,
    LedgerStore,
    LedgerUnavailable,
    NotExtendingHead,
    SqliteLedgerStore,
)

__all__ = [
    "BLOCK_CONTEXT",
    "GENESIS_CONTEXT",
    "UPDATE_CONTEXT",
    "VOTE_CONTEXT",
    "Block",
    "BlockDefect",
    "Chain",
    "CommitteeVote",
    "ConsensusMessage",
    "DpSettings",
    "EncodingError",
    "GenesisBlock",
    "GenesisMismatch",
    "InMemoryLedgerStore",
    "InvalidBlock",
    "LedgerStore",
    "LedgerUnavailable",
    "NotExtendingHead",
    "QbaMode",
    "RecoveryReport",
    "RosterEntry",
    "Signer",
    "SqliteLedgerStore",
    "TaskName",
    "TaskSpec",
    "UpdateSubmission",
    "check_update",
    "digest",
    "make_block",
    "make_genesis",
    "recover_ledger",
    "verify_block",
    "verify_chain",
    "verify_genesis",
]
