"""Keep the valid prefix of a damaged ledger file so that a node restarts from it and re-fetches the rest.

`recover_ledger` never deletes data: the damaged file and its SQLite sidecars are moved into a
folder beside it, and a new file holding the verified blocks 0..h−1 takes its place. What lies
beyond — the damaged block, everything above it, and any tail the disk never kept — only peers
can supply (docs/ledger.md §4).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from qbfl.consensus.stakes import StakeLedger
from qbfl.errors import ChainCorrupted
from qbfl.ledger.block import Block
from qbfl.ledger.chain import InvalidBlock, verify_block
from qbfl.ledger.genesis import GenesisBlock
from qbfl.ledger.store import (
    GenesisMismatch,
    LedgerUnavailable,
    SqliteLedgerStore,
    check_schema,
    read_stored_chain,
    sqlite_failure,
)

_SIDECARS = ("-wal", "-shm", "-journal")
BUILDING_SUFFIX = ".recovering"  # a prefix being copied: discarded if recovery dies
BUILT_SUFFIX = ".recovered"  # a complete prefix waiting to replace the damaged file
CORRUPT_SUFFIX = ".corrupt-"  # + n: the folder the damaged file is moved into


@dataclass(frozen=True)
class RecoveryReport:
    """What recover_ledger found and did.

    The ledger at `path` holds blocks 0..kept_height, verified. `first_bad_height` is the first
    height dropped (None: no block was dropped); heights first_bad_height..stored_height, as far
    as the damaged file still listed them, are gone from `path`. `moved_to` is the folder that
    now holds the damaged file with its -wal/-shm (None: the file was sound and left untouched;
    set with no block dropped when only the schema was damaged and the file was rebuilt).
    """

    path: Path
    kept_height: int
    first_bad_height: int | None
    stored_height: int | None  # highest height the damaged file listed; None if unreadable
    moved_to: Path | None
    reason: str  # the ChainCorrupted or InvalidBlock message; "" when nothing was wrong

    @property
    def recovered(self) -> bool:
        """True when a damaged file was replaced by its valid prefix."""
        return self.moved_to is not None


def recover_ledger(
    path: str | os.PathLike[str],
    genesis: GenesisBlock | None = None,
    *,
    verify_blocks: bool = True,
) -> RecoveryReport:
    """Replace a damaged ledger file by its valid prefix; leave a sound one untouched.

    Reads the file without writing to it; keeps blocks 0..h−1 up to the first height h that is
    damaged (`read_stored_chain`) or, with `verify_blocks` (the default), that fails full
    verification (signatures, committees: what `Chain` would refuse on open). If anything was
    dropped, the damaged file and its sidecars move into `<name>.corrupt-<n>/` (first free n)
    and the prefix takes the file's place; the node then re-fetches heights ≥ h from peers.

    `genesis` (the publisher's) is needed only when the stored genesis itself is unreadable; if
    given and the file holds another task's chain, GenesisMismatch is raised and nothing moves.
    LedgerUnavailable (a locked or unreadable file) also changes nothing. If the process dies
    during recovery, call it again: it finishes or restarts the job, and never deletes data.
    """
    path = Path(path)
    building = path.with_name(path.name + BUILDING_SUFFIX)
    built = path.with_name(path.name + BUILT_SUFFIX)
    _remove_sqlite_files(building)  # an earlier recovery died while copying: restart it
    if not path.exists() and built.exists():  # an earlier one died between the two renames
        _move_aside(path)  # stray sidecars of the damaged file, if any
        os.replace(built, path)
    _remove_sqlite_files(built)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no ledger file to recover")

    try:
        source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise sqlite_failure(exc, str(path), "cannot open") from exc
    try:
        damaged_schema = _schema_problem(source, path)
        kept, bad, reason = _copy_valid_prefix(source, path, building, genesis, verify_blocks)
        stored = _stored_height(source)
    except BaseException:
        _remove_sqlite_files(building)
        raise
    finally:
        with contextlib.suppress(sqlite3.Error):
            source.close()
    if bad is None and not damaged_schema:
        _remove_sqlite_files(building)
        return RecoveryReport(path, kept, None, stored, None, "")
    reason = "; ".join(r for r in (damaged_schema, reason) if r)
    if any(building.with_name(building.name + s).exists() for s in _SIDECARS):
        raise LedgerUnavailable(f"{building}: SQLite kept a journal open; recovery not finished")
    os.replace(building, built)
    moved_to = _move_aside(path)
    os.replace(built, path)
    _sync_folder(path.parent)
    return RecoveryReport(path, kept, bad, stored, moved_to, reason)


def _copy_valid_prefix(
    source: sqlite3.Connection,
    path: Path,
    target_path: Path,
    genesis: GenesisBlock | None,
    verify_blocks: bool,
) -> tuple[int, int | None, str]:
    """Copy the known-good blocks into a new ledger at `target_path`: (kept height, first bad
    height or None, reason)."""
    target: SqliteLedgerStore | None = None
    ledger: StakeLedger | None = None
    prev: Block | GenesisBlock | None = None
    bad: int | None = None
    reason = ""
    try:
        for block in read_stored_chain(source, str(path)):
            if isinstance(block, GenesisBlock):
                if genesis is not None and genesis.block_hash != block.block_hash:
                    raise GenesisMismatch(f"{path} holds the chain of another genesis")
                target, ledger, prev = (
                    SqliteLedgerStore(target_path, block),
                    StakeLedger(block),
                    block,
                )
                continue
            assert target is not None and ledger is not None and prev is not None
            if verify_blocks:  # what Chain would check on open, with the stakes it would derive
                verify_block(
                    block,
                    prev=prev,
                    genesis=target.genesis,
                    stakes_before=ledger.stakes,
                    committee_of_view=ledger.committee,
                )
                ledger.apply(block)
            target.append(block)
            prev = block
    except ChainCorrupted as exc:
        bad = exc.height if exc.height is not None else (0 if prev is None else prev.height + 1)
        reason = str(exc)
    except InvalidBlock as exc:
        bad, reason = exc.height, str(exc)
    finally:
        if target is not None:
            target.close()
    if target is None:  # not even the genesis could be kept
        if genesis is None:
            raise ChainCorrupted(
                f"{path}: the stored genesis is unreadable ({reason}); pass the publisher's "
                "genesis to recover_ledger to start a new ledger from it",
                height=0,
            )
        SqliteLedgerStore(target_path, genesis).close()
        return 0, 0 if bad is None else bad, reason
    assert prev is not None
    return prev.height, bad, reason


def _schema_problem(source: sqlite3.Connection, path: Path) -> str:
    """Why the file's tables or schema version would stop the store from opening it ("" if
    nothing); the blocks may still be readable, and the rebuilt file has a fresh schema."""
    try:
        check_schema(source, str(path))
    except ChainCorrupted as exc:
        return str(exc)
    except sqlite3.DatabaseError as exc:
        failure = sqlite_failure(exc, str(path), "the schema cannot be read")
        if isinstance(failure, LedgerUnavailable):
            raise failure from exc
        return str(failure)
    return ""


def _stored_height(source: sqlite3.Connection) -> int | None:
    """The highest height the file lists, or None when even that cannot be read."""
    try:
        row = source.execute("SELECT MAX(height) FROM blocks").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row and isinstance(row[0], int) else None


def _move_aside(path: Path) -> Path:
    """Move `path` and its SQLite sidecars into a new `<name>.corrupt-<n>/` folder.

    Sidecars go first: were the process to die half-way, the ledger file must never end up
    beside a WAL that belongs to another file (SQLite would replay it into the new ledger).
    """
    n = 1
    while (folder := path.with_name(f"{path.name}{CORRUPT_SUFFIX}{n}")).exists():
        n += 1
    folder.mkdir()
    for suffix in (*_SIDECARS, ""):
        member = path.with_name(path.name + suffix)
        if member.exists():
            os.replace(member, folder / member.name)
    _sync_folder(folder)
    return folder


def _remove_sqlite_files(path: Path) -> None:
    """Delete a scratch ledger this module created, with its sidecars."""
    for suffix in (*_SIDECARS, ""):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    """Make the renames in `folder` durable (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
