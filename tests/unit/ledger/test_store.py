"""One contract suite for every LedgerStore, plus SQLite durability and tamper detection."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qbfl.crypto.signing import SigningKey
from qbfl.errors import ChainCorrupted
from qbfl.ledger.block import Block
from qbfl.ledger.genesis import GenesisBlock
from qbfl.ledger.store import (
    GenesisMismatch,
    InMemoryLedgerStore,
    LedgerStore,
    NotExtendingHead,
    SqliteLedgerStore,
)

from .conftest import build_chain

StoreFactory = Callable[[GenesisBlock], LedgerStore]


@pytest.fixture(scope="module")
def blocks(genesis: GenesisBlock, keys: dict[int, SigningKey]) -> list[Block]:
    return build_chain(genesis, keys, 6, seed=5, views={3: 2})


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[LedgerStore] = []

    def factory(genesis: GenesisBlock) -> LedgerStore:
        store: LedgerStore
        if request.param == "memory":
            store = InMemoryLedgerStore(genesis)
        else:
            store = SqliteLedgerStore(tmp_path / f"ledger{len(opened)}.db", genesis)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def test_empty_store_has_genesis_as_head(make_store: StoreFactory, genesis: GenesisBlock) -> None:
    store = make_store(genesis)
    assert store.height == 0
    assert store.head() == store.get(0) == store.genesis == genesis
    assert store.range(1, 10) == []


def test_append_get_range(
    make_store: StoreFactory, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    store = make_store(genesis)
    for block in blocks:
        store.append(block)
        assert store.head() == block and store.height == block.height
    assert [store.get(h) for h in range(1, 7)] == blocks
    assert store.range(2, 5) == blocks[1:4]
    assert store.range(5, 100) == blocks[4:]
    assert store.range(3, 3) == []
    with pytest.raises(KeyError):
        store.get(7)
    with pytest.raises(ValueError):
        store.range(0, 3)


@pytest.mark.parametrize(
    "bad",
    [
        lambda bs: bs[1],  # skips a height
        lambda bs: dataclasses.replace(bs[0], prev_hash=b"\x07" * 32),  # wrong link
        lambda bs: dataclasses.replace(bs[0], height=0),
    ],
)
def test_append_refuses_blocks_not_on_head(
    make_store: StoreFactory,
    genesis: GenesisBlock,
    blocks: list[Block],
    bad: Callable[[list[Block]], Block],
) -> None:
    store = make_store(genesis)
    with pytest.raises(NotExtendingHead):
        store.append(bad(blocks))
    assert store.height == 0
    store.append(blocks[0])
    with pytest.raises(NotExtendingHead):
        store.append(blocks[0])  # the same block twice
    assert store.height == 1


def test_unencodable_block_is_not_half_written(
    make_store: StoreFactory, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    store = make_store(genesis)
    broken = dataclasses.replace(blocks[0], selected=(5, 2))  # unsorted: no canonical form
    with pytest.raises(ValueError):
        store.append(broken)
    assert store.height == 0 and store.head() == genesis
    store.append(blocks[0])
    assert store.get(1) == blocks[0]


# --- SQLite only ---------------------------------------------------------------------------


def _filled(path: Path, genesis: GenesisBlock, blocks: list[Block]) -> None:
    with SqliteLedgerStore(path, genesis) as store:
        for block in blocks:
            store.append(block)


def test_sqlite_reopens_with_same_chain(
    tmp_path: Path, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    path = tmp_path / "l.db"
    _filled(path, genesis, blocks)
    with SqliteLedgerStore(path) as store:
        assert store.genesis == genesis and store.height == 6
        assert store.range(1, 7) == blocks
    with SqliteLedgerStore(path, genesis) as store:
        assert store.head() == blocks[-1]
        mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = store._db.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 2)  # 2 = FULL


def test_sqlite_refuses_other_genesis_and_missing_file(
    tmp_path: Path, genesis: GenesisBlock, publisher_key: SigningKey
) -> None:
    path = tmp_path / "l.db"
    _filled(path, genesis, [])
    other = dataclasses.replace(genesis, publisher_signature=None)
    other = dataclasses.replace(
        other,
        publisher_signature=publisher_key.sign(other.signing_payload(), context=b"qbfl/genesis/v1"),
    )
    assert other.block_hash != genesis.block_hash  # ML-DSA signing is hedged
    with pytest.raises(GenesisMismatch):
        SqliteLedgerStore(path, other)
    with pytest.raises(FileNotFoundError, match="pass the genesis"):
        SqliteLedgerStore(tmp_path / "new.db")


def _flip_byte(path: Path, height: int, offset: int, column: str = "body") -> None:
    db = sqlite3.connect(path)
    (value,) = db.execute(f"SELECT {column} FROM blocks WHERE height = ?", (height,)).fetchone()
    tampered = bytearray(value)
    tampered[offset % len(tampered)] ^= 0x40
    db.execute(f"UPDATE blocks SET {column} = ? WHERE height = ?", (bytes(tampered), height))
    db.commit()
    db.close()


@pytest.mark.parametrize("height", [0, 1, 4, 6])
@pytest.mark.parametrize("offset", [0, 3, 17, 200, -1])
def test_sqlite_detects_any_tampered_byte(
    tmp_path: Path, genesis: GenesisBlock, blocks: list[Block], height: int, offset: int
) -> None:
    path = tmp_path / "l.db"
    _filled(path, genesis, blocks)
    _flip_byte(path, height, offset)
    with pytest.raises(ChainCorrupted, match=f"height {height}"):
        SqliteLedgerStore(path)


def test_sqlite_detects_rewritten_hash_column_and_deleted_block(
    tmp_path: Path, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    path = tmp_path / "l.db"
    _filled(path, genesis, blocks)
    # Re-hash a tampered block consistently: its successor's link still exposes it.
    from qbfl.ledger.signer import digest

    db = sqlite3.connect(path)
    forged = dataclasses.replace(blocks[2], view=blocks[2].view + 1).encode()
    db.execute(
        "UPDATE blocks SET body = ?, hash = ?, view = view + 1 WHERE height = 3",
        (forged, digest(forged)),
    )
    db.commit()
    # Reported at 3, the block whose bytes changed: block 4 is what commits to 3's hash (issue 10,
    # finding 9; it was reported at 4 before).
    with pytest.raises(ChainCorrupted, match="height 3") as caught:
        SqliteLedgerStore(path)
    assert caught.value.height == 3
    db.execute("DELETE FROM blocks WHERE height = 3")
    db.commit()
    db.close()
    with pytest.raises(ChainCorrupted, match="height 3"):
        SqliteLedgerStore(path)


def test_a_consistently_forged_head_passes_the_store_but_not_the_chain(
    tmp_path: Path, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    # The head has no successor whose link would expose a re-hashed body; the committee votes do.
    from qbfl.ledger.chain import Chain, InvalidBlock
    from qbfl.ledger.signer import digest

    path = tmp_path / "l.db"
    _filled(path, genesis, blocks)
    head = blocks[-1]
    forged_update = bytes([head.update[0] ^ 1]) + head.update[1:]
    forged = dataclasses.replace(head, update=forged_update, update_hash=digest(forged_update))
    body = forged.encode()
    db = sqlite3.connect(path)
    db.execute(
        "UPDATE blocks SET body = ?, hash = ? WHERE height = ?", (body, digest(body), head.height)
    )
    db.commit()
    db.close()
    with SqliteLedgerStore(path) as store:  # hashes and links are consistent again
        assert store.head().block_hash != head.block_hash
        with pytest.raises(InvalidBlock) as caught:
            Chain(store)  # what a node opens: full verification, signatures included
    assert caught.value.height == head.height


def test_sqlite_rolls_back_a_failed_insert(
    tmp_path: Path, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    path = tmp_path / "l.db"
    with SqliteLedgerStore(path, genesis) as store:
        store.append(blocks[0])
        with pytest.raises(ValueError, match="64-bit"):
            store.append(
                dataclasses.replace(blocks[1], round=2**63)
            )  # fails inside the transaction
        assert store.height == 1
        store.append(blocks[1])
    with SqliteLedgerStore(path) as store:
        assert store.range(1, 3) == blocks[:2]
