"""Follow a running network from outside: verify its blocks, evaluate the global model per round.

The publisher (`qbfl-publisher serve`, so `docker compose logs -f publisher` shows progress) and
the orchestrator (live display, summary.json) both use it. It reads the nodes' public Ledger
service, verifies every block exactly as a node does (ChainView: committee, votes, hashes), and
applies each block's update to its own copy of the model: the accuracy it reports is the model
the chain defines, not one any node claims.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qbfl.consensus.chainview import ChainView
from qbfl.errors import QbflError
from qbfl.ledger.block import Block
from qbfl.ledger.genesis import GenesisBlock
from qbfl.net.probe import NodeUnreachable, node_blocks, node_status

log = logging.getLogger("qbfl.observer")


def _finite(value: Any) -> Any:
    """NaN → None, recursively: summary.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@dataclass(frozen=True)
class ObservedRound:
    round: int
    view: int
    accuracy: float
    selected: int
    malicious_selected: int
    honest_stake: float
    malicious_stake: float
    at_s: float  # seconds since the observer started
    block_hash: str


@dataclass
class ChainObserver:
    """Polls the roster's nodes for new blocks; see the module docstring."""

    genesis: GenesisBlock
    summary_path: Path | None = None
    addresses: dict[int, str] | None = None
    poll_s: float = 0.5
    on_round: Callable[[ObservedRound], None] | None = None
    data_dir: Path | None = None
    test_samples: int | None = None
    evaluate: bool = True
    defer: bool = False  # keep each height's parameters and evaluate in finish_evaluation()
    clock: Callable[[], float] = time.monotonic
    rounds: list[ObservedRound] = field(default_factory=list)
    roles: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.addresses = self.addresses or {e.node_id: e.address for e in self.genesis.roster}
        self.chain = ChainView(self.genesis)
        self._params = np.frombuffer(self.genesis.initial_parameters, dtype="<f4").copy()
        self._accuracy_at: dict[int, float] = {}
        self._started = self.clock()
        self._preferred = sorted(self.addresses)
        self._model: Any = None
        self._test: Any = None
        self.first_block_s: float | None = None
        self._pending: list[tuple[int, np.ndarray]] = []

    # --- evaluation -------------------------------------------------------------------------------

    def _accuracy(self) -> float:
        if not self.evaluate:
            return math.nan
        from qbfl.learning.data import ImageDataset, load_dataset
        from qbfl.learning.models import build_model, load_flat_
        from qbfl.learning.training import evaluate

        task = self.genesis.task
        if self._model is None:
            torch.set_num_threads(1)
            self._model = build_model(task.model, seed=task.seed)
            test = load_dataset(str(task.task), "test", self.data_dir)
            if self.test_samples is not None:
                test = ImageDataset(
                    test.images[: self.test_samples], test.labels[: self.test_samples]
                )
            self._test = test
        load_flat_(self._model, torch.from_numpy(self._params))
        return float(evaluate(self._model, self._test, torch.device("cpu")))

    def prepare(self) -> None:
        """Build the model and load the test set now, before blocks arrive (a cold start takes
        seconds, long enough to miss a short network's blocks)."""
        self._accuracy()

    def accuracy_at(self, height: int) -> float:
        return self._accuracy_at.get(height, math.nan)

    # --- polling ----------------------------------------------------------------------------------

    def _fetch(self) -> list[Block]:
        """New blocks from the first node that has any (nodes that fail move to the back)."""
        assert self.addresses is not None
        for node_id in list(self._preferred):
            try:
                blocks, _ = node_blocks(self.addresses[node_id], self.chain.height + 1, timeout=5.0)
            except (NodeUnreachable, QbflError):
                self._preferred.remove(node_id)
                self._preferred.append(node_id)
                continue
            if blocks:
                return blocks
        return []

    def _learn_roles(self) -> None:
        assert self.addresses is not None
        for node_id, address in self.addresses.items():
            if node_id in self.roles:
                continue
            try:
                self.roles[node_id] = str(node_status(address, timeout=2.0).get("role", "?"))
            except (NodeUnreachable, QbflError):
                continue

    def poll_once(self) -> int:
        """Verify and apply any new blocks; returns how many were applied."""
        applied = 0
        for block in sorted(self._fetch(), key=lambda b: b.height):
            if block.height != self.chain.height + 1:
                continue
            try:
                self.chain.verify(block)
            except QbflError as exc:
                log.warning("block %d from the network does not verify: %s", block.height, exc)
                break
            self.chain.apply(block)
            self._params = self._params + np.frombuffer(block.update, dtype="<f4")
            applied += 1
            self._record(block)
        return applied

    def _record(self, block: Block) -> None:
        if self.first_block_s is None:
            self.first_block_s = self.clock() - self._started
        if len(self.roles) < len(self.genesis.roster):
            self._learn_roles()
        if self.defer:
            self._pending.append((block.height, self._params.copy()))
            accuracy = math.nan
        else:
            accuracy = self._accuracy()
            self._accuracy_at[block.height] = accuracy
        stakes = self.chain.stakes
        bad = {i for i, r in self.roles.items() if r not in ("honest", "?")}
        honest = [s for i, s in stakes.items() if i not in bad]
        malicious = [s for i, s in stakes.items() if i in bad]
        record = ObservedRound(
            round=block.round,
            view=block.view,
            accuracy=accuracy,
            selected=len(block.selected),
            malicious_selected=sum(1 for i in block.selected if i in bad),
            honest_stake=float(np.mean(honest)) if honest else math.nan,
            malicious_stake=float(np.mean(malicious)) if malicious else math.nan,
            at_s=self.clock() - self._started,
            block_hash=block.block_hash.hex(),
        )
        self.rounds.append(record)
        log.info(
            "round %d/%d  acc %.2f%%  view %d  selected %d (malicious %d)  stake honest %.2f "
            "malicious %s  block %s…",
            record.round,
            self.genesis.task.rounds,
            100 * record.accuracy,
            record.view,
            record.selected,
            record.malicious_selected,
            record.honest_stake,
            "-" if math.isnan(record.malicious_stake) else f"{record.malicious_stake:.2f}",
            record.block_hash[:12],
        )
        if self.on_round is not None:
            self.on_round(record)

    def finish_evaluation(self) -> None:
        """Evaluate the heights whose evaluation was deferred (their rounds get the accuracy)."""
        current = self._params
        for height, params in self._pending:
            self._params = params
            self._accuracy_at[height] = self._accuracy()
        self._params = current
        self._pending.clear()
        self.rounds = [
            dataclasses.replace(r, accuracy=self._accuracy_at.get(r.round, r.accuracy))
            for r in self.rounds
        ]

    @property
    def done(self) -> bool:
        return self.chain.height >= self.genesis.task.rounds

    def run(self, stop: threading.Event) -> None:
        """Poll until the task's last block (then write the summary) or until `stop`."""
        while not stop.is_set() and not self.done:
            if not self.poll_once():
                stop.wait(self.poll_s)
        if self.done:
            log.info("task complete: %d blocks", self.chain.height)
            self.write_summary()

    # --- summary ----------------------------------------------------------------------------------

    def node_summaries(self) -> list[dict[str, Any]]:
        assert self.addresses is not None
        out = []
        for node_id, address in sorted(self.addresses.items()):
            entry: dict[str, Any] = {
                "node": node_id,
                "address": address,
                "role": self.roles.get(node_id, "?"),
            }
            try:
                status = node_status(address, timeout=3.0)
            except (NodeUnreachable, QbflError) as exc:
                entry.update(reachable=False, error=str(exc))
            else:
                height = int(status.get("height", 0))
                entry.update(
                    reachable=True,
                    role=status.get("role", entry["role"]),
                    height=height,
                    head_hash=status.get("head_hash"),
                    stake=status.get("stake"),
                    view_changes=status.get("view_changes"),
                    last_accuracy=self.accuracy_at(height),
                    counters=status.get("counters", {}),
                )
            out.append(entry)
        return out

    def settled_node_summaries(self, wait_s: float) -> list[dict[str, Any]]:
        """node_summaries() once every reachable honest node holds the observed head's height.

        The observer stops at the first node that has the last block; the others apply it within
        moments (the block is on its way), so a snapshot taken at once can find one a block behind
        and call the heads disagreeing. Waits at most `wait_s`, then returns what it sees: a node
        still behind, or at the same height with another head, then fails the agreement check.
        """
        deadline = time.monotonic() + wait_s
        while True:
            nodes = self.node_summaries()
            behind = [
                n
                for n in nodes
                if n.get("role") == "honest"
                and n.get("reachable")
                and int(n.get("height", 0)) < self.chain.height
            ]
            if not behind or time.monotonic() >= deadline:
                return nodes
            time.sleep(0.3)

    def summary(self, nodes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        nodes = self.node_summaries() if nodes is None else nodes
        honest = [n for n in nodes if n.get("role") == "honest" and n.get("reachable")]
        heads = {n["head_hash"] for n in honest if n.get("height") == self.chain.height}
        accuracies = [r.accuracy for r in self.rounds]
        gaps = np.diff([0.0] + [r.at_s for r in self.rounds]) if self.rounds else np.array([])
        return {
            "task": str(self.genesis.task.task),
            "genesis_hash": self.genesis.block_hash.hex(),
            "nodes": len(self.genesis.roster),
            "rounds": self.genesis.task.rounds,
            "height": self.chain.height,
            "head_hash": self.chain.head_hash.hex(),
            "final_accuracy": accuracies[-1] if accuracies else None,
            "mean_last_20": float(np.mean(accuracies[-20:])) if accuracies else None,
            "time_to_first_block_s": self.first_block_s,
            "mean_round_s": float(np.mean(gaps[1:])) if len(gaps) > 1 else None,
            "view_changes": sum(r.view for r in self.rounds),
            "honest_heads_agree": len(heads) <= 1
            and all(n.get("height") == self.chain.height for n in honest),
            "per_round": [asdict(r) for r in self.rounds],
            "node_summaries": nodes,
        }

    def write_summary(self, path: Path | None = None) -> dict[str, Any]:
        doc = self.summary()
        target = path or self.summary_path
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(_finite(doc), indent=2, default=str) + "\n")
            log.info("wrote %s", target)
        return doc
