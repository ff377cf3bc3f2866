"""One node's model and data shard: apply each block's update, train one round (DESIGN §5 step 2)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from qbfl.errors import ConfigError, InvalidUpdate
from qbfl.learning.attacks import ATTACKS, Attack, get_attack
from qbfl.learning.data import load_shard
from qbfl.learning.models import build_model, load_flat_, param_count
from qbfl.learning.partition import client_indices
from qbfl.learning.training import (
    DEFAULT_CLIP_NORM,
    TASK_TRAIN_CONFIG,
    derive_seed,
    select_device,
    train_local,
)
from qbfl.learning.vectorized import DP_ACCOUNTING
from qbfl.ledger.genesis import GenesisBlock

if TYPE_CHECKING:
    from qbfl.learning.dp import DPClientTrainer

MODEL_ATTACKS = tuple(sorted(ATTACKS))


class Learner:
    """Client `node_id`'s side of the learning task.

    The global model is the genesis parameters plus every applied block's update, kept as float32
    in canonical parameter order (exactly what every other node holds at the same height).
    Training uses the same seeded streams as the simulator's client `node_id`
    (qbfl.orchestrator.simulate): shuffling from derive_seed(seed, 1, id), the partition of
    DESIGN §3, attack noise from its own stream; so a networked run and a simulation of the same
    seed train the same batches. `apply` and `train` may run on different threads: `train` works
    on a snapshot of the parameters taken when it starts.
    """

    def __init__(
        self,
        genesis: GenesisBlock,
        node_id: int,
        *,
        attack: str | None = None,
        dp: bool = False,
        dp_accounting: str = "run",
        device: str = "cpu",
        data_dir: Path | None = None,
    ) -> None:
        task = genesis.task
        if dp_accounting not in DP_ACCOUNTING:
            raise ConfigError(
                f"dp_accounting must be one of {', '.join(DP_ACCOUNTING)}, got {dp_accounting!r}"
            )
        if attack is not None and attack not in ATTACKS:
            raise ConfigError(f"unknown model attack {attack!r}; valid: {', '.join(MODEL_ATTACKS)}")
        self.node_id = node_id
        self.task = task
        self.device = select_device(device)
        self._lock = threading.Lock()
        self._params = np.frombuffer(genesis.initial_parameters, dtype="<f4").copy()
        self._model = build_model(task.model, seed=task.seed)
        if param_count(self._model) != self._params.size:
            raise ConfigError(
                f"genesis holds {self._params.size} parameters, model {task.model!r} has "
                f"{param_count(self._model)}"
            )
        shard = load_shard(
            str(task.task),
            "train",
            lambda labels: client_indices(labels, node_id, n_clients=task.n_nodes, seed=task.seed),
            data_dir,
        )
        self._images, self._labels = shard.images, shard.labels
        base = TASK_TRAIN_CONFIG[str(task.task)]
        self._cfg = dataclasses.replace(
            base, lr=task.lr, clip_norm=None if dp else DEFAULT_CLIP_NORM
        )
        seed = derive_seed(task.seed, 1, node_id)
        self._shuffle = torch.Generator().manual_seed(seed)
        self.attack: Attack | None = get_attack(attack) if attack is not None else None
        self._attack_gen = torch.Generator().manual_seed((seed * 7919 + 1) % 2**63)
        self._dp: DPClientTrainer | None = None
        if dp:
            # opacus (and the scipy it imports) only for a DP node: ~90 MB a plain node never pays
            from qbfl.learning.dp import DPClientTrainer, DPConfig

            settings = task.dp
            # run: (ε, δ) for all of the task's rounds; round: for each round's release alone
            # (the paper's reading, docs/bench-simulator.md), σ calibrated to one round's steps
            calibration = None if dp_accounting == "run" else 1
            config = (
                DPConfig(total_rounds=task.rounds, calibration_rounds=calibration)
                if settings is None
                else DPConfig(
                    total_rounds=task.rounds,
                    calibration_rounds=calibration,
                    target_epsilon=settings.target_epsilon,
                    target_delta=settings.target_delta,
                    max_grad_norm=settings.max_grad_norm,
                )
            )
            self._dp = DPClientTrainer(
                self._model,
                self._images,
                self._labels,
                self._cfg,
                config,
                generator=self._shuffle,
                device=self.device,
            )
        self.rounds_trained = 0
        self.diverged = 0

    @property
    def params(self) -> np.ndarray:
        with self._lock:
            return self._params.copy()

    def apply(self, update: bytes) -> None:
        """w_t = w_{t−1} + d_t with the block's aggregate (float32, as every node computes it)."""
        delta = np.frombuffer(update, dtype="<f4")
        if delta.size != self._params.size:
            raise InvalidUpdate(f"block update has {delta.size} values, model {self._params.size}")
        with self._lock:
            self._params = self._params + delta

    def load(self, params: Sequence[float] | np.ndarray) -> None:
        """Replace the global model (a node restored from its ledger)."""
        values = np.asarray(params, dtype="<f4")
        if values.shape != self._params.shape:
            raise InvalidUpdate(f"{values.size} parameters, model has {self._params.size}")
        with self._lock:
            self._params = values.copy()

    def train(self, round: int) -> bytes:
        """This client's update for `round` (1-based) from the current global model, after its attack.

        Raises InvalidUpdate when local training diverges (the node then submits nothing).
        """
        start = torch.from_numpy(self.params)
        # The simulator counts rounds from 0; the same index keeps both attack streams aligned.
        index = round - 1
        labels = self._labels
        if self.attack is not None:
            labels = self.attack.poison_labels(labels, round=index, generator=self._attack_gen)
        self.rounds_trained += 1
        try:
            if self._dp is not None:
                update = self._dp.train_round(start, labels=labels)
            else:
                load_flat_(self._model, start)
                update = train_local(
                    self._model,
                    self._images,
                    labels,
                    self._cfg,
                    generator=self._shuffle,
                    device=self.device,
                )
        except InvalidUpdate:
            self.diverged += 1
            raise
        update = update.detach().to("cpu", torch.float32)
        if self.attack is not None:
            update = self.attack.poison_update(update, round=index, generator=self._attack_gen)
        values = update.numpy().astype("<f4")
        if not np.isfinite(values).all():
            self.diverged += 1
            raise InvalidUpdate(f"node {self.node_id}: round {round} update is not finite")
        return values.tobytes()

    def spent_epsilon(self) -> float:
        return 0.0 if self._dp is None else self._dp.spent_epsilon()

    @property
    def noise_multiplier(self) -> float | None:
        """DP-SGD's σ (None without DP)."""
        return None if self._dp is None else self._dp.noise_multiplier
