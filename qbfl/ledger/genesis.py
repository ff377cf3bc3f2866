"""The task specification and the publisher-signed genesis block: the root of every node's chain (§4.1)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from qbfl.errors import InvalidSignature
from qbfl.ledger.encoding import (
    MAX_COMMITTEE_SIZE,
    MAX_IDS,
    MAX_UPDATE_BYTES,
    SIGNATURE_MAX_LEN,
    CanonicalRecord,
    EncodingError,
    Field,
    FieldKind,
    RecordSchema,
    build_record,
    decode_record,
    is_strictly_increasing,
)
from qbfl.ledger.signer import Signer, digest, verify_signature

GENESIS_CONTEXT = b"qbfl/genesis/v1"
GENESIS_HEIGHT = 0
GENESIS_ROUND = 0


class TaskName(StrEnum):
    """The learning tasks of Section 5.1."""

    MNIST = "mnist"
    FASHION_MNIST = "fashion-mnist"


class QbaMode(StrEnum):
    """DESIGN §6: `detectable` (default, sound) or `paper` (Appendix A.2 as written)."""

    DETECTABLE = "detectable"
    PAPER = "paper"


@dataclass(frozen=True)
class DpSettings(CanonicalRecord):
    """Differential privacy for local training (§2.2), as Opacus takes it."""

    target_epsilon: float
    target_delta: float
    max_grad_norm: float

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        8,
        "DpSettings",
        (
            Field(1, "target_epsilon", FieldKind.FLOAT64),
            Field(2, "target_delta", FieldKind.FLOAT64),
            Field(3, "max_grad_norm", FieldKind.FLOAT64),
        ),
    )

    def __post_init__(self) -> None:
        # Infinite ε or clipping norm would mean no privacy at all while the genesis claims DP;
        # NaN fails every comparison, so the `not x > 0` forms reject it too.
        if not _finite(self.target_epsilon, self.target_delta, self.max_grad_norm):
            raise ValueError("DP settings must be finite numbers")
        if not self.target_epsilon > 0 or not 0 < self.target_delta < 1:
            raise ValueError("DP needs target_epsilon > 0 and 0 < target_delta < 1")
        if not self.max_grad_norm > 0:
            raise ValueError("DP needs max_grad_norm > 0")


def _finite(*values: object) -> bool:
    """True when every value is a real number (not a bool) and finite."""
    return all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


@dataclass(frozen=True)
class TaskSpec(CanonicalRecord):
    """Everything every node must agree on before round 1; part of the genesis hash.

    initial_stake defaults to 1: the paper (§4.2) only says stakes start equal, and 1 makes
    a stake read as "1 + times selected − times penalised". A client penalised twice before
    ever being selected goes below 0; qbfl.consensus.stakes does not floor it (Alg. 3 line 22
    as written) and select_committee gives stakes ≤ 0 no weight.
    """

    task: TaskName | str  # a plain name is coerced to TaskName
    model: str
    n_nodes: int
    rounds: int
    seed: int
    lr: float
    f: int | None = None  # None → ⌊0.4·N⌋ (DESIGN §5 step 3)
    committee_size: int = 5  # Nc; f_c = ⌊(Nc − 1)/2⌋
    initial_stake: int = 1
    round_timeout_s: float = 60.0
    qba_mode: QbaMode | str = QbaMode.DETECTABLE  # coerced to QbaMode
    dp: DpSettings | None = None
    aggregator: str = "qbfl"  # the rule every member recomputes (qbfl.aggregation registry name)

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        5,
        "TaskSpec",
        (
            Field(1, "task", FieldKind.STR, max_len=64),
            Field(2, "model", FieldKind.STR, max_len=256),
            Field(3, "n_nodes", FieldKind.UINT),
            Field(4, "f", FieldKind.UINT),
            Field(5, "committee_size", FieldKind.UINT),
            Field(6, "rounds", FieldKind.UINT),
            Field(7, "seed", FieldKind.UINT),
            Field(8, "lr", FieldKind.FLOAT64),
            Field(9, "initial_stake", FieldKind.UINT),
            Field(10, "round_timeout_s", FieldKind.FLOAT64),
            Field(11, "qba_mode", FieldKind.STR, max_len=64),
            Field(12, "dp", FieldKind.BYTES, optional=True, max_len=256),
            Field(13, "aggregator", FieldKind.STR, max_len=64),
        ),
    )

    def __post_init__(self) -> None:
        # Coerce plain strings from a CLI or a decoder into the enums, rejecting unknown names.
        try:
            object.__setattr__(self, "task", TaskName(self.task))
            object.__setattr__(self, "qba_mode", QbaMode(self.qba_mode))
        except ValueError as exc:
            raise ValueError(f"TaskSpec: {exc}") from None
        if self.f is None:
            object.__setattr__(self, "f", (4 * self.n_nodes) // 10)
        if not 1 <= self.n_nodes <= MAX_IDS:
            raise ValueError(f"TaskSpec: n_nodes must be in 1..{MAX_IDS} (a roster's id limit)")
        if self.f is None or not 0 <= self.f < self.n_nodes:
            raise ValueError("TaskSpec: need 0 <= f < n_nodes")
        if not 1 <= self.committee_size <= min(self.n_nodes, MAX_COMMITTEE_SIZE):
            raise ValueError(
                f"TaskSpec: need 1 <= committee_size <= min(n_nodes, {MAX_COMMITTEE_SIZE})"
            )
        if self.rounds < 1 or self.initial_stake < 1 or self.seed < 0:
            raise ValueError("TaskSpec: rounds and initial_stake must be >= 1, seed >= 0")
        # An infinite timeout would never end a failed view; an infinite lr destroys the model.
        if not _finite(self.lr, self.round_timeout_s):
            raise ValueError("TaskSpec: lr and round_timeout_s must be finite numbers")
        if not self.lr > 0 or not self.round_timeout_s > 0:
            raise ValueError("TaskSpec: lr and round_timeout_s must be positive")
        if not self.model:
            raise ValueError("TaskSpec: model name is empty")
        if not self.aggregator:
            raise ValueError("TaskSpec: aggregator name is empty")

    def _values(self) -> dict[str, Any]:
        values = super()._values()
        values["task"] = str(self.task)
        values["qba_mode"] = str(self.qba_mode)
        values["dp"] = None if self.dp is None else self.dp.encode()
        return values

    @classmethod
    def decode(cls, data: bytes) -> TaskSpec:
        values = decode_record(cls.SCHEMA, data)
        if values["dp"] is not None:
            values["dp"] = DpSettings.decode(values["dp"])  # EncodingError, like every decoder
        return build_record(cls, values)

    @property
    def committee_faults(self) -> int:
        """f_c: faults the committee tolerates with an honest majority (Nc = 2 f_c + 1)."""
        return (self.committee_size - 1) // 2


@dataclass(frozen=True)
class RosterEntry(CanonicalRecord):
    """One registered node: its id, ML-DSA public key and network address (§4.1)."""

    node_id: int
    public_key: bytes
    address: str

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        6,
        "RosterEntry",
        (
            Field(1, "node_id", FieldKind.UINT),
            Field(2, "public_key", FieldKind.BYTES, max_len=4096),
            Field(3, "address", FieldKind.STR, max_len=512),
        ),
    )


@dataclass(frozen=True)
class GenesisBlock(CanonicalRecord):
    """Height 0: the task, the initial parameters and the roster, signed by the publisher."""

    task: TaskSpec
    initial_parameters: bytes  # float32 little-endian, canonical parameter order
    roster: tuple[RosterEntry, ...]  # sorted by node id, unique
    publisher_public_key: bytes
    publisher_signature: bytes | None = None

    height: ClassVar[int] = GENESIS_HEIGHT
    round: ClassVar[int] = GENESIS_ROUND

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        7,
        "GenesisBlock",
        (
            Field(1, "task", FieldKind.BYTES, max_len=4096),
            Field(2, "initial_parameters", FieldKind.FLOAT32_ARRAY, max_len=4 + MAX_UPDATE_BYTES),
            Field(3, "roster", FieldKind.BYTES_SEQ, max_len=16 << 20, max_count=MAX_IDS),
            Field(4, "publisher_public_key", FieldKind.BYTES, max_len=4096),
            Field(
                5, "publisher_signature", FieldKind.BYTES, optional=True, max_len=SIGNATURE_MAX_LEN
            ),
        ),
    )

    def _values(self) -> dict[str, Any]:
        ids = [e.node_id for e in self.roster]
        if not is_strictly_increasing(ids):
            raise EncodingError("GenesisBlock.roster must be sorted by node id, unique")
        values = super()._values()
        values["task"] = self.task.encode()
        values["roster"] = [e.encode() for e in self.roster]
        return values

    @classmethod
    def decode(cls, data: bytes) -> GenesisBlock:
        values = decode_record(cls.SCHEMA, data)
        values["task"] = TaskSpec.decode(values["task"])
        values["roster"] = tuple(RosterEntry.decode(raw) for raw in values["roster"])
        ids = [e.node_id for e in values["roster"]]
        if not is_strictly_increasing(ids):
            raise EncodingError("GenesisBlock.roster must be sorted by node id, unique")
        return build_record(cls, values)

    @functools.cached_property
    def block_hash(self) -> bytes:
        """The chain's root: block 1's prev_hash and the seed of round 1's committee."""
        return digest(self.encode())

    @property
    def committee_seed(self) -> bytes:
        """Round 1's committee seed: the genesis hash (signed once by the publisher, before any
        node can influence it)."""
        return self.block_hash

    def signing_payload(self) -> bytes:
        return dataclasses.replace(self, publisher_signature=None).encode()

    @property
    def param_count(self) -> int:
        return len(self.initial_parameters) // 4

    @functools.cached_property
    def public_keys(self) -> dict[int, bytes]:
        return {e.node_id: e.public_key for e in self.roster}

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(e.node_id for e in self.roster)


