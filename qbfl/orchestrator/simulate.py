"""In-process simulation of a QBFL task: all clients vectorised, Alg. 2 aggregation and stakes (Sections 4.2–4.4, 5)."""

from __future__ import annotations

import ctypes
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qbfl.aggregation.registry import aggregator_names, get_aggregator, is_aggregator
from qbfl.errors import ConfigError
from qbfl.learning.attacks import ATTACKS, get_attack
from qbfl.learning.collusion import (
    COLLUDING_ATTACKS,
    ColludingAttack,
    Knowledge,
    RoundView,
    get_colluding_attack,
)
from qbfl.learning.data import DATASETS, ImageDataset, load_dataset
from qbfl.learning.models import MODELS, TASK_MODEL, build_model, flatten_params, load_flat_
from qbfl.learning.mpo import MPOLinear, rebalance_
from qbfl.learning.partition import PARTITIONS, partition_indices
from qbfl.learning.training import (
    DEFAULT_CLIP_NORM,
    TASK_TRAIN_CONFIG,
    derive_seed,
    select_device,
)
from qbfl.learning.vectorized import DP_ACCOUNTING, VectorDPConfig, VectorizedClients

# Section 5.2: 200 communication rounds for MNIST, 300 for Fashion-MNIST.
TASK_ROUNDS = {"mnist": 200, "fashion-mnist": 300}
# Table 3 reports the mean test accuracy of the last 20 rounds.
LAST_ROUNDS = 20


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """One simulated run; every field is validated here so a bad flag fails before any training."""

    task: str = "mnist"
    nodes: int = 50
    malicious: int = 0
    attack: str = "labelflip"
    aggregator: str = "qbfl"
    rounds: int | None = None  # None: the paper's count for the task (TASK_ROUNDS)
    dp: bool = False
    seed: int = 0
    f: int | None = None  # None: ⌊0.4·N⌋ (DESIGN.md §5 step 3)
    device: str = "cpu"
    model: str | None = None  # None: the task's MPO model (TASK_MODEL)
    samples_per_client: int | None = None  # a prefix of each client's partition, for quick runs
    test_samples: int | None = None  # a prefix of the 10 000 test images, for quick runs
    chunk_size: int = (
        10  # clients per vectorised chunk (10 was fastest here, docs/bench-simulator.md)
    )
    threads: int = 1  # torch threads of this process; 1 when several runs share the machine
    dp_epsilon: float = 4.0  # Section 5.2: (ε = 4, δ = 1e-5)
    dp_delta: float = 1e-5
    max_grad_norm: float = 1.0
    # Deviations from the paper's optimiser, off by default; see docs/bench-simulator.md.
    rebalance: bool = False  # even out MPO core norms after each applied update (mpo.rebalance_)
    clip_norm: float | None = DEFAULT_CLIP_NORM  # per-step gradient clip; None: the paper's SGD
    data_dir: Path | None = None
    # Beyond the paper (issue 13); at their defaults they are left out of to_json, so the
    # cache keys of every cell run before they existed stay valid.
    partition: str = "lotteryfl"  # lotteryfl (Section 5.1), dirichlet (needs alpha), iid
    alpha: float | None = None  # Dirichlet concentration, only with partition="dirichlet"
    dp_accounting: str = "run"  # run: (ε, δ) for the whole run; round: for each round
    # What a colluding attack (alie, ipm, minmax, …) sees: every honest update of the round
    # (omniscient) or only the malicious clients' own honestly trained ones (colluders).
    attack_knowledge: str = "omniscient"

    def __post_init__(self) -> None:
        if self.task not in DATASETS:
            raise ValueError(f"unknown task {self.task!r}; valid: {', '.join(DATASETS)}")
        if self.nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {self.nodes}")
        if not 0 <= self.malicious <= self.nodes:
            raise ValueError(f"malicious must be in [0, nodes={self.nodes}], got {self.malicious}")
        if self.attack not in ATTACKS and self.attack not in COLLUDING_ATTACKS:
            valid = ", ".join(sorted([*ATTACKS, *COLLUDING_ATTACKS]))
            raise ValueError(f"unknown attack {self.attack!r}; valid: {valid}")
        if self.attack_knowledge not in {k.value for k in Knowledge}:
            raise ValueError(
                f"unknown attack_knowledge {self.attack_knowledge!r}; "
                f"valid: {', '.join(k.value for k in Knowledge)}"
            )
        if self.attack in COLLUDING_ATTACKS and self.malicious >= self.nodes:
            raise ValueError(f"{self.attack} colludes against honest clients; all are malicious")
        if not is_aggregator(self.aggregator):
            raise ValueError(
                f"unknown aggregator {self.aggregator!r}; valid: {', '.join(aggregator_names())}"
            )
        if self.rounds is not None and self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.f is not None and not 0 <= self.f < self.nodes:
            raise ValueError(f"f must be in [0, nodes={self.nodes}), got {self.f}")
        if self.model is not None and self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; valid: {', '.join(sorted(MODELS))}")
        for name in ("samples_per_client", "test_samples", "chunk_size", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not (math.isfinite(self.dp_epsilon) and self.dp_epsilon > 0):
            raise ValueError(f"dp_epsilon must be positive, got {self.dp_epsilon}")
        if not 0 < self.dp_delta < 1:
            raise ValueError(f"dp_delta must be in (0, 1), got {self.dp_delta}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm}")
        if self.clip_norm is not None and not (
            math.isfinite(self.clip_norm) and self.clip_norm > 0
        ):
            raise ValueError(f"clip_norm must be positive or None, got {self.clip_norm}")
        if self.partition not in PARTITIONS:
            raise ValueError(
                f"unknown partition {self.partition!r}; valid: {', '.join(PARTITIONS)}"
            )
        if self.partition == "dirichlet" and self.alpha is None:
            raise ValueError("the dirichlet partition needs alpha (e.g. 0.1 or 0.5)")
        if self.partition != "dirichlet" and self.alpha is not None:
            raise ValueError(f"alpha is used only by the dirichlet partition, not {self.partition}")
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha must be positive, got {self.alpha}")
        if self.dp_accounting not in DP_ACCOUNTING:
            raise ValueError(
                f"unknown dp_accounting {self.dp_accounting!r}; valid: {', '.join(DP_ACCOUNTING)}"
            )
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda")):
            raise ValueError(f"unknown device {self.device!r}; use auto, cpu, cuda or cuda:N")

    @property
    def total_rounds(self) -> int:
        return self.rounds if self.rounds is not None else TASK_ROUNDS[self.task]

    @property
    def fault_tolerance(self) -> int:
        return self.f if self.f is not None else math.floor(0.4 * self.nodes)

    @property
    def model_name(self) -> str:
        return self.model if self.model is not None else TASK_MODEL[self.task]

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["data_dir"] = None if self.data_dir is None else str(self.data_dir)
        doc.update(rounds=self.total_rounds, f=self.fault_tolerance, model=self.model_name)
        for name, default in _ADDED_FIELDS.items():
            if doc[name] == default:
                del doc[name]
        return doc


# Fields added after the Table 2/3 and Fig. 4 caches were filled, with their defaults.
_ADDED_FIELDS: dict[str, Any] = {
    "partition": "lotteryfl",
    "alpha": None,
    "dp_accounting": "run",
    "attack_knowledge": "omniscient",
}


@dataclass(frozen=True)
class RoundRecord:
    """What one round produced: global test accuracy and loss, who was aggregated, stakes, ε."""

    round: int
    accuracy: float
    loss: float
    seconds: float
    selected: tuple[int, ...]
    honest_stake: float  # mean stake of honest clients after this round
    malicious_stake: float  # mean stake of malicious clients (nan when there are none)
    malicious_selected: float  # fraction of the selected clients that are malicious
    epsilon: float  # ε spent by one client so far (0 without DP)
    dropped: tuple[int, ...] = ()  # clients whose local training diverged (no upload this round)
    # Frobenius norms after this round: each parameter tensor, each MPO layer's contracted
    # weight ("<layer>.W"), the global update ("update") and the largest client update
    # ("client_update_max"); they show a growing core before the loss does.
    norms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SimulationResult:
    config: SimulationConfig
    malicious_ids: tuple[int, ...]
    records: tuple[RoundRecord, ...]
    noise_multiplier: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        return self.records[-1].accuracy

    def mean_last(self, k: int = LAST_ROUNDS) -> float:
        """Mean test accuracy of the last k rounds (Table 3's measure)."""
        tail = self.records[-k:]
        return float(np.mean([r.accuracy for r in tail]))

    def summary(self) -> dict[str, Any]:
        return {
            "config": self.config.to_json(),
            "malicious_ids": list(self.malicious_ids),
            "rounds": len(self.records),
            "final_accuracy": self.final_accuracy,
            f"mean_last_{LAST_ROUNDS}": self.mean_last(),
            "final_epsilon": self.records[-1].epsilon,
            "noise_multiplier": self.noise_multiplier,
            "mean_round_seconds": float(np.mean([r.seconds for r in self.records])),
            **self.extra,
        }


def keep_freed_memory() -> None:
    """Ask glibc to reuse freed heap memory instead of unmapping it (no-op elsewhere).

    Each vectorised step allocates several 8 MB temporaries; by default glibc maps and
    unmaps them, and the page faults made a step 1.6–2x slower on the 2-core VM
    (docs/bench-simulator.md). The simulator owns its process, so it may set this.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # glibc's maximum
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_top_pad, 64 * 1024 * 1024)


def malicious_ids(config: SimulationConfig) -> tuple[int, ...]:
    """A seeded choice of which clients are malicious."""
    rng = np.random.default_rng([config.seed, 0x6D616C])
    chosen = rng.choice(config.nodes, size=config.malicious, replace=False)
    return tuple(sorted(int(i) for i in chosen))


def client_data(config: SimulationConfig, train: ImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, samples, 1, 28, 28) images and (N, samples) labels of the configured partition (DESIGN.md §3)."""
    labels_np = train.labels.numpy()
    rows = [
        partition_indices(
            config.partition,
            labels_np,
            i,
            n_clients=config.nodes,
            seed=config.seed,
            alpha=config.alpha,
        )
        for i in range(config.nodes)
    ]
    count = min(len(r) for r in rows)
    if config.samples_per_client is not None:
        count = min(count, config.samples_per_client)
    # An evenly spaced subset: a prefix would be one label (the first shard is taken whole).
    picks = [r[np.linspace(0, len(r) - 1, count).round().astype(np.int64)] for r in rows]
    index = torch.from_numpy(np.stack(picks))
    return train.images[index], train.labels[index]


@torch.inference_mode()
def evaluate(
    model: nn.Module, test: ImageDataset, device: torch.device, batch: int = 2500
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the global model on the test images."""
    model.eval()
    correct, loss = 0, 0.0
    for lo in range(0, len(test), batch):
        x = test.images[lo : lo + batch].to(device)
        y = test.labels[lo : lo + batch].to(device)
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
    model.train()
    n = max(len(test), 1)
    return correct / n, loss / n


def model_norms(model: nn.Module) -> dict[str, float]:
    """Frobenius norm of every parameter and of every MPO layer's contracted weight."""
    norms = {name: float(p.detach().norm()) for name, p in model.named_parameters()}
    for name, module in model.named_modules():
        if isinstance(module, MPOLinear):
            norms[f"{name}.W"] = float(module.to_dense().detach().norm())
    return norms


def run_simulation(
    config: SimulationConfig,
    *,
    on_round: Callable[[RoundRecord], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> SimulationResult:
    """Run `config.total_rounds` rounds: train every client, aggregate, update stakes, evaluate."""
    keep_freed_memory()
    # One thread by default: on shared machines more threads per process collapse (dependencies.md).
    torch.set_num_threads(config.threads)
    device = select_device(config.device)
    train = load_dataset(config.task, "train", config.data_dir)
    test = load_dataset(config.task, "test", config.data_dir)
    if config.test_samples is not None:
        test = ImageDataset(test.images[: config.test_samples], test.labels[: config.test_samples])
    images, labels = client_data(config, train)
    bad = malicious_ids(config)
    # Per-client attacks act inside training (labels) and on each update; colluding ones are
    # applied after honest training, to all malicious rows at once (qbfl.learning.collusion).
    colluding: ColludingAttack | None = None
    per_client = {}
    if config.attack in COLLUDING_ATTACKS:
        colluding = get_colluding_attack(
            config.attack, knowledge=Knowledge(config.attack_knowledge)
        )
    else:
        per_client = {i: get_attack(config.attack) for i in bad}
    model = build_model(config.model_name, seed=config.seed)
    dp = (
        VectorDPConfig(
            target_epsilon=config.dp_epsilon,
            target_delta=config.dp_delta,
            max_grad_norm=config.max_grad_norm,
            total_rounds=config.total_rounds,
            accounting=config.dp_accounting,
        )
        if config.dp
        else None
    )
    clients = VectorizedClients(
        model,
        images,
        labels,
        # DP-SGD clips per sample already (max_grad_norm); the step clip is for plain SGD only.
        dataclasses.replace(
            TASK_TRAIN_CONFIG[config.task], clip_norm=None if config.dp else config.clip_norm
        ),
        seeds=[derive_seed(config.seed, 1, i) for i in range(config.nodes)],
        attacks=per_client,
        device=device,
        chunk_size=config.chunk_size,
        dp=dp,
        dp_seed=derive_seed(config.seed, 2),
    )
    aggregator = get_aggregator(config.aggregator)
    f = config.fault_tolerance
    if aggregator.max_faults(config.nodes) < 0:
        raise ConfigError(f"{config.aggregator} cannot aggregate {config.nodes} updates")
    f_used: set[int] = set()
    ids = list(range(config.nodes))
    is_bad = np.zeros(config.nodes, dtype=bool)
    is_bad[list(bad)] = True
    # Section 4.2: stakes start equal; a client whose update is aggregated gains 1 per round.
    stakes = np.ones(config.nodes, dtype=np.float64)
    weights = flatten_params(model)
    previous: np.ndarray | None = None
    eval_model = build_model(config.model_name, seed=config.seed).to(device)
    records: list[RoundRecord] = []
    for rnd in range(config.total_rounds):
        start = clock()
        updates = clients.train_round(weights, round=rnd).numpy()
        # A client whose local SGD diverged (NaN/Inf) uploads nothing this round, as a node
        # whose train_local raised would; the others are aggregated as usual.
        finite = np.isfinite(updates).all(axis=1)
        dropped = tuple(int(i) for i in np.flatnonzero(~finite))
        # The rule's f over the inputs actually present, as the networked round logic does:
        # Bulyan needs N ≥ 4f + 3 and runs with f = 11 at N = 50 (docs/attacks.md).
        n_inputs = int(finite.sum())
        f_round = min(f, aggregator.max_faults(n_inputs))
        if colluding is not None and bad:
            _collude(updates, colluding, is_bad, finite, f=f_round, previous=previous, round=rnd)
            if int(finite.sum()) != n_inputs:  # crafted rows that overflow float32 are refused
                dropped = tuple(int(i) for i in np.flatnonzero(~finite))
                f_round = min(f, aggregator.max_faults(int(finite.sum())))
        if not finite.any() or f_round < 0:
            # Every client diverged: no block this round, the global model stays as it was.
            selected: list[int] = []
        else:
            f_used.add(f_round)
            result = aggregator.aggregate(
                updates[finite],
                client_ids=[i for i in ids if finite[i]],
                stakes=stakes[finite].copy(),
                f=f_round,
                previous=previous,
            )
            weights = weights + torch.from_numpy(result.update)
            previous = result.update
            selected = list(result.selected)
            stakes[selected] += 1.0
        load_flat_(eval_model, weights.to(device))
        if config.rebalance and selected:
            # Every node applies the block's update, then the same deterministic gauge fix.
            for module in eval_model.modules():
                if isinstance(module, MPOLinear):
                    rebalance_(module)
            weights = flatten_params(eval_model)
        accuracy, loss = evaluate(eval_model, test, device)
        norms = model_norms(eval_model)
        norms["update"] = (
            float(np.linalg.norm(previous)) if selected and previous is not None else 0.0
        )
        norms["client_update_max"] = (
            float(np.linalg.norm(updates[finite], axis=1).max()) if finite.any() else math.nan
        )
        n_bad_selected = int(is_bad[selected].sum()) if selected else 0
        record = RoundRecord(
            round=rnd + 1,
            accuracy=accuracy,
            loss=loss,
            seconds=clock() - start,
            selected=tuple(int(i) for i in selected),
            honest_stake=float(stakes[~is_bad].mean()) if (~is_bad).any() else math.nan,
            malicious_stake=float(stakes[is_bad].mean()) if is_bad.any() else math.nan,
            malicious_selected=n_bad_selected / len(selected) if selected else 0.0,
            epsilon=clients.spent_epsilon(),
            dropped=dropped,
            norms=norms,
        )
        records.append(record)
        if on_round is not None:
            on_round(record)
    sigma = clients.accountant.noise_multiplier if clients.accountant is not None else None
    extra: dict[str, Any] = {}
    if f_used != {f}:  # the rule ran with a smaller f than the task's in some rounds
        extra["f_used"] = sorted(f_used)
    if clients.accountant is not None:
        # What one round's release costs, beside final_epsilon (the whole run, composed).
        extra["round_epsilon"] = clients.accountant.round_epsilon()
    return SimulationResult(
        config=config,
        malicious_ids=bad,
        records=tuple(records),
        noise_multiplier=sigma,
        extra=extra,
    )


def _collude(
    updates: np.ndarray,
    attack: ColludingAttack,
    is_bad: np.ndarray,
    finite: np.ndarray,
    *,
    f: int,
    previous: np.ndarray | None,
    round: int,
) -> None:
    """Replace the malicious rows of `updates` (in place) by what the colluding attack crafts.

    The malicious clients trained honestly; the attack sees the honest clients' updates
    (omniscient) or their own (colluders), never a diverged (non-finite) one. A crafted row
    that is not finite in float32 (an overflow) is marked in `finite` (in place): a node would
    refuse that upload, so the round goes on without it.
    """
    bad_rows = np.flatnonzero(is_bad & finite)
    if not len(bad_rows):
        return
    source = ~is_bad if attack.knowledge is Knowledge.OMNISCIENT else is_bad
    reference = updates[source & finite].astype(np.float64)
    if not len(reference):
        return  # nothing to learn from this round: the malicious clients send their own updates
    view = RoundView(
        reference=reference,
        n_inputs=int(finite.sum()),
        n_malicious=len(bad_rows),
        f=f,
        previous=previous,
        round=round,
    )
    updates[bad_rows] = attack.craft(view)
    finite[bad_rows] = np.isfinite(updates[bad_rows]).all(axis=1)
