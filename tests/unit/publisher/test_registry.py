"""Publisher workspace and registry: idempotent init, proof of possession, restarts, genesis."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from qbfl.crypto.signing import SigningKey
from qbfl.errors import ConfigError, InvalidSignature
from qbfl.ledger.genesis import verify_genesis
from qbfl.ledger.registration import Registration
from qbfl.publisher.service import RegistrationRefused, Registry
from qbfl.publisher.workspace import Workspace, WorkspaceError, build_task


def _task(nodes: int = 4, **kw: object):  # type: ignore[no-untyped-def]
    options = (
        dict(
            task="mnist",
            nodes=nodes,
            f=None,
            committee=3,
            rounds=4,
            qba="detectable",
            seed=0,
            aggregator="qbfl",
            round_timeout_s=10.0,
            dp=False,
        )
        | kw
    )
    return build_task(**options)  # type: ignore[arg-type]


def _key(i: int) -> SigningKey:
    return SigningKey.from_seed(bytes([i + 1]) * 32)


def _reg(
    ws: Workspace, i: int, key: SigningKey | None = None, port: int | None = None
) -> Registration:
    key = key or _key(i)
    return Registration(i, key.public_key, f"127.0.0.1:{port or 51000 + i}", ws.task_hash).signed(
        key
    )


def test_init_is_idempotent_and_refuses_a_different_task(tmp_path: Path) -> None:
    ws, created = Workspace.create(tmp_path / "pub", _task())
    assert created
    again, created = Workspace.create(tmp_path / "pub", _task())
    assert not created and again.task == ws.task and again.key.public_key == ws.key.public_key
    with pytest.raises(WorkspaceError, match="different task"):
        Workspace.create(tmp_path / "pub", _task(nodes=5))
    assert (tmp_path / "pub" / "publisher.key").stat().st_mode & 0o077 == 0


def test_open_names_the_missing_init(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="qbfl-publisher init"):
        Workspace.open(tmp_path / "nothing")


def test_impossible_tasks_are_refused() -> None:
    with pytest.raises(ConfigError, match="--committee 5 is larger than --nodes 4"):
        _task(nodes=4, committee=5)
    with pytest.raises(ConfigError, match="QBA needs"):
        _task(nodes=4, committee=2)
    with pytest.raises(ConfigError, match="unknown aggregator"):
        _task(aggregator="nope")


def test_registration_builds_a_signed_genesis_once_all_nodes_are_in(tmp_path: Path) -> None:
    ws, _ = Workspace.create(tmp_path, _task())
    registry = Registry(ws)
    assert registry.register(_reg(ws, 0)) == 1
    assert registry.register(_reg(ws, 0)) == 1  # the same registration again: nothing changes
    registry.register(_reg(ws, 1))
    registry.register(_reg(ws, 2))
    assert registry.genesis is None
    registry.register(_reg(ws, 3))
    genesis = registry.genesis
    assert genesis is not None and registry.ready.is_set()
    verify_genesis(genesis, publisher_public_key=ws.key.public_key)
    assert [e.node_id for e in genesis.roster] == [0, 1, 2, 3]


def test_registrations_and_genesis_survive_a_restart(tmp_path: Path) -> None:
    ws, _ = Workspace.create(tmp_path, _task())
    registry = Registry(ws)
    registry.register(_reg(ws, 0))
    registry.register(_reg(ws, 1))
    restarted = Registry(Workspace.open(tmp_path))
    assert restarted.registered == 2
    restarted.register(_reg(ws, 2))
    restarted.register(_reg(ws, 3))
    genesis = restarted.genesis
    assert genesis is not None
    again = Registry(Workspace.open(tmp_path))
    assert again.genesis == genesis
    assert again.register(_reg(ws, 1)) == 4  # a node re-registering after a crash just works


def test_a_taken_id_with_another_key_is_refused(tmp_path: Path) -> None:
    ws, _ = Workspace.create(tmp_path, _task())
    registry = Registry(ws)
    registry.register(_reg(ws, 0))
    with pytest.raises(RegistrationRefused, match="another key"):
        registry.register(_reg(ws, 0, key=_key(9)))


def test_forged_or_foreign_registrations_are_refused(tmp_path: Path) -> None:
    ws, _ = Workspace.create(tmp_path, _task())
    registry = Registry(ws)
    good = _reg(ws, 0)
    forged = dataclasses.replace(good, public_key=_key(5).public_key)  # someone else's key
    with pytest.raises(InvalidSignature):
        registry.register(forged)
    foreign = Registration(0, _key(0).public_key, "127.0.0.1:1", b"\x00" * 32).signed(_key(0))
    with pytest.raises(InvalidSignature, match="another task"):
        registry.register(foreign)
    with pytest.raises(RegistrationRefused, match="outside"):
        registry.register(_reg(ws, 7))
    assert registry.registered == 0


def test_after_genesis_the_address_must_match(tmp_path: Path) -> None:
    ws, _ = Workspace.create(tmp_path, _task())
    registry = Registry(ws)
    for i in range(4):
        registry.register(_reg(ws, i))
    with pytest.raises(RegistrationRefused, match="--advertise"):
        registry.register(_reg(ws, 1, port=1234))
