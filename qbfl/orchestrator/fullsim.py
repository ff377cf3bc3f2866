"""`simulate --consensus`: the whole protocol in one process — every node a NodeRuntime on the
in-memory network, with real training, committees, QBA over BB84 key pools, votes, blocks and a
SQLite ledger per node (DESIGN §8: the same runtime the gRPC node runs)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qbfl.aggregation.registry import AGGREGATORS
from qbfl.consensus.agreement import qba_session_factory
from qbfl.consensus.effects import CommitBlock, Effect
from qbfl.consensus.inmemory import InMemoryNetwork, NetworkConditions, SafetyMonitor
from qbfl.consensus.round import ConsensusNode
from qbfl.consensus.viewstate import RoundTimeouts
from qbfl.crypto.bb84 import BB84Config
from qbfl.crypto.keypool import BB84SessionSource, PairwiseKeyPools
from qbfl.crypto.keysupply import PairwiseKeySupply, SeededKeySupply
from qbfl.crypto.signing import SigningKey
from qbfl.errors import ChainStalled, ConfigError, KeyPoolExhausted, QkdAborted
from qbfl.learning.data import DATASETS, ImageDataset, load_dataset
from qbfl.learning.models import TASK_MODEL, build_model, flatten_params, load_flat_
from qbfl.learning.training import TASK_TRAIN_CONFIG, select_device
from qbfl.learning.vectorized import DP_ACCOUNTING
from qbfl.ledger.genesis import (
    DpSettings,
    GenesisBlock,
    QbaMode,
    RosterEntry,
    TaskSpec,
    make_genesis,
)
from qbfl.ledger.signer import digest
from qbfl.ledger.store import InMemoryLedgerStore, LedgerStore, SqliteLedgerStore
from qbfl.node.learner import Learner
from qbfl.node.roles import RoleGroup, Roles, assign_roles, describe
from qbfl.node.runtime import NodeRuntime
from qbfl.orchestrator.simulate import TASK_ROUNDS, evaluate, keep_freed_memory

QKD_SOURCES = ("bb84", "seeded")


@dataclass(frozen=True, kw_only=True)
class FullSimConfig:
    """One full-protocol run; validated here so a bad flag fails before any training."""

    task: str = "mnist"
    nodes: int = 50
    malicious: tuple[RoleGroup, ...] = ()
    aggregator: str = "qbfl"
    rounds: int | None = None
    seed: int = 0
    f: int | None = None
    committee: int = 5
    qba: str = "detectable"
    qkd: str = "bb84"  # BB84 key pools refilled on demand, or a seeded stand-in (keys assumed)
    qkd_qubits: int = 200_000  # qubits per BB84 session of a pair
    eavesdrop: tuple[tuple[int, int], ...] = ()
    device: str = "cpu"
    threads: int = 1
    ledger: str = "sqlite"  # one SQLite file per node under out/ledgers, or in memory
    round_timeout_s: float = 60.0  # virtual seconds
    data_dir: Path | None = None
    test_samples: int | None = None
    dp: bool = False  # every node trains with DP-SGD at the genesis' (ε, δ) = (4, 1e-5)
    dp_accounting: str = "run"  # run: (ε, δ) over the whole run; round: per round's release

    def __post_init__(self) -> None:
        if self.dp_accounting not in DP_ACCOUNTING:
            raise ConfigError(f"dp_accounting must be one of {', '.join(DP_ACCOUNTING)}")
        if self.dp_accounting != "run" and not self.dp:
            raise ConfigError("--dp-accounting needs --dp")
        if self.task not in DATASETS:
            raise ConfigError(f"unknown task {self.task!r}; valid: {', '.join(DATASETS)}")
        if self.nodes < 4:
            raise ConfigError("the full protocol needs at least 4 nodes")
        if sum(g.count for g in self.malicious) > self.nodes:
            raise ConfigError("more malicious nodes than nodes")
        if self.aggregator not in AGGREGATORS:
            raise ConfigError(f"unknown aggregator {self.aggregator!r}")
        if self.qkd not in QKD_SOURCES:
            raise ConfigError(f"--qkd must be one of {', '.join(QKD_SOURCES)}")
        if self.ledger not in ("sqlite", "memory"):
            raise ConfigError("ledger must be sqlite or memory")
        if self.rounds is not None and self.rounds < 1:
            raise ConfigError("rounds must be >= 1")
        for a, b in self.eavesdrop:
            if a == b or not (0 <= a < self.nodes and 0 <= b < self.nodes):
                raise ConfigError(f"eavesdropped link {a}-{b} is not a pair of nodes")

    @property
    def total_rounds(self) -> int:
        return self.rounds if self.rounds is not None else TASK_ROUNDS[self.task]

    def task_spec(self) -> TaskSpec:
        return TaskSpec(
            task=self.task,
            model=TASK_MODEL[self.task],
            n_nodes=self.nodes,
            rounds=self.total_rounds,
            seed=self.seed,
            lr=TASK_TRAIN_CONFIG[self.task].lr,
            f=self.f,
            committee_size=self.committee,
            round_timeout_s=self.round_timeout_s,
            qba_mode=QbaMode(self.qba),
            dp=DpSettings(target_epsilon=4.0, target_delta=1e-5, max_grad_norm=1.0)
            if self.dp
            else None,
        )


@dataclass(frozen=True)
class ChainRound:
    """One committed height as the first honest node to reach it saw it."""

    round: int
    view: int
    accuracy: float
    loss: float
    selected: tuple[int, ...]
    malicious_selected: float
    honest_stake: float
    malicious_stake: float
    view_changes: int  # failed views before this block
    virtual_s: float  # in-memory network time when it committed
    wall_s: float  # real seconds since the run started
    block_hash: str


@dataclass
class FullSimResult:
    config: FullSimConfig
    roles: dict[int, Roles]
    rounds: list[ChainRound] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        accuracies = [r.accuracy for r in self.rounds]
        return {
            "mode": "simulate --consensus",
            "task": self.config.task,
            "nodes": self.config.nodes,
            "aggregator": self.config.aggregator,
            "seed": self.config.seed,
            "malicious": describe(self.roles),
            "rounds": len(self.rounds),
            "final_accuracy": accuracies[-1] if accuracies else math.nan,
            "mean_last_20": float(np.mean(accuracies[-20:])) if accuracies else math.nan,
            "view_changes": sum(r.view_changes for r in self.rounds),
            "node_summaries": self.nodes,
            **self.extra,
        }


class _OnDemandQkd:
    """BB84 key pools that run a session for a pair when it runs short (PairwiseKeySupply).

    A pair whose link is eavesdropped aborts every session: its take raises KeyPoolExhausted
    naming the abort, so the QBA operation that needed it fails and the view changes.
    """

    def __init__(self, pools: PairwiseKeyPools, batch_bits: int) -> None:
        self.pools = pools
        self._batch = batch_bits
        self.aborted: dict[tuple[int, int], str] = {}

    def take(self, a: int, b: int, nbits: int) -> int:
        pair = (min(a, b), max(a, b))
        if pair in self.aborted:
            raise KeyPoolExhausted(f"no QKD key for link {a}–{b}: {self.aborted[pair]}")
        if self.pools.available_bits(a, b) < nbits:
            try:
                self.pools.refill(pair, min_bits=max(nbits, self._batch))
            except QkdAborted as exc:
                self.aborted[pair] = str(exc)
                raise KeyPoolExhausted(f"no QKD key for link {a}–{b}: {exc}") from exc
        return self.pools.take(a, b, nbits)

    def consumed_bits(self) -> int:
        return self.pools.consumed_bits()


def _key_supply(config: FullSimConfig, node_ids: list[int]) -> PairwiseKeySupply:
    if config.qkd == "seeded":
        return SeededKeySupply(config.seed)
    source = BB84SessionSource(
        BB84Config(n_qubits=config.qkd_qubits), seed=config.seed, eavesdropped=config.eavesdrop
    )
    return _OnDemandQkd(PairwiseKeyPools(node_ids, source), batch_bits=8 * 768)


def _keys(seed: int, n: int) -> tuple[dict[int, SigningKey], SigningKey]:
    keys = {
        i: SigningKey.from_seed(digest(f"qbfl-fullsim-key/{seed}/{i}".encode())) for i in range(n)
    }
    return keys, SigningKey.from_seed(digest(f"qbfl-fullsim-publisher/{seed}".encode()))


def build_genesis(config: FullSimConfig) -> tuple[GenesisBlock, dict[int, SigningKey]]:
    """The signed genesis of the run: task, the seeded initial model, seeded node identities."""
    keys, publisher = _keys(config.seed, config.nodes)
    spec = config.task_spec()
    model = build_model(spec.model, seed=spec.seed)
    params = flatten_params(model).numpy().astype("<f4").tobytes()
    roster = [RosterEntry(i, keys[i].public_key, f"inmemory:{i}") for i in range(config.nodes)]
    return make_genesis(spec, params, roster, publisher), keys


def run_full_protocol(
    config: FullSimConfig,
    out: Path,
    *,
    on_round: Callable[[ChainRound], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    max_virtual_s_per_round: float | None = None,
) -> FullSimResult:
    """Run every node of the task to `total_rounds` blocks; raise ChainStalled if they stop."""
    keep_freed_memory()
    torch.set_num_threads(config.threads)
    started = clock()
    genesis, keys = build_genesis(config)
    roles = assign_roles(config.malicious, config.nodes, config.seed)
    honest = frozenset(i for i in range(config.nodes) if i not in roles)
    supply = _key_supply(config, list(range(config.nodes)))
    qba = qba_session_factory(
        mode=genesis.task.qba_mode,
        keys=supply,
        f=genesis.task.committee_faults,
        seed=config.seed,
    )
    network_ref: list[InMemoryNetwork] = []
    runtimes: dict[int, NodeRuntime] = {}
    learners: dict[int, Learner] = {}

    def train(node_id: int, round: int) -> bytes | None:
        return runtimes[node_id].train(round)

    monitor = SafetyMonitor(honest)
    network = InMemoryNetwork(
        seed=config.seed,
        conditions=NetworkConditions(min_delay_s=0.005, max_delay_s=0.03, train_delay_s=0.2),
        updates=train,
        monitor=monitor,
    )
    network_ref.append(network)
    ledgers = out / "ledgers"
    if config.ledger == "sqlite":
        ledgers.mkdir(parents=True, exist_ok=True)
    heights: dict[int, float] = {}

    def on_effect(effect: Effect) -> None:
        if isinstance(effect, CommitBlock):
            heights.setdefault(effect.block.height, network.now)

    for i in range(config.nodes):
        node = ConsensusNode(
            i,
            keys[i],
            genesis,
            qba=qba,
            clock=network.clock,
            timeouts=RoundTimeouts(collect_s=2.0, qba_round_s=1.0),
            policy=roles.get(i, Roles()).policy(seed=config.seed * 1_000_003 + i),
            aggregator=config.aggregator,
        )
        store: LedgerStore
        if config.ledger == "sqlite":
            path = ledgers / f"node-{i}.sqlite"
            path.unlink(missing_ok=True)
            store = SqliteLedgerStore(path, genesis)
        else:
            store = InMemoryLedgerStore(genesis)
        learner = Learner(
            genesis,
            i,
            attack=roles[i].model if i in roles else None,
            dp=config.dp,
            dp_accounting=config.dp_accounting,
            device=config.device,
            data_dir=config.data_dir,
        )
        learners[i] = learner
        runtimes[i] = NodeRuntime(
            node, store, learner, clock=network.clock, on_effect=on_effect if i in honest else None
        )
        network.add(runtimes[i])
    device = select_device(config.device)
    test = load_dataset(config.task, "test", config.data_dir)
    if config.test_samples is not None:
        test = ImageDataset(test.images[: config.test_samples], test.labels[: config.test_samples])
    eval_model = build_model(genesis.task.model, seed=genesis.task.seed).to(device)
    result = FullSimResult(config=config, roles=roles)
    network.start()
    target = config.total_rounds
    budget = max_virtual_s_per_round or 20 * config.round_timeout_s
    reported = 0
    bad = np.array([i in roles for i in range(config.nodes)])
    while reported < target:
        want = reported + 1
        deadline = network.now + budget

        def done(want: int = want, deadline: float = deadline) -> bool:
            return min(runtimes[i].height for i in honest) >= want or network.now > deadline

        reached = network.run(done, max_steps=10_000_000)
        if not reached or min(runtimes[i].height for i in honest) < want:
            raise ChainStalled(
                f"chain stalled at height {reported}: no block {want} on every honest node "
                f"within {budget:.0f} virtual seconds"
            )
        first = min(honest)
        chain = runtimes[first].node.chain
        block = chain.block_at(want)
        # the model after `want` blocks: the first honest node's learner is past it, so rebuild
        params = np.frombuffer(genesis.initial_parameters, dtype="<f4").copy()
        for h in range(1, want + 1):
            params = params + np.frombuffer(chain.block_at(h).update, dtype="<f4")
        load_flat_(eval_model, torch.from_numpy(params).to(device))
        accuracy, loss = evaluate(eval_model, test, device)
        stakes = _stakes_after(chain, want)
        stake_arr = np.array([stakes[i] for i in range(config.nodes)], dtype=np.float64)
        n_bad_sel = sum(1 for i in block.selected if i in roles)
        record = ChainRound(
            round=want,
            view=block.view,
            accuracy=accuracy,
            loss=loss,
            selected=block.selected,
            malicious_selected=n_bad_sel / len(block.selected) if block.selected else 0.0,
            honest_stake=float(stake_arr[~bad].mean()) if (~bad).any() else math.nan,
            malicious_stake=float(stake_arr[bad].mean()) if bad.any() else math.nan,
            view_changes=block.view,
            virtual_s=heights.get(want, network.now),
            wall_s=clock() - started,
            block_hash=block.block_hash.hex(),
        )
        result.rounds.append(record)
        reported = want
        if on_round is not None:
            on_round(record)
    monitor.check()
    # let the slower honest nodes finish the last height (they are at most one delay behind)
    for runtime in runtimes.values():
        head = runtime.node.chain
        result.nodes.append(
            {
                "node": runtime.node_id,
                "role": roles.get(runtime.node_id, Roles()).label,
                "height": head.height,
                "head_hash": head.head_hash.hex(),
                "stake": head.stakes[runtime.node_id],
                "view_changes": runtime.stats.view_changes,
                "rejected": {
                    k: v for k, v in runtime.node.counters.items() if k.startswith("rejected")
                },
            }
        )
        runtime.store.close()
    result.extra.update(
        {
            "qba_key_bits": supply.consumed_bits(),
            "qkd_aborted_links": sorted(f"{a}-{b}" for a, b in getattr(supply, "aborted", {})),
            "network_messages": network.delivered,
            "rejections": {f"{n}:{k}": v for (n, k), v in sorted(network.rejections.items())},
            "wall_seconds": clock() - started,
            # DP: what an honest client spent over the run (PRV, δ = 1e-5); under `round`
            # accounting each round's release alone is (4, 1e-5)
            "dp_accounting": config.dp_accounting if config.dp else None,
            "spent_epsilon": learners[min(honest)].spent_epsilon()
            if config.dp and honest
            else None,
            "noise_multiplier": learners[min(honest)].noise_multiplier if honest else None,
            "virtual_seconds": network.now,
            "honest_heads_agree": len(
                {runtimes[i].node.chain.block_at(target).block_hash for i in honest}
            )
            == 1,
        }
    )
    (out / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result


def _stakes_after(chain: Any, height: int) -> dict[int, int]:
    from qbfl.consensus.stakes import derive_stakes

    return derive_stakes(chain.genesis, [chain.block_at(h) for h in range(1, height + 1)])
