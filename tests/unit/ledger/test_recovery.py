"""Issue 10, finding 9: a damaged ledger file raises ChainCorrupted naming the height, never a raw
sqlite3 error or TypeError, and recover_ledger keeps exactly its valid prefix.

Before the fix, 5–7 of 400 random bit flips and 18–19 of 19 truncations of a small ledger raised
raw sqlite3.DatabaseError, a dropped schema_version table OperationalError, a text or integer body
TypeError, and an edited middle body with a recomputed hash column was reported one height late.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qbfl.crypto.signing import SigningKey
from qbfl.errors import ChainCorrupted
from qbfl.ledger.block import Block
from qbfl.ledger.chain import Chain
from qbfl.ledger.genesis import GENESIS_CONTEXT, GenesisBlock
from qbfl.ledger.recovery import BUILT_SUFFIX, RecoveryReport, recover_ledger
from qbfl.ledger.signer import digest
from qbfl.ledger.store import (
    GenesisMismatch,
    LedgerUnavailable,
    SqliteLedgerStore,
    sqlite_failure,
)

from .conftest import build_chain

N_BLOCKS = 6
# The sweeps write a few hundred small ledgers with synchronous=FULL: on tmpfs the fsyncs cost
# nothing, which keeps the default run short. Durability is not what they test.
_FAST_DIR = Path("/dev/shm")


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    if not (_FAST_DIR.is_dir() and os.access(_FAST_DIR, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="qbfl-ledger-sweep-", dir=_FAST_DIR))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def blocks(genesis: GenesisBlock, keys: dict[int, SigningKey]) -> list[Block]:
    return build_chain(genesis, keys, N_BLOCKS, seed=5, views={3: 2})


@pytest.fixture(scope="module")
def pristine(
    tmp_path_factory: pytest.TempPathFactory, genesis: GenesisBlock, blocks: list[Block]
) -> bytes:
    """The bytes of a cleanly closed ledger file (WAL checkpointed into it)."""
    path = tmp_path_factory.mktemp("pristine") / "ledger.sqlite"
    with SqliteLedgerStore(path, genesis) as store:
        for block in blocks:
            store.append(block)
    assert not path.with_name(path.name + "-wal").exists()
    return path.read_bytes()


def _opened_height(path: Path, genesis: GenesisBlock, blocks: list[Block]) -> int | None:
    """Open `path`: its height when the chain read is a prefix of `blocks`, None on
    ChainCorrupted (any other exception fails the test)."""
    try:
        store = SqliteLedgerStore(path)
    except ChainCorrupted:
        return None
    with store:
        assert store.genesis == genesis
        assert store.range(1, store.height + 1) == blocks[: store.height]
        return store.height


def _check_recovery(
    path: Path,
    genesis: GenesisBlock,
    blocks: list[Block],
    damaged: bytes,
    expected_kept: int | None,
) -> RecoveryReport:
    """Recover `path` and check: the kept prefix is exactly the original one, verified in full by
    Chain; the damaged bytes were moved aside, not deleted."""
    report = recover_ledger(path, genesis)
    if expected_kept is not None:
        assert report.kept_height == expected_kept, report
    with SqliteLedgerStore(path, genesis) as store:
        assert store.height == report.kept_height
        assert store.range(1, store.height + 1) == blocks[: store.height]
        Chain(store)  # signatures and committees too
    if report.moved_to is not None:
        assert (report.moved_to / path.name).read_bytes() == damaged
    return report


def _write(tmp_path: Path, data: bytes) -> Path:
    folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    path = folder / "ledger.sqlite"
    path.write_bytes(data)
    return path


def _sweep(
    tmp_path: Path,
    genesis: GenesisBlock,
    blocks: list[Block],
    cases: list[bytes],
) -> dict[str, int]:
    outcomes = {"opened": 0, "corrupted": 0, "file-level": 0}
    for damaged in cases:
        path = _write(tmp_path, damaged)
        try:
            height = _opened_height(path, genesis, blocks)
            if height is not None:
                outcomes["opened"] += 1
                report = _check_recovery(path, genesis, blocks, damaged, height)
                assert not report.recovered
                continue
            with pytest.raises(ChainCorrupted) as caught:
                SqliteLedgerStore(path)
            bad = caught.value.height
            outcomes["corrupted" if bad is not None else "file-level"] += 1
            # Blocks below the reported height are the valid prefix: recovery keeps exactly them.
            report = _check_recovery(
                path, genesis, blocks, damaged, None if bad is None else max(bad - 1, 0)
            )
            assert report.recovered
        finally:
            shutil.rmtree(path.parent)
    return outcomes


def _flips(pristine: bytes, count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        damaged = bytearray(pristine)
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        cases.append(bytes(damaged))
    return cases


def test_seeded_bit_flips_raise_chain_corrupted_and_recover_to_the_valid_prefix(
    scratch: Path, pristine: bytes, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    outcomes = _sweep(scratch, genesis, blocks, _flips(pristine, 200, seed=2024))
    assert outcomes["corrupted"] > 100  # most flips land in a block and are caught there


@pytest.mark.slow
def test_many_more_bit_flips(
    scratch: Path, pristine: bytes, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    _sweep(scratch, genesis, blocks, _flips(pristine, 3000, seed=7))


def test_truncations_raise_chain_corrupted_and_recover(
    scratch: Path, pristine: bytes, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    cases = [pristine[: len(pristine) * k // 20] for k in range(1, 20)]
    cases += [pristine[:k] for k in (1, 99, 100, 101, 4095, 4096, 4097, len(pristine) - 1)]
    outcomes = _sweep(scratch, genesis, blocks, cases)
    assert outcomes["opened"] == 0


def _edited(pristine: bytes, tmp_path: Path, sql: str, *args: object) -> Path:
    path = _write(tmp_path, pristine)
    db = sqlite3.connect(path)
    db.execute(sql, args)
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize(
    ("sql", "args", "height"),
    [
        ("DROP TABLE schema_version", (), None),
        ("UPDATE schema_version SET version = 'one'", (), None),
        ("UPDATE blocks SET body = 'text, not a blob' WHERE height = 3", (), 3),
        ("UPDATE blocks SET body = 12345 WHERE height = 3", (), 3),
        ("UPDATE blocks SET hash = 7 WHERE height = 2", (), 2),
        ("UPDATE blocks SET view = 'x' WHERE height = 5", (), 5),
        ("UPDATE blocks SET prev_hash = zeroblob(32) WHERE height = 4", (), 4),
        ("DELETE FROM blocks WHERE height = 0", (), 0),
    ],
)
def test_schema_and_column_damage_is_chain_corrupted(
    tmp_path: Path,
    pristine: bytes,
    genesis: GenesisBlock,
    blocks: list[Block],
    sql: str,
    args: tuple[object, ...],
    height: int | None,
) -> None:
    path = _edited(pristine, tmp_path, sql, *args)
    with pytest.raises(ChainCorrupted) as caught:
        SqliteLedgerStore(path)
    assert caught.value.height == height
    if height is not None:
        assert f"height {height}" in str(caught.value)
    # A damaged schema alone loses no block: the rebuilt file holds all of them.
    report = _check_recovery(
        path, genesis, blocks, path.read_bytes(), N_BLOCKS if height is None else max(height - 1, 0)
    )
    assert report.recovered
    assert report.first_bad_height == height


def test_an_edited_middle_block_with_its_hash_recomputed_is_reported_at_its_own_height(
    tmp_path: Path, pristine: bytes, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    forged = dataclasses.replace(blocks[2], update=bytes(24))
    body = forged.encode()
    path = _edited(
        pristine,
        tmp_path,
        "UPDATE blocks SET body = ?, hash = ? WHERE height = 3",
        body,
        digest(body),
    )
    with pytest.raises(ChainCorrupted, match="height 3") as caught:
        SqliteLedgerStore(path)
    assert caught.value.height == 3  # not 4: block 4 still commits to the original block 3
    report = _check_recovery(path, genesis, blocks, path.read_bytes(), 2)
    assert (report.first_bad_height, report.stored_height) == (3, N_BLOCKS)


def test_a_lost_tail_is_invisible_locally(
    tmp_path: Path, pristine: bytes, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    """Rows (or WAL frames) that never reached the disk leave a shorter valid chain: nothing in
    the file can tell, only peers (docs/ledger.md §4). Recovery leaves such a file alone."""
    path = _edited(pristine, tmp_path, "DELETE FROM blocks WHERE height >= 5")
    assert _opened_height(path, genesis, blocks) == 4
    report = recover_ledger(path, genesis)
    assert (report.kept_height, report.recovered, report.first_bad_height) == (4, False, None)


def test_recovery_needs_the_genesis_only_when_the_stored_one_is_lost(
    tmp_path: Path, pristine: bytes, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    damaged = b"\x00" * 100 + pristine[100:]  # the SQLite header is gone
    path = _write(tmp_path, damaged)
    with pytest.raises(ChainCorrupted) as caught:
        SqliteLedgerStore(path)
    assert caught.value.height is None
    with pytest.raises(ChainCorrupted, match="pass the publisher's genesis"):
        recover_ledger(path)
    assert path.read_bytes() == damaged  # nothing moved
    report = _check_recovery(path, genesis, blocks, damaged, 0)
    assert report.moved_to == path.with_name(path.name + ".corrupt-1")


def test_recovery_refuses_another_tasks_file_and_keeps_each_damaged_copy(
    tmp_path: Path,
    pristine: bytes,
    genesis: GenesisBlock,
    blocks: list[Block],
    publisher_key: SigningKey,
) -> None:
    path = _edited(pristine, tmp_path, "UPDATE blocks SET body = x'00' WHERE height = 6")
    # The same task signed again: ML-DSA is hedged, so this is another genesis (hash).
    signature = publisher_key.sign(genesis.signing_payload(), context=GENESIS_CONTEXT)
    other = dataclasses.replace(genesis, publisher_signature=signature)
    assert other.block_hash != genesis.block_hash
    with pytest.raises(GenesisMismatch):
        recover_ledger(path, other)
    first = _check_recovery(path, genesis, blocks, path.read_bytes(), 5)
    # Damage the recovered file again: the first copy stays, the second goes beside it.
    db = sqlite3.connect(path)
    db.execute("UPDATE blocks SET body = x'00' WHERE height = 5")
    db.commit()
    db.close()
    second = _check_recovery(path, genesis, blocks, path.read_bytes(), 4)
    assert first.moved_to is not None and second.moved_to is not None
    assert first.moved_to.name.endswith(".corrupt-1") and second.moved_to.name.endswith(
        ".corrupt-2"
    )
    assert (first.moved_to / path.name).exists()


def test_an_interrupted_recovery_is_finished_by_the_next_call(
    tmp_path: Path, pristine: bytes, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    path = _write(tmp_path, pristine)
    built = path.with_name(path.name + BUILT_SUFFIX)
    # As if the process died after moving the damaged file aside, before the last rename.
    path.rename(built)
    stale = b"stale frames of the damaged file"
    path.with_name(path.name + "-wal").write_bytes(stale)
    report = recover_ledger(path, genesis)
    assert not report.recovered and report.kept_height == N_BLOCKS
    # The damaged file's WAL must not be replayed into the new ledger: it went aside.
    aside = path.with_name(path.name + ".corrupt-1") / (path.name + "-wal")
    assert aside.read_bytes() == stale
    with SqliteLedgerStore(path, genesis) as store:
        assert store.range(1, N_BLOCKS + 1) == blocks


def test_reads_after_open_check_the_row_again(
    tmp_path: Path, pristine: bytes, genesis: GenesisBlock, blocks: list[Block]
) -> None:
    path = _write(tmp_path, pristine)
    with SqliteLedgerStore(path) as store:
        db = sqlite3.connect(path)
        db.execute("UPDATE blocks SET body = 'gone' WHERE height = 2")
        db.commit()
        db.close()
        for read in (lambda: store.get(2), lambda: store.range(1, 4)):
            with pytest.raises(ChainCorrupted, match="height 2"):
                read()
        assert store.get(1) == blocks[0]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (sqlite3.SQLITE_BUSY, LedgerUnavailable),
        (sqlite3.SQLITE_IOERR | (2 << 8), LedgerUnavailable),  # SQLITE_IOERR_SHORT_READ
        (sqlite3.SQLITE_CANTOPEN, LedgerUnavailable),
        (sqlite3.SQLITE_CORRUPT, ChainCorrupted),
        (sqlite3.SQLITE_NOTADB, ChainCorrupted),
        (sqlite3.SQLITE_ERROR, ChainCorrupted),  # "no such table": the schema is damaged
    ],
)
def test_sqlite_errors_map_to_unavailable_or_corrupted(code: int, expected: type) -> None:
    """A locked or unreadable file is not a damaged one: recovery must never drop its blocks."""
    exc = sqlite3.OperationalError("x")
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    failure: Callable[[], Exception] = lambda: sqlite_failure(exc, "l.db", "reading", 3)  # noqa: E731
    assert type(failure()) is expected
