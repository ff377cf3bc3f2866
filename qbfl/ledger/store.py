"""Where a node keeps its chain: one interface, an in-memory store and a crash-safe SQLite store."""

from __future__ import annotations

import sqlite3
import threading
from os import PathLike
from typing import Protocol

from qbfl.errors import ChainCorrupted, InvalidSignature, QbflError
from qbfl.ledger.block import Block
from qbfl.ledger.encoding import EncodingError
from qbfl.ledger.genesis import GenesisBlock, verify_genesis
from qbfl.ledger.signer import digest

SCHEMA_VERSION = 1


class NotExtendingHead(QbflError):
    """A block was offered to a store but does not sit directly on its head."""


class GenesisMismatch(QbflError):
    """A ledger file belongs to a different task: its genesis is not the one expected."""


class LedgerStore(Protocol):
    """An append-only chain rooted in one genesis. Stores check links, not signatures
    (qbfl.ledger.chain.Chain verifies blocks before it appends them)."""

    @property
    def genesis(self) -> GenesisBlock: ...

    @property
    def height(self) -> int:
        """Height of the head; 0 when only the genesis is stored."""
        ...

    def head(self) -> Block | GenesisBlock: ...

    def get(self, height: int) -> Block | GenesisBlock: ...

    def range(self, start: int, stop: int) -> list[Block]:
        """Blocks at heights start ≤ h < stop (start ≥ 1), clipped to the head."""
        ...

    def append(self, block: Block) -> None:
        """Store `block` atomically; NotExtendingHead unless it sits directly on the head."""
        ...

    def close(self) -> None: ...


def _check_extends(block: Block, head: Block | GenesisBlock) -> None:
    if block.height != head.height + 1 or block.prev_hash != head.block_hash:
        raise NotExtendingHead(
            f"block {block.height} (prev {block.prev_hash.hex()[:16]}…) does not extend the "
            f"head at height {head.height} ({head.block_hash.hex()[:16]}…)"
        )


def _check_range(start: int, stop: int) -> None:
    if start < 1 or stop < start:
        raise ValueError(f"range({start}, {stop}): need 1 <= start <= stop")


class InMemoryLedgerStore:
    """A LedgerStore in a list: for simulation and tests."""

    def __init__(self, genesis: GenesisBlock) -> None:
        self._genesis = genesis
        self._blocks: list[Block] = []

    @property
    def genesis(self) -> GenesisBlock:
        return self._genesis

    @property
    def height(self) -> int:
        return len(self._blocks)

    def head(self) -> Block | GenesisBlock:
        return self._blocks[-1] if self._blocks else self._genesis

    def get(self, height: int) -> Block | GenesisBlock:
        if height == 0:
            return self._genesis
        if not 0 < height <= len(self._blocks):
            raise KeyError(f"no block at height {height} (head is {self.height})")
        return self._blocks[height - 1]

    def range(self, start: int, stop: int) -> list[Block]:
        _check_range(start, stop)
        return self._blocks[start - 1 : stop - 1]

    def append(self, block: Block) -> None:
        _check_extends(block, self.head())
        block.encode()  # a block that cannot be encoded must not enter the chain
        self._blocks.append(block)

    def close(self) -> None:
        pass


