"""What a node process builds from its files and its genesis: identity key, ledger, runtime.

`load_or_create_key` (the ML-DSA-44 identity in `node.key`), `held_genesis` (the genesis of a
ledger already on disk, to resume from), `open_store` (the ledger, verified again, a damaged one
cut back to its verified prefix) and `build_runtime` (consensus node, QBA sessions over the QKD
links, learner, ledger writer). NodeShell (qbfl.node.process) runs them in this order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from qbfl.consensus.qba import QbaMode
from qbfl.consensus.round import ConsensusNode
from qbfl.consensus.viewstate import RoundTimeouts
from qbfl.crypto.qds import QdsParams
from qbfl.crypto.signing import SigningKey, load_seed, save_seed
from qbfl.errors import ChainCorrupted
from qbfl.ledger.chain import Chain, InvalidBlock
from qbfl.ledger.genesis import GenesisBlock
from qbfl.ledger.recovery import recover_ledger
from qbfl.ledger.store import LedgerStore, SqliteLedgerStore
from qbfl.node.config import NodeConfig
from qbfl.node.learner import Learner
from qbfl.node.ledgerwriter import LedgerWriter
from qbfl.node.qbakeys import NodeQbaSessions, PreparedPolynomials, seeded_secret
from qbfl.node.qkdkeys import KeyEvidence, NetworkTripleDealer
from qbfl.node.qkdlink import QkdLinks
from qbfl.node.runtime import NodeRuntime

log = logging.getLogger("qbfl.node")

KEY_FILE = "node.key"
LEDGER_FILE = "ledger.sqlite"
RELAY_FANOUT = 2  # peers each node relays a new block to (the leader itself sends it to all)
KEY_WAIT_S = 10.0  # how long a leader waits for a QKD session before its view gives up


def load_or_create_key(directory: Path) -> SigningKey:
    """The node's ML-DSA-44 identity: `node.key` (a 32-byte seed, mode 0600), created on first start."""
    path = directory / KEY_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        save_seed(path, os.urandom(32))
        log.info("created a new identity key %s", path)
    return SigningKey.from_seed(load_seed(path))


def held_genesis(path: Path) -> GenesisBlock | None:
    """The genesis of the ledger at `path`, if one is there and readable (a damaged ledger is
    recovered by `open_store` once the publisher's genesis is known)."""
    if not path.exists():
        return None
    try:
        with SqliteLedgerStore(path) as existing:
            return existing.genesis
    except ChainCorrupted:
        return None


def open_store(path: Path, genesis: GenesisBlock, node_id: int) -> SqliteLedgerStore:
    """Open the ledger; a damaged one is cut back to its verified prefix (the damaged file is
    kept aside) and the start-up sync fetches the rest from peers (docs/ledger.md §4)."""
    store: SqliteLedgerStore | None = None
    try:
        store = SqliteLedgerStore(path, genesis)
        Chain(store)  # every stored block verified again: signatures, committees, stakes
        return store
    except (ChainCorrupted, InvalidBlock) as exc:
        if store is not None:
            store.close()
        report = recover_ledger(path, genesis)
        log.warning(
            "node %d: ledger damaged (%s); kept the verified blocks up to height %d, moved "
            "the damaged file to %s; the rest is fetched from peers",
            node_id,
            exc,
            report.kept_height,
            report.moved_to,
        )
        return SqliteLedgerStore(path, genesis)


def build_runtime(
    config: NodeConfig,
    key: SigningKey,
    genesis: GenesisBlock,
    store: LedgerStore,
    *,
    links: QkdLinks | None,
    evidence: KeyEvidence,
    polys: PreparedPolynomials,
    clock: Callable[[], float],
) -> NodeRuntime:
    """The node's protocol state: QBA keys from the QKD `links` (None: `--qkd seeded`)."""
    task = genesis.task
    roles = config.roles
    node_id = config.node_id

    def dealer(round: int, view: int) -> NetworkTripleDealer | None:
        if links is None:
            return None  # --qkd seeded: keys assumed distributed
        return NetworkTripleDealer(
            me=node_id,
            key=key,
            network=genesis.block_hash,
            round=round,
            view=view,
            links=links,
            evidence=evidence,
            public_keys=genesis.public_keys,
            params=QdsParams(),
            wait_s=KEY_WAIT_S,
        )

    qba = NodeQbaSessions(
        mode=QbaMode(str(task.qba_mode)),
        f=task.committee_faults,
        secret=seeded_secret(genesis.block_hash),
        polys=polys,
        dealers=dealer,
    )
    node = ConsensusNode(
        node_id,
        key,
        genesis,
        qba=qba,
        clock=clock,
        timeouts=RoundTimeouts.scaled(task.round_timeout_s),
        relay_fanout=RELAY_FANOUT,
        policy=roles.policy(seed=task.seed * 1_000_003 + node_id),
    )
    learner = Learner(
        genesis,
        node_id,
        attack=roles.model,
        dp=config.dp,
        dp_accounting=config.dp_accounting,
        device=config.device,
        data_dir=config.dataset_dir,
    )
    return NodeRuntime(node, store, learner, clock=clock, writer=LedgerWriter(store))
