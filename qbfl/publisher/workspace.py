"""The publisher's directory: task, initial model, signing key, registrations and genesis (§4.1).

    DIR/task.bin                  canonical TaskSpec (what every node must agree on)
    DIR/initial-parameters.f32    the initial model, float32 little-endian, canonical order
    DIR/publisher.key             ML-DSA-44 seed, mode 0600
    DIR/registrations/node-N.bin  canonical Registration records, one per node
    DIR/genesis.bin               the signed GenesisBlock, once every node registered

Everything is written atomically (temporary file + rename), so a publisher killed at any point
restarts from a consistent directory and registrations survive a restart.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import torch

from qbfl.aggregation.registry import AGGREGATORS, get_aggregator
from qbfl.crypto.signing import SigningKey, load_seed, save_seed
from qbfl.errors import ConfigError, QbflError
from qbfl.learning.models import TASK_MODEL, build_model, flatten_params
from qbfl.learning.training import TASK_TRAIN_CONFIG
from qbfl.ledger.genesis import DpSettings, GenesisBlock, QbaMode, TaskSpec, make_genesis
from qbfl.ledger.registration import Registration
from qbfl.ledger.signer import digest
from qbfl.orchestrator.simulate import TASK_ROUNDS


class WorkspaceError(QbflError):
    """The publisher directory is missing, incomplete or holds a different task."""


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def task_hash(task: TaskSpec) -> bytes:
    """What registrations are bound to: blake3 of the canonical task bytes."""
    return digest(task.encode())


def check_task(task: TaskSpec) -> None:
    """Refuse a task the protocol cannot run, with the reason (issue 10, finding 11).

    The committee needs a leader and two more members for QBA; the leader aggregates over at
    least N − f submissions, so the rule must be able to aggregate that many inputs at all.
    """
    if task.committee_size < 3:
        raise ConfigError(
            f"committee of {task.committee_size}: QBA needs a leader and at least two members (≥ 3)"
        )
    f = task.f if task.f is not None else (4 * task.n_nodes) // 10
    present = task.n_nodes - f
    rule = get_aggregator(task.aggregator)
    max_faults = getattr(rule, "max_faults", None)
    if max_faults is not None and max_faults(present) < 0:
        raise ConfigError(
            f"{task.aggregator} cannot aggregate {present} inputs (N = {task.n_nodes}, f = {f}): "
            "raise --nodes or lower --malicious-f"
        )


def build_task(
    *,
    task: str,
    nodes: int,
    f: int | None,
    committee: int,
    rounds: int | None,
    qba: str,
    seed: int,
    aggregator: str,
    round_timeout_s: float,
    dp: bool,
) -> TaskSpec:
    if committee > nodes:
        raise ConfigError(f"--committee {committee} is larger than --nodes {nodes}")
    if aggregator not in AGGREGATORS:
        raise ConfigError(
            f"unknown aggregator {aggregator!r}; valid: {', '.join(sorted(AGGREGATORS))}"
        )
    try:
        spec = TaskSpec(
            task=task,
            model=TASK_MODEL[task],
            n_nodes=nodes,
            rounds=rounds if rounds is not None else TASK_ROUNDS[task],
            seed=seed,
            lr=TASK_TRAIN_CONFIG[task].lr,
            f=f,
            committee_size=committee,
            round_timeout_s=round_timeout_s,
            qba_mode=QbaMode(qba),
            dp=DpSettings(4.0, 1e-5, 1.0) if dp else None,
            aggregator=aggregator,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    check_task(spec)
    return spec


@dataclass
class Workspace:
    """A publisher directory; `create` writes a new one, `open` reads an existing one."""

    path: Path
    task: TaskSpec
    initial_parameters: bytes
    key: SigningKey

    @property
    def task_hash(self) -> bytes:
        return task_hash(self.task)

    @classmethod
    def create(cls, path: Path, task: TaskSpec) -> tuple[Workspace, bool]:
        """Write a new workspace, or open the existing one if it holds the same task.

        Returns (workspace, created). An existing directory with a different task is an error:
        silently replacing it would orphan every node that registered with it.
        """
        if (path / "task.bin").exists():
            existing = cls.open(path)
            if existing.task != task:
                raise WorkspaceError(
                    f"{path} already holds a different task ({existing.task.task}, "
                    f"{existing.task.n_nodes} nodes, {existing.task.rounds} rounds); "
                    "choose another --out or remove that directory"
                )
            return existing, False
        path.mkdir(parents=True, exist_ok=True)
        (path / "registrations").mkdir(exist_ok=True)
        torch.set_num_threads(1)
        model = build_model(task.model, seed=task.seed)
        params = flatten_params(model).numpy().astype("<f4").tobytes()
        seed = secrets.token_bytes(32)
        save_seed(path / "publisher.key", seed)
        _write_atomic(path / "initial-parameters.f32", params)
        _write_atomic(path / "task.bin", task.encode())  # last: its presence marks a complete init
        return cls(path, task, params, SigningKey.from_seed(seed)), True

    @classmethod
    def open(cls, path: Path) -> Workspace:
        try:
            task = TaskSpec.decode((path / "task.bin").read_bytes())
            params = (path / "initial-parameters.f32").read_bytes()
            key = SigningKey.from_seed(load_seed(path / "publisher.key"))
        except FileNotFoundError as exc:
            raise WorkspaceError(
                f"{path} is not an initialised publisher directory ({exc.filename} is missing): "
                "run `qbfl-publisher init --task mnist` first"
            ) from exc
        (path / "registrations").mkdir(exist_ok=True)
        return cls(path, task, params, key)

    # --- registrations and genesis ----------------------------------------------------------------

    def registrations(self) -> dict[int, Registration]:
        out: dict[int, Registration] = {}
        for file in sorted((self.path / "registrations").glob("node-*.bin")):
            reg = Registration.decode(file.read_bytes())
            reg.verify(task_hash=self.task_hash)
            out[reg.node_id] = reg
        return out

    def save_registration(self, reg: Registration) -> None:
        _write_atomic(self.path / "registrations" / f"node-{reg.node_id}.bin", reg.encode())

    def genesis(self) -> GenesisBlock | None:
        file = self.path / "genesis.bin"
        return GenesisBlock.decode(file.read_bytes()) if file.exists() else None

    def make_genesis(self, registrations: dict[int, Registration]) -> GenesisBlock:
        genesis = make_genesis(
            self.task,
            self.initial_parameters,
            [r.roster_entry() for r in registrations.values()],
            self.key,
        )
        _write_atomic(self.path / "genesis.bin", genesis.encode())
        return genesis
