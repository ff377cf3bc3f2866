"""A writer SIGKILLed mid-append leaves a valid chain that is a prefix of what it meant to write."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from qbfl.ledger.genesis import GenesisBlock
from qbfl.ledger.store import SqliteLedgerStore

from .crash_writer import intended_chain

WRITER = Path(__file__).with_name("crash_writer.py")
LIMIT = 100_000


def test_sigkill_mid_append_leaves_a_valid_prefix(tmp_path: Path, genesis: GenesisBlock) -> None:
    db, genesis_file = tmp_path / "ledger.db", tmp_path / "genesis.bin"
    genesis_file.write_bytes(genesis.encode())
    rng = np.random.default_rng(2024)
    heights = []
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, str(WRITER), str(db), str(genesis_file), str(LIMIT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().startswith("start")  # opened, verified, now appending
        time.sleep(float(rng.uniform(0.05, 0.4)))
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        with SqliteLedgerStore(db) as store:  # verifies the whole chain on open
            heights.append(store.height)
            assert store.genesis == genesis
            assert store.range(1, store.height + 1) == intended_chain(genesis, store.height)
    print("heights after each kill:", heights)
    assert heights == sorted(heights) and heights[-1] > 0, heights
