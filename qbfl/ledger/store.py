"""Where a node keeps its chain: one interface, an in-memory store and a crash-safe SQLite store."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from os import PathLike
from typing import Any, Protocol

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


class LedgerUnavailable(QbflError):
    """The ledger file cannot be used now (locked, no permission, disk full, I/O error).

    Nothing says its contents are wrong, so unlike ChainCorrupted this must never lead to
    dropping blocks: fix the cause and open the file again.
    """


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
_TABLES = frozenset({"schema_version", "blocks"})
_ROWS = "SELECT height, hash, prev_hash, round, view, body FROM blocks ORDER BY height"

# SQLite result codes (primary code = errorcode & 0xff) that say the file cannot be used right
# now, not that its contents are wrong. Every other sqlite3.DatabaseError — SQLITE_CORRUPT
# ("database disk image is malformed"), SQLITE_NOTADB, a missing table or column — means the
# file does not hold what this store wrote, and becomes ChainCorrupted.
_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_INTERRUPT,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_NOLFS,
        sqlite3.SQLITE_AUTH,
    }
)


def sqlite_failure(
    exc: sqlite3.Error, path: str, what: str, height: int | None = None
) -> LedgerUnavailable | ChainCorrupted:
    """The project error for a sqlite3 error: LedgerUnavailable or ChainCorrupted(height)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _UNAVAILABLE:
        return LedgerUnavailable(f"{path}: {what}: {exc}")
    where = "the file" if height is None else f"block at height {height}"
    return ChainCorrupted(f"{path}: {where}: {what}: {exc}", height=height)


def _corrupt(path: str, height: int, why: str) -> ChainCorrupted:
    return ChainCorrupted(f"{path}: block at height {height}: {why}", height=height)


def _block_from_row(path: str, row: tuple[Any, ...], expected: int) -> Block | GenesisBlock:
    """The block of one stored row, checked on its own: the height expected, BLOB columns, the
    hash column = blake3(body), a body that decodes, indexed columns equal to the body's."""
    height, stored_hash, prev_hash, round_, view, body = row
    if height != expected:
        raise _corrupt(path, expected, f"missing block {expected} (next stored row: {height!r})")
    if not all(isinstance(v, bytes) for v in (stored_hash, prev_hash, body)):
        raise _corrupt(path, height, "hash, prev_hash and body must be BLOBs")
    if digest(body) != stored_hash:
        raise _corrupt(path, height, "stored hash differs from the hash of the stored bytes")
    block: Block | GenesisBlock
    try:
        if height == 0:
            block = GenesisBlock.decode(body)
            verify_genesis(block)
        else:
            block = Block.decode(body)
    except (EncodingError, InvalidSignature) as exc:
        raise _corrupt(path, height, str(exc)) from exc
    if isinstance(block, GenesisBlock):
        columns, expected_columns = (prev_hash, round_, view), (b"", 0, 0)
    else:
        columns = (prev_hash, round_, view)
        expected_columns = (block.prev_hash, block.round, block.view)
    if columns != expected_columns:
        raise _corrupt(path, height, "indexed columns disagree with the block")
    return block


