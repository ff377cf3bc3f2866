"""Malicious-role specs and their deterministic assignment (qbfl.orchestrator.roles)."""

from __future__ import annotations

import pytest

from qbfl.consensus.attacks import CONSENSUS_ATTACKS
from qbfl.learning.attacks import ATTACKS
from qbfl.node import roles as node_roles
from qbfl.orchestrator.roles import (
    DEFAULT_MALICIOUS_SPEC,
    NODE_ROLES,
    RoleGroup,
    assign_roles,
    format_malicious_spec,
    malicious_ids,
    parse_malicious_spec,
)
from qbfl.orchestrator.simulate import SimulationConfig
from qbfl.orchestrator.simulate import malicious_ids as simulator_malicious_ids


def test_parse_and_format_round_trip() -> None:
    groups = parse_malicious_spec("10:labelflip, 3:oppose,2:bitflip+oppose")
    assert groups == (
        RoleGroup(10, ("labelflip",)),
        RoleGroup(3, ("oppose",)),
        RoleGroup(2, ("bitflip", "oppose")),
    )
    assert format_malicious_spec(groups) == "10:labelflip,3:oppose,2:bitflip+oppose"
    assert parse_malicious_spec("none") == () == parse_malicious_spec("")
    # `up` and the benches read the spec with the node's parser: the same words mean no attacker
    for empty in ("none", "", "0"):
        assert node_roles.parse_malicious_spec(empty) == ()
    assert format_malicious_spec(()) == "none"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("labelflip", "COUNT:ROLE"),
        ("x:labelflip", "not a count"),
        ("3:flip", "unknown role"),
        ("-1:oppose", "count >= 0"),
        ("2:oppose+oppose", "repeats"),
        ("2:", "unknown role"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_malicious_spec(spec)


def test_assignment_is_the_simulators_seeded_choice() -> None:
    groups = parse_malicious_spec(DEFAULT_MALICIOUS_SPEC)
    total = sum(g.count for g in groups)
    for seed in (0, 1, 7):
        roles = assign_roles(50, groups, seed=seed)
        config = SimulationConfig(nodes=50, malicious=total, seed=seed)
        assert tuple(sorted(roles)) == simulator_malicious_ids(config)
        assert tuple(sorted(roles)) == malicious_ids(50, total, seed=seed)
        # Groups take the chosen ids in ascending order, in spec order.
        ids = sorted(roles)
        assert [roles[i] for i in ids[:4]] == [("labelflip",)] * 4
        assert [roles[i] for i in ids[-1:]] == [("wrongagg",)]
    assert assign_roles(50, groups, seed=0) == assign_roles(50, groups, seed=0)
    assert assign_roles(50, groups, seed=0) != assign_roles(50, groups, seed=1)


def test_more_malicious_than_nodes_is_refused() -> None:
    with pytest.raises(ValueError, match="only 5"):
        assign_roles(5, parse_malicious_spec("4:labelflip,2:oppose"), seed=0)


def test_roles_are_the_node_clis_and_exist_in_the_core() -> None:
    from qbfl.node.cli import main
    from qbfl.node.roles import BYZANTINE, parse_roles

    start = main.commands["start"]
    option = next(p for p in start.params if p.name == "malicious")
    assert all(role in (option.help or "") for role in NODE_ROLES)
    for role in NODE_ROLES:
        assert not parse_roles([role]).honest
    assert set(NODE_ROLES) - {BYZANTINE} <= set(ATTACKS) | set(CONSENSUS_ATTACKS)


def test_the_local_backend_assigns_the_same_ids_and_groups() -> None:

    spec = DEFAULT_MALICIOUS_SPEC
    ours = assign_roles(50, parse_malicious_spec(spec), seed=3)
    local = node_roles.assign_roles(node_roles.parse_malicious_spec(spec), 50, 3)
    assert {i: "+".join(r) for i, r in ours.items()} == {i: r.label for i, r in local.items()}
