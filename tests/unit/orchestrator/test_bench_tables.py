"""table3's cell selection, its resumable cache and the paper's reference numbers."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from qbfl.bench import table3


def test_cells_follow_pattern_order_without_duplicates() -> None:
    cells = table3._cells("qbfl:labelflip:*,fedavg:*:20,qbfl:labelflip:10")
    assert cells[:3] == [
        ("qbfl", "labelflip", 10),
        ("qbfl", "labelflip", 15),
        ("qbfl", "labelflip", 20),
    ]
    assert cells[3:] == [("fedavg", a, 20) for a in table3.ATTACKS]
    assert len(table3._cells("*:*:*")) == 54  # the paper's 5 rules and qbfl-median
    assert len(table3._cells("qbfl*:*:*")) == 18
    with pytest.raises(click.BadParameter):
        table3._cells("qbfl:labelflip")
    with pytest.raises(click.BadParameter):
        table3._cells("mean:*:*")


def test_paper_reference_values() -> None:
    assert table3.paper_value("mnist", "qbfl", "labelflip", 10) == 97.21
    assert table3.paper_value("fashion-mnist", "krum", "gaussian", 20) == 77.17
    assert table3.paper_value("mnist", "fedavg", "bitflip", 15) == 92.94
    # a variant beyond the paper is compared with the row of the rule it varies
    assert table3.paper_value("mnist", "qbfl-median", "bitflip", 15) == 95.16


def test_cached_run_computes_once_per_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(table3, "CACHE_ROOT", tmp_path)
    calls = []

    def compute() -> dict[str, float]:
        calls.append(1)
        return {"mean_last_20": 0.5}

    doc = {"task": "mnist", "rounds": 3}
    first, cached1 = table3.cached_run("t", doc, compute)
    second, cached2 = table3.cached_run("t", dict(reversed(list(doc.items()))), compute)
    third, cached3 = table3.cached_run("t", doc | {"rounds": 4}, compute)
    assert (cached1, cached2, cached3) == (False, True, False)
    assert len(calls) == 2
    assert first["mean_last_20"] == second["mean_last_20"] == 0.5
    assert second["config"] == doc