_CREATE = [
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE blocks (
        height    INTEGER PRIMARY KEY,
        hash      BLOB NOT NULL UNIQUE,
        prev_hash BLOB NOT NULL,
        round     INTEGER NOT NULL,
        view      INTEGER NOT NULL,
        body      BLOB NOT NULL
    )""",
    "CREATE INDEX blocks_round ON blocks (round, view)",
]


class SqliteLedgerStore:
    """A LedgerStore in one SQLite file: WAL, synchronous=FULL, one transaction per block.

    Each row holds the block's canonical bytes plus indexed columns (height, hash, prev_hash,
    round, view). Opening an existing file verifies the whole chain — genesis signature,
    every stored hash against the recomputed one, every link — and raises ChainCorrupted
    naming the first bad height. Pass `genesis` to create a new file; for an existing file it
    must match the stored one (GenesisMismatch otherwise).
    """

    def __init__(self, path: str | PathLike[str], genesis: GenesisBlock | None = None) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE) below.
        self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._genesis, self._head = self._open(genesis)
        except BaseException:
            self._db.close()
            raise

    def _open(self, genesis: GenesisBlock | None) -> tuple[GenesisBlock, Block | GenesisBlock]:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        if "blocks" not in tables:
            if genesis is None:
                raise FileNotFoundError(
                    f"{self._path} holds no ledger; pass the genesis to create one"
                )
            self._create(genesis)
            return genesis, genesis
        (version,) = self._db.execute("SELECT version FROM schema_version").fetchone() or (None,)
        if version != SCHEMA_VERSION:
            raise ChainCorrupted(
                f"{self._path}: schema version {version}, expected {SCHEMA_VERSION}"
            )
        stored_genesis, head = self._verify_stored_chain()
        if genesis is not None and genesis.block_hash != stored_genesis.block_hash:
            raise GenesisMismatch(
                f"{self._path} holds the chain of genesis {stored_genesis.block_hash.hex()[:16]}…, "
                f"not {genesis.block_hash.hex()[:16]}…"
            )
        return stored_genesis, head

    def _create(self, genesis: GenesisBlock) -> None:
        verify_genesis(genesis)
        body = genesis.encode()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _CREATE:
                self._db.execute(statement)
            self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            self._db.execute(
                "INSERT INTO blocks VALUES (0, ?, ?, 0, 0, ?)", (digest(body), b"", body)
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _verify_stored_chain(self) -> tuple[GenesisBlock, Block | GenesisBlock]:
        rows = self._db.execute(
            "SELECT height, hash, prev_hash, round, view, body FROM blocks ORDER BY height"
        )
        genesis: GenesisBlock | None = None
        head: Block | GenesisBlock | None = None
        for height, stored_hash, prev_hash, round_, view, body in rows:
            expected = 0 if head is None else head.height + 1

            def corrupt(why: str, h: int = height) -> ChainCorrupted:
                return ChainCorrupted(f"{self._path}: block at height {h}: {why}")

            if height != expected:
                raise corrupt(f"missing block {expected}", expected)
            if digest(body) != stored_hash:
                raise corrupt("stored hash differs from the hash of the stored bytes")
            try:
                if height == 0:
                    genesis = GenesisBlock.decode(body)
                    verify_genesis(genesis)
                    head = genesis
                    continue
                block = Block.decode(body)
            except (EncodingError, InvalidSignature) as exc:
                raise corrupt(str(exc)) from exc
            assert head is not None
            if (block.height, block.round, block.view) != (height, round_, view):
                raise corrupt("indexed columns disagree with the block")
            if block.prev_hash != head.block_hash or prev_hash != head.block_hash:
                raise corrupt("prev_hash does not link to the block below")
            head = block
        if genesis is None or head is None:
            raise ChainCorrupted(f"{self._path}: block at height 0: the genesis is missing")
        return genesis, head

    @property
    def genesis(self) -> GenesisBlock:
        return self._genesis

    @property
    def height(self) -> int:
        return self._head.height

    def head(self) -> Block | GenesisBlock:
        return self._head

    def get(self, height: int) -> Block | GenesisBlock:
        if height == 0:
            return self._genesis
        if height == self._head.height:
            return self._head
        with self._lock:
            row = self._db.execute("SELECT body FROM blocks WHERE height = ?", (height,)).fetchone()
        if row is None or height < 0:
            raise KeyError(f"no block at height {height} (head is {self.height})")
        return Block.decode(row[0])

    def range(self, start: int, stop: int) -> list[Block]:
        _check_range(start, stop)
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM blocks WHERE height >= ? AND height < ? ORDER BY height",
                (start, stop),
            ).fetchall()
        return [Block.decode(body) for (body,) in rows]

    def append(self, block: Block) -> None:
        body = block.encode()
        block_hash = digest(body)
        with self._lock:
            _check_extends(block, self._head)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # Another writer on the same file would break the single-writer assumption.
                (top,) = self._db.execute("SELECT MAX(height) FROM blocks").fetchone()
                if top != self._head.height:
                    raise NotExtendingHead(f"{self._path} changed underneath: head is now {top}")
                try:
                    self._db.execute(
                        "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?)",
                        (block.height, block_hash, block.prev_hash, block.round, block.view, body),
                    )
                except OverflowError as exc:
                    raise ValueError(
                        f"block {block.height}: round/view exceed SQLite's signed 64-bit integers"
                    ) from exc
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._head = block

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteLedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
