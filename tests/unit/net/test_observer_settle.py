"""The run summary waits (boundedly) for honest nodes still applying the last block."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from qbfl.consensus.inmemory import synthetic_genesis
from qbfl.net.observer import ChainObserver


def _node(node: int, role: str, height: int, head: str = "aa") -> dict[str, Any]:
    return {"node": node, "role": role, "reachable": True, "height": height, "head_hash": head}


def _observer(
    monkeypatch: pytest.MonkeyPatch, answers: list[list[dict[str, Any]]]
) -> ChainObserver:
    genesis, _ = synthetic_genesis(3, 8, seed=0, committee_size=3)
    observer = ChainObserver(genesis, addresses={0: "a", 1: "b", 2: "c"}, evaluate=False)
    observer.chain = SimpleNamespace(height=3, head_hash=b"\xaa")  # type: ignore[assignment]
    calls = iter(answers)
    last: list[list[dict[str, Any]]] = []

    def summaries() -> list[dict[str, Any]]:
        last[:] = [next(calls, last[0] if last else [])]
        return last[0]

    monkeypatch.setattr(observer, "node_summaries", summaries)
    return observer


def test_waits_for_an_honest_node_one_block_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    behind = [_node(0, "honest", 3), _node(1, "honest", 2, "bb"), _node(2, "honest", 3)]
    caught_up = [_node(0, "honest", 3), _node(1, "honest", 3), _node(2, "honest", 3)]
    observer = _observer(monkeypatch, [behind, behind, caught_up])
    nodes = observer.settled_node_summaries(wait_s=10.0)
    assert nodes == caught_up
    assert observer.summary(nodes)["honest_heads_agree"] is True


def test_gives_up_after_the_wait_and_reports_disagreement(monkeypatch: pytest.MonkeyPatch) -> None:
    behind = [_node(0, "honest", 3), _node(1, "honest", 2, "bb"), _node(2, "honest", 3)]
    observer = _observer(monkeypatch, [behind] * 100)
    nodes = observer.settled_node_summaries(wait_s=0.5)
    assert nodes == behind
    assert observer.summary(nodes)["honest_heads_agree"] is False


def test_a_forked_head_at_full_height_is_not_waited_on(monkeypatch: pytest.MonkeyPatch) -> None:
    forked = [_node(0, "honest", 3), _node(1, "honest", 3, "bb"), _node(2, "malicious", 1)]
    observer = _observer(monkeypatch, [forked, []])
    nodes = observer.settled_node_summaries(wait_s=10.0)
    assert nodes == forked  # no second poll: nobody honest is behind
    assert observer.summary(nodes)["honest_heads_agree"] is False
