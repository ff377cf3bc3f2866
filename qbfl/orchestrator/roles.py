"""Malicious-role specs (`10:labelflip,3:oppose`) and their deterministic assignment to node ids.

A spec is a comma-separated list of `COUNT:ROLE[+ROLE...]` groups: `4:labelflip,2:bitflip+oppose`
makes 4 label flippers and 2 nodes that flip their updates' sign and oppose valid consensus
messages. Which ids play them is the simulator's seeded choice (`simulate.malicious_ids`): the
same (nodes, total malicious, seed) marks the same ids malicious in `simulate`, the local and Docker
backends, compose files and Kubernetes manifests; the groups then take those ids in ascending
order, in the order the spec lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from qbfl.errors import ConfigError
from qbfl.node import roles as node_roles

# DESIGN.md §7: the roles `qbfl-node start --malicious` accepts (one source: qbfl.node.roles).
MODEL_ROLES = node_roles.MODEL_ROLES
CONSENSUS_ROLES = node_roles.CONSENSUS_ROLES
NODE_ROLES = node_roles.ROLES

# The documented default of the committed docker-compose.yml (docs/containers.md): 10 model
# attackers and 4 consensus attackers among 50 nodes, below f = ⌊0.4·50⌋ = 20.
DEFAULT_MALICIOUS_SPEC = "4:labelflip,3:bitflip,3:gaussian,2:oppose,1:equivocate,1:wrongagg"


@dataclass(frozen=True)
class RoleGroup:
    """`count` nodes that each play all of `roles` (the spelling a command line takes)."""

    count: int
    roles: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"a role group needs a count >= 0, got {self.count}")
        if not self.roles:
            raise ValueError("a role group needs at least one role")
        if len(set(self.roles)) != len(self.roles):
            raise ValueError(f"role group {'+'.join(self.roles)} repeats a role")
        try:
            node_roles.parse_roles(["+".join(self.roles)])
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    def __str__(self) -> str:
        return f"{self.count}:{'+'.join(self.roles)}"


def parse_malicious_spec(spec: str) -> tuple[RoleGroup, ...]:
    """`"10:labelflip,3:oppose"` → its groups; "" or "none" → no malicious node."""
    text = spec.strip()
    if text in {"", "none", "0"}:
        return ()
    groups: list[RoleGroup] = []
    for item in text.split(","):
        count_text, sep, roles_text = item.strip().partition(":")
        if not sep:
            raise ValueError(f"{item.strip()!r} is not COUNT:ROLE (e.g. 10:labelflip)")
        try:
            count = int(count_text)
        except ValueError:
            raise ValueError(f"{item.strip()!r}: {count_text!r} is not a count") from None
        roles = tuple(r.strip() for r in roles_text.split("+"))
        groups.append(RoleGroup(count, roles))
    return tuple(groups)


def format_malicious_spec(groups: tuple[RoleGroup, ...]) -> str:
    return ",".join(str(g) for g in groups) or "none"


def malicious_ids(nodes: int, count: int, *, seed: int) -> tuple[int, ...]:
    """The seeded choice of `count` malicious ids among `nodes` (identical to the simulator's)."""
    try:
        return node_roles.malicious_ids(nodes, count, seed)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def assign_roles(
    nodes: int, groups: tuple[RoleGroup, ...], *, seed: int
) -> Mapping[int, tuple[str, ...]]:
    """Node id → roles for every malicious node (honest ids are absent), deterministic in seed:
    the same ids and groups as qbfl.node.roles.assign_roles (the local backend's)."""
    total = sum(g.count for g in groups)
    if total > nodes:
        raise ValueError(f"the spec names {total} malicious nodes but there are only {nodes}")
    ids = iter(malicious_ids(nodes, total, seed=seed))
    return {next(ids): g.roles for g in groups for _ in range(g.count)}


def role_label(roles: tuple[str, ...]) -> str:
    """How a node's roles appear in labels and logs: `honest`, `labelflip`, `bitflip+oppose`."""
    return "+".join(roles) if roles else "honest"