def make_genesis(
    task: TaskSpec,
    initial_parameters: bytes,
    roster: Sequence[RosterEntry],
    publisher_key: Signer,
) -> GenesisBlock:
    """Build and sign the genesis block; the roster is put in node-id order."""
    ordered = tuple(sorted(roster, key=lambda e: e.node_id))
    if len({e.node_id for e in ordered}) != len(ordered):
        raise ValueError("roster node ids must be unique")
    if len(ordered) != task.n_nodes:
        raise ValueError(f"roster has {len(ordered)} nodes, the task says {task.n_nodes}")
    if not initial_parameters or len(initial_parameters) % 4:
        raise ValueError("initial parameters must be non-empty float32 bytes")
    unsigned = GenesisBlock(task, initial_parameters, ordered, publisher_key.public_key)
    signature = publisher_key.sign(unsigned.signing_payload(), context=GENESIS_CONTEXT)
    return dataclasses.replace(unsigned, publisher_signature=signature)


def verify_genesis(genesis: GenesisBlock, *, publisher_public_key: bytes | None = None) -> None:
    """Raise InvalidSignature unless the publisher signed this genesis.

    Pass `publisher_public_key` when it is known out of band; otherwise the key embedded in
    the block is used, which proves integrity of the bytes but not who published them.
    """
    if publisher_public_key is not None and publisher_public_key != genesis.publisher_public_key:
        raise InvalidSignature("genesis was signed by a different publisher key")
    if genesis.publisher_signature is None:
        raise InvalidSignature("genesis is not signed")
    verify_signature(
        genesis.publisher_public_key,
        genesis.signing_payload(),
        genesis.publisher_signature,
        context=GENESIS_CONTEXT,
    )
