"""Child process for the crash test: appends a deterministic chain to a SQLite ledger until killed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from qbfl.ledger.block import Block, make_block
from qbfl.ledger.genesis import GenesisBlock
from qbfl.ledger.store import SqliteLedgerStore

UPDATE_FLOATS = 4842  # the MNIST MPO model's parameter count (DESIGN §4)


def intended_block(height: int, prev_hash: bytes) -> Block:
    """The block the writer means to put at `height`; links only, no signatures (stores don't check them)."""
    rng = np.random.default_rng(height)
    return make_block(
        height=height,
        round=height,
        view=height % 3,
        prev_hash=prev_hash,
        committee=(height % 8, (height + 1) % 8, (height + 2) % 8),
        selected=(height % 5, 5 + height % 3),
        update=rng.normal(size=UPDATE_FLOATS).astype("<f4").tobytes(),
    )


def intended_chain(genesis: GenesisBlock, n: int) -> list[Block]:
    chain: list[Block] = []
    for height in range(1, n + 1):
        chain.append(intended_block(height, chain[-1].block_hash if chain else genesis.block_hash))
    return chain


def main(db_path: str, genesis_path: str, limit: int) -> None:
    genesis = GenesisBlock.decode(Path(genesis_path).read_bytes())
    store = SqliteLedgerStore(db_path, genesis)
    print(f"start {store.height}", flush=True)
    while store.height < limit:
        head = store.head()
        store.append(intended_block(head.height + 1, head.block_hash))
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
