"""qbfl-bench ledger: append and verify-on-open rates, in-memory vs SQLite, with MNIST-sized blocks."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from qbfl.bench.report import emit
from qbfl.consensus.stakes import StakeLedger
from qbfl.crypto.signing import SigningKey
from qbfl.ledger.block import Block, make_block
from qbfl.ledger.chain import Chain
from qbfl.ledger.genesis import GenesisBlock, RosterEntry, TaskSpec, make_genesis
from qbfl.ledger.signer import digest
from qbfl.ledger.store import InMemoryLedgerStore, LedgerStore, SqliteLedgerStore

PARAMS = 4842  # MPO-FCNN for MNIST (DESIGN §4)
NODES = 50
COMMITTEE = 5


def build_chain(n_blocks: int, seed: int) -> tuple[GenesisBlock, list[Block]]:
    """A valid chain: the right committees, all five members' real ML-DSA votes on every block."""
    rng = np.random.default_rng(seed)
    keys = {
        i: SigningKey.from_seed(seed.to_bytes(4, "big") + i.to_bytes(28, "big"))
        for i in range(NODES)
    }
    task = TaskSpec(
        task="mnist",
        model="mpo-fcnn",
        n_nodes=NODES,
        rounds=n_blocks,
        seed=seed,
        lr=0.05,
        committee_size=COMMITTEE,
    )
    roster = [RosterEntry(i, k.public_key, f"127.0.0.1:{50000 + i}") for i, k in keys.items()]
    params = rng.normal(scale=0.05, size=PARAMS).astype("<f4").tobytes()
    genesis = make_genesis(task, params, roster, SigningKey.from_seed(b"\x99" * 32))
    ledger = StakeLedger(genesis)
    blocks = []
    for height in range(1, n_blocks + 1):
        view = int(rng.random() < 0.1)  # one round in ten needs a view change
        committee = ledger.committee(view).members
        selected = rng.choice(NODES, size=NODES - int(0.4 * NODES) - 2, replace=False)
        draft = make_block(
            height=height,
            round=height,
            view=view,
            prev_hash=ledger.head_hash,
            committee=committee,
            selected=tuple(int(s) for s in selected),
            update=rng.normal(scale=1e-3, size=PARAMS).astype("<f4").tobytes(),
        )
        message = draft.consensus_message()
        votes = tuple(message.sign_vote(m, keys[m]) for m in sorted(committee))
        block = dataclasses.replace(draft, votes=votes).signed_by_leader(keys[committee[0]])
        ledger.apply(block)
        blocks.append(block)
    return genesis, blocks


def _rate(n: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    return n / elapsed, result


def _append_all(store: LedgerStore, blocks: list[Block]) -> None:
    for block in blocks:
        store.append(block)


def _accept_all(chain: Chain, blocks: list[Block]) -> None:
    for block in blocks:
        chain.accept(block)


def _fresh(block: Block) -> Block:
    """A copy without the cached hash, so every timing pays for its own hashing."""
    return dataclasses.replace(block)


def measure(n_blocks: int, seed: int, workdir: Path) -> list[dict[str, Any]]:
    genesis, blocks = build_chain(n_blocks, seed)
    encoded = [b.encode() for b in blocks]
    rows: list[dict[str, Any]] = []

    def row(operation: str, memory: float | None, sqlite: float | None) -> None:
        rows.append(
            {
                "operation": operation,
                "memory_blocks_per_s": round(memory, 1) if memory else "",
                "sqlite_blocks_per_s": round(sqlite, 1) if sqlite else "",
                "sqlite/memory": round(sqlite / memory, 4) if memory and sqlite else "",
            }
        )

    encode_rate, _ = _rate(n_blocks, lambda: [_fresh(b).encode() for b in blocks])
    decode_rate, _ = _rate(n_blocks, lambda: [Block.decode(raw) for raw in encoded])
    hash_rate, _ = _rate(n_blocks, lambda: [digest(raw) for raw in encoded])
    row("encode", encode_rate, None)
    row("decode", decode_rate, None)
    row("blake3 of encoded block", hash_rate, None)

    memory_rate, _ = _rate(
        n_blocks, lambda: _append_all(InMemoryLedgerStore(genesis), [_fresh(b) for b in blocks])
    )
    sqlite_path = workdir / "bench-ledger.db"
    store = SqliteLedgerStore(sqlite_path, genesis)
    sqlite_rate, _ = _rate(n_blocks, lambda: _append_all(store, [_fresh(b) for b in blocks]))
    store.close()
    row("append (store only, links checked)", memory_rate, sqlite_rate)

    memory_chain = Chain(InMemoryLedgerStore(genesis))
    sqlite_chain = Chain(SqliteLedgerStore(workdir / "bench-ledger-verified.db", genesis))
    accept_memory, _ = _rate(
        n_blocks, lambda: _accept_all(memory_chain, [_fresh(b) for b in blocks])
    )
    accept_sqlite, _ = _rate(
        n_blocks, lambda: _accept_all(sqlite_chain, [_fresh(b) for b in blocks])
    )
    sqlite_chain.store.close()
    row(
        "append via Chain.accept (full verify: committee, 5 ML-DSA votes, leader sig)",
        accept_memory,
        accept_sqlite,
    )

    open_rate, reopened = _rate(n_blocks, lambda: SqliteLedgerStore(sqlite_path))
    row("open + verify hashes/links/genesis sig", None, open_rate)
    rebuild_memory, _ = _rate(n_blocks, lambda: Chain(memory_chain.store))
    rebuild_sqlite, _ = _rate(n_blocks, lambda: Chain(reopened))
    reopened.close()
    row("Chain rebuild (full verify of every stored block)", rebuild_memory, rebuild_sqlite)
    rows.append(
        {
            "operation": f"block size: {len(encoded[0])} bytes ({PARAMS} float32 + 5 votes + leader sig)",
            "memory_blocks_per_s": "",
            "sqlite_blocks_per_s": "",
            "sqlite/memory": "",
        }
    )
    return rows


@click.command(name="ledger", help="Ledger append and verify-on-open rates, in-memory vs SQLite.")
@click.option("--blocks", "n_blocks", default=500, show_default=True, help="Blocks in the chain.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the SQLite files go (default: a temporary folder; pick a real disk, not tmpfs).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the JSON document instead of the table."
)
def command(n_blocks: int, seed: int, workdir: Path | None, as_json: bool) -> None:
    if n_blocks < 1:
        raise click.BadParameter("--blocks must be at least 1")
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qbfl-bench-ledger-", dir=workdir) as tmp:
        rows = measure(n_blocks, seed, Path(tmp))
    emit(
        "ledger",
        rows,
        as_json=as_json,
        title=f"Ledger: {n_blocks} blocks, N={NODES}, Nc={COMMITTEE}, {PARAMS} parameters",
        extra={"blocks": n_blocks, "nodes": NODES, "committee": COMMITTEE, "params": PARAMS},
    )
