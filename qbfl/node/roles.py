"""Malicious roles (DESIGN §7) as a node takes them: parsing `--malicious`, and who plays what.

A node has at most one model attack (what it does to its data and update) and any number of
consensus attacks (how it behaves on the committee; one is drawn per (round, view) among them).
`byzantine` stands for all consensus attacks, so the paper's Fig. 4 adversary — a random model
attack each round and adversarial behaviour in consensus — is `random+byzantine`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from qbfl.consensus.attacks import CONSENSUS_ATTACKS, ConductPolicy, ConsensusAttacker, HonestPolicy
from qbfl.errors import ConfigError

MODEL_ROLES = ("labelflip", "bitflip", "gaussian", "random")
BYZANTINE = "byzantine"  # every consensus attack, one drawn per (round, view)
CONSENSUS_ROLES = (*sorted(CONSENSUS_ATTACKS), BYZANTINE)
ROLES = (*MODEL_ROLES, *CONSENSUS_ROLES)


@dataclass(frozen=True)
class Roles:
    """What one node does wrong; the empty Roles() is an honest node."""

    model: str | None = None
    consensus: tuple[str, ...] = ()

    @property
    def honest(self) -> bool:
        return self.model is None and not self.consensus

    @property
    def label(self) -> str:
        """`honest`, or the roles joined with '+' (the syntax `parse_roles` reads back)."""
        consensus = (
            [BYZANTINE] if set(self.consensus) == set(CONSENSUS_ATTACKS) else list(self.consensus)
        )
        names = ([self.model] if self.model else []) + consensus
        return "+".join(names) if names else "honest"

    def policy(self, seed: int) -> ConductPolicy:
        """The node's consensus conduct: honest, or its attacks drawn per (round, view)."""
        if not self.consensus:
            return HonestPolicy()
        return ConsensusAttacker(self.consensus, seed=seed)


def parse_roles(items: Iterable[str]) -> Roles:
    """Roles from `--malicious` values; each may join several with '+' (`random+byzantine`)."""
    names: list[str] = []
    for item in items:
        names += [n.strip() for n in item.split("+")]
    unknown = [n for n in names if n not in ROLES]
    if unknown:
        raise ConfigError(f"unknown role(s) {unknown}; valid: {', '.join(ROLES)}")
    models = sorted({n for n in names if n in MODEL_ROLES})
    if len(models) > 1:
        raise ConfigError(f"a node takes at most one model attack, got {models}")
    consensus: set[str] = set()
    for n in names:
        if n == BYZANTINE:
            consensus |= set(CONSENSUS_ATTACKS)
        elif n in CONSENSUS_ATTACKS:
            consensus.add(n)
    return Roles(models[0] if models else None, tuple(sorted(consensus)))


@dataclass(frozen=True)
class RoleGroup:
    count: int
    roles: Roles


def parse_malicious_spec(spec: str) -> tuple[RoleGroup, ...]:
    """`20:labelflip,5:oppose,2:random+byzantine` → groups; '', '0' or 'none' → no malicious node
    (as qbfl.orchestrator.roles, which `compose` and `k8s` use, reads the same spec)."""
    spec = spec.strip()
    if spec in ("", "0", "none"):
        return ()
    groups: list[RoleGroup] = []
    for part in spec.split(","):
        count, sep, roles = part.partition(":")
        if not sep or not count.strip().isdigit():
            raise ConfigError(
                f"malicious group {part!r}: expected COUNT:ROLE[+ROLE], e.g. 20:labelflip"
            )
        parsed = parse_roles([roles])
        if parsed.honest:
            raise ConfigError(f"malicious group {part!r} names no role")
        if int(count) > 0:
            groups.append(RoleGroup(int(count), parsed))
    return tuple(groups)


def malicious_ids(n_nodes: int, count: int, seed: int) -> tuple[int, ...]:
    """A seeded choice of `count` of `n_nodes` ids (the plain simulator's choice for the same seed)."""
    if not 0 <= count <= n_nodes:
        raise ConfigError(f"{count} malicious nodes but only {n_nodes} nodes")
    rng = np.random.default_rng([seed, 0x6D616C])
    return tuple(sorted(int(i) for i in rng.choice(n_nodes, size=count, replace=False)))


def assign_roles(groups: Iterable[RoleGroup], n_nodes: int, seed: int) -> dict[int, Roles]:
    """Node id → Roles for every malicious node: the seeded ids, handed out to the groups in order."""
    groups = tuple(groups)
    ids = malicious_ids(n_nodes, sum(g.count for g in groups), seed)
    out: dict[int, Roles] = {}
    at = 0
    for group in groups:
        for node_id in ids[at : at + group.count]:
            out[node_id] = group.roles
        at += group.count
    return out


def describe(assignment: Mapping[int, Roles]) -> str:
    """`3 labelflip (ids 4, 9, 17), 1 oppose (id 2)` for logs and summaries."""
    by_label: dict[str, list[int]] = {}
    for node_id, roles in sorted(assignment.items()):
        by_label.setdefault(roles.label, []).append(node_id)
    return (
        ", ".join(
            f"{len(ids)} {label} (id{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))})"
            for label, ids in by_label.items()
        )
        or "none"
    )