def read_stored_chain(db: sqlite3.Connection, path: str) -> Iterator[Block | GenesisBlock]:
    """Yield a ledger file's chain from the genesis up, each block once it is known good.

    A block is known good when its row is intact on its own (`_block_from_row`) and — except for
    the head — the next row links to it. ChainCorrupted(height=h) names the first height that is
    not known good, so every block yielded before it is the valid prefix 0..h−1.

    A broken link between two intact rows h and h+1 is reported at h: block h+1 is what commits
    to h's hash (and is committed to by h+2, when there is one), so h is the block whose bytes
    changed — an edited body with its hash column recomputed. When h+1 is the head this cannot
    be told from an edited prev_hash in h+1; the blocks below h are sound either way. The genesis
    is the exception: its publisher signature vouches for it, so a bad link to it blames block 1.
    Lost rows at the top (a tail that never reached the disk) leave a shorter valid chain:
    only a comparison with peers can detect that.
    """
    pending: Block | GenesisBlock | None = None
    expected = 0
    try:
        rows = db.execute(_ROWS)
    except sqlite3.DatabaseError as exc:
        raise sqlite_failure(exc, path, "the blocks table cannot be read", 0) from exc
    while True:
        try:
            row = next(rows, None)
            if row is None:
                break
            block = _block_from_row(path, row, expected)
        except (sqlite3.DatabaseError, ChainCorrupted) as exc:
            # Row `expected` is damaged, not the one below: nothing commits to that one's hash,
            # as for a head, so it belongs to the valid prefix.
            if pending is not None:
                yield pending
            if isinstance(exc, ChainCorrupted):
                raise
            raise sqlite_failure(exc, path, "the row cannot be read", expected) from exc
        if pending is not None:
            assert isinstance(block, Block)  # only row 0 decodes as a genesis
            if block.prev_hash != pending.block_hash:
                blamed = expected if pending.height == 0 else pending.height
                raise _corrupt(
                    path, blamed, f"block {expected} does not link to block {pending.height}"
                )
            yield pending
        pending = block
        expected += 1
    if pending is None:
        raise _corrupt(path, 0, "the genesis is missing")
    yield pending


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_header(path: str) -> None:
    """ChainCorrupted for a non-empty file that does not start like an SQLite database.

    SQLite treats a file shorter than its 100-byte header as an empty database and would write a
    new one over it; an empty file is a new ledger (and a ledger truncated to nothing cannot be
    told from one: its loss shows only against peers).
    """
    try:
        with open(path, "rb") as file:
            head = file.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LedgerUnavailable(f"{path}: cannot read: {exc}") from exc
    if head and head != _SQLITE_MAGIC:
        raise ChainCorrupted(f"{path}: the file: not an SQLite database (starts {head!r})")


def check_schema(db: sqlite3.Connection, path: str) -> bool:
    """True for a file without tables (a new ledger); ChainCorrupted(height=None) unless the file
    has this store's tables and schema version (sqlite3 errors are the caller's to map)."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return True
    if not _TABLES.issubset(tables):
        raise ChainCorrupted(f"{path}: the file has tables {sorted(tables)}, not {sorted(_TABLES)}")
    versions = db.execute("SELECT version FROM schema_version").fetchall()
    if versions != [(SCHEMA_VERSION,)]:
        raise ChainCorrupted(f"{path}: schema version {versions}, expected [{SCHEMA_VERSION}]")
    return False


class SqliteLedgerStore:
    """A LedgerStore in one SQLite file: WAL, synchronous=FULL, one transaction per block.

    Each row holds the block's canonical bytes plus indexed columns (height, hash, prev_hash,
    round, view). Opening an existing file verifies the whole chain — genesis signature,
    every stored hash against the recomputed one, every link — and raises ChainCorrupted
    naming the first bad height (`read_stored_chain`); qbfl.ledger.recovery keeps the valid
    prefix of such a file. No sqlite3 error leaves this class: a damaged file is ChainCorrupted,
    a locked or unreadable one LedgerUnavailable. Pass `genesis` to create a new file; for an
    existing file it must match the stored one (GenesisMismatch otherwise).
    """

    def __init__(self, path: str | PathLike[str], genesis: GenesisBlock | None = None) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        _check_header(self._path)  # before SQLite writes a header over a damaged one
        try:
            # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE) below.
            self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise sqlite_failure(exc, self._path, "cannot open") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._genesis, self._head = self._open(genesis)
        except sqlite3.Error as exc:
            self._close_quietly()
            raise sqlite_failure(exc, self._path, "cannot read the ledger") from exc
        except BaseException:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def _open(self, genesis: GenesisBlock | None) -> tuple[GenesisBlock, Block | GenesisBlock]:
        if check_schema(self._db, self._path):  # a new (or empty) file
            if genesis is None:
                raise FileNotFoundError(
                    f"{self._path} holds no ledger; pass the genesis to create one"
                )
            self._create(genesis)
            return genesis, genesis
        stored_genesis: GenesisBlock | None = None
        head: Block | GenesisBlock | None = None
        for block in read_stored_chain(self._db, self._path):
            if isinstance(block, GenesisBlock):
                stored_genesis = block
            head = block
        assert stored_genesis is not None and head is not None  # read_stored_chain raises else
        if genesis is not None and genesis.block_hash != stored_genesis.block_hash:
            raise GenesisMismatch(
                f"{self._path} holds the chain of genesis {stored_genesis.block_hash.hex()[:16]}…, "
                f"not {genesis.block_hash.hex()[:16]}…"
            )
        return stored_genesis, head

    def _create(self, genesis: GenesisBlock) -> None:
        verify_genesis(genesis)
        body = genesis.encode()

        def create() -> None:
            for statement in _CREATE:
                self._db.execute(statement)
            self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            self._db.execute(
                "INSERT INTO blocks VALUES (0, ?, ?, 0, 0, ?)", (digest(body), b"", body)
            )

        self._transaction(create)

    def _transaction(self, work: Callable[[], None]) -> None:
        """Run `work` in one BEGIN IMMEDIATE … COMMIT; roll back on any error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            work()
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    @property
    def genesis(self) -> GenesisBlock:
        return self._genesis

    @property
    def height(self) -> int:
        return self._head.height

    def head(self) -> Block | GenesisBlock:
        return self._head

    def _decoded(self, height: int, row: tuple[Any, ...] | None) -> Block:
        """A block read after open: checked again, since the disk may have failed since."""
        if row is None:
            raise _corrupt(self._path, height, "the row verified on open is gone")
        stored_hash, body = row
        if not isinstance(body, bytes) or digest(body) != stored_hash:
            raise _corrupt(self._path, height, "stored hash differs from the hash of the body")
        try:
            block = Block.decode(body)
        except EncodingError as exc:
            raise _corrupt(self._path, height, str(exc)) from exc
        if block.height != height:
            raise _corrupt(self._path, height, f"the row holds block {block.height}")
        return block

    def get(self, height: int) -> Block | GenesisBlock:
        if height == 0:
            return self._genesis
        if height == self._head.height:
            return self._head
        if not 0 < height < self._head.height:
            raise KeyError(f"no block at height {height} (head is {self.height})")
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT hash, body FROM blocks WHERE height = ?", (height,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise sqlite_failure(exc, self._path, "cannot read", height) from exc
        return self._decoded(height, row)

    def range(self, start: int, stop: int) -> list[Block]:
        _check_range(start, stop)
        stop = min(stop, self._head.height + 1)  # rows beyond the head are not this store's
        if start >= stop:
            return []
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT height, hash, body FROM blocks WHERE height >= ? AND height < ? "
                    "ORDER BY height",
                    (start, stop),
                ).fetchall()
            except sqlite3.Error as exc:
                raise sqlite_failure(exc, self._path, "cannot read", start) from exc
        by_height = {h: (stored_hash, body) for h, stored_hash, body in rows}
        return [self._decoded(h, by_height.get(h)) for h in range(start, stop)]

    def append(self, block: Block) -> None:
        body = block.encode()
        block_hash = digest(body)

        def insert() -> None:
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

        with self._lock:
            _check_extends(block, self._head)
            try:
                self._transaction(insert)
            except sqlite3.Error as exc:
                raise sqlite_failure(
                    exc, self._path, f"cannot append block {block.height}"
                ) from exc
            self._head = block

    def close(self) -> None:
        with self._lock:
            self._close_quietly()

    def __enter__(self) -> SqliteLedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
