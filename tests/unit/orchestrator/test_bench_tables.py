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
    assert len(table3._cells("*:*:*")) == 63  # the paper's 5 rules and our two variants
    assert len(table3._cells("qbfl*:*:*")) == 27
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


def test_fig4_runs_dp_caches_the_run_and_draws_the_curves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from click.testing import CliRunner

    from qbfl.bench.cli import main

    monkeypatch.chdir(tmp_path)  # cache and results land under ./bench/results here
    args = ["fig4", "--rounds", "1", "--malicious", "0", "--json"]
    runs = [CliRunner().invoke(main, args) for _ in range(2)]
    docs = []
    for run in runs:
        assert run.exit_code == 0, run.output
        docs.append(json.loads(run.output[run.output.index('{\n  "benchmark"') :]))
    first, again = docs[0]["rows"][0], docs[1]["rows"][0]
    assert (first["cached"], again["cached"]) == (False, True)
    assert first["final_%"] == again["final_%"] > 10.0  # one DP round already learns something
    assert first["paper_final_%"] == 95.59
    assert 3.5 < first["spent_epsilon"] <= 4.0 + 1e-6  # σ is calibrated to spend ε = 4 in the run
    assert (tmp_path / "bench/results/fig4-mnist.png").stat().st_size > 0


def test_table2_central_lr_is_its_own_cached_cell_and_bad_values_are_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from click.testing import CliRunner

    from qbfl.bench.cli import main

    monkeypatch.chdir(tmp_path)
    base = ["table2", "--dataset", "mnist", "--scenario", "centralized", "--rounds", "1"]
    for bad in ("0", "-0.1", "x"):
        run = CliRunner().invoke(main, [*base, "--central-lr", bad])
        assert run.exit_code == 2 and "--central-lr" in run.output, run.output
    run = CliRunner().invoke(main, [*base, "--central-lr", "0.01", "--json"])
    assert run.exit_code == 0, run.output
    rows = json.loads(run.output[run.output.index('{\n  "benchmark"') :])["rows"]
    assert [(r["model"], r["lr"], r["cached"]) for r in rows] == [
        ("fcnn", 0.01, False),
        ("fcnn-mpo", 0.01, False),
    ]
    assert all(r["ours_%"] > 80 for r in rows)  # one full-data epoch already learns MNIST
    stored = [
        json.loads(p.read_text()) for p in (tmp_path / "bench/results/cache/table2").glob("*")
    ]
    assert sorted(d["config"]["lr"] for d in stored) == [0.01, 0.01]
    # the default learning rate is another cell: --cached-only finds nothing for it
    run = CliRunner().invoke(main, [*base, "--cached-only", "--json"])
    assert run.exit_code == 0 and '"rows": []' in run.output, run.output


def _bench_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> dict:
    import json

    from click.testing import CliRunner

    from qbfl.bench.cli import main

    monkeypatch.chdir(tmp_path)  # cache and results land under ./bench/results here
    run = CliRunner().invoke(main, [*args, "--json"])
    assert run.exit_code == 0, run.output
    return dict(json.loads(run.output[run.output.index('{\n  "benchmark"') :]))


def test_fig4_round_accounting_is_its_own_cell_with_the_composed_epsilon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["fig4", "--rounds", "2", "--malicious", "0", "--dp-accounting", "round"]
    row = _bench_json(tmp_path, monkeypatch, args)["rows"][0]
    assert row["accounting"] == "round" and row["final_%_under_run"] == ""  # not cached here
    assert row["round_epsilon"] == pytest.approx(4.0, abs=0.01)
    assert row["spent_epsilon"] > 4.5  # two (4, 1e-5) rounds compose to more
    assert (tmp_path / "bench/results/fig4-mnist-round.png").is_file()


def test_robustness_caches_each_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["robustness", "--rounds", "1", "--cells", "qbfl:ipm,bulyan:alie"]
    first = _bench_json(tmp_path, monkeypatch, args)
    again = _bench_json(tmp_path, monkeypatch, args)
    assert [(r["rule"], r["attack"], r["cached"]) for r in first["rows"]] == [
        ("qbfl", "ipm", False),
        ("bulyan", "alie", False),
    ]
    assert all(r["cached"] for r in again["rows"])
    assert first["rows"][1]["f_used"] == "11"  # Bulyan at N = 50: 4f + 3 ≤ 50
    assert set(first["best_of_ours"]) == {"ipm"}
    # a rule's worst case needs all six attacks run: no verdict from two cells
    assert first["worst_attack_per_rule"] == {} and first["best_rule_worst_case"] is None


def test_aggregators_times_every_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qbfl.bench.aggregators import RULES

    doc = _bench_json(
        tmp_path, monkeypatch, ["aggregators", "--n", "12", "--f", "3", "--dims", "20,40"]
    )
    assert [(r["d"], r["rule"]) for r in doc["rows"]] == [(d, r) for d in (20, 40) for r in RULES]
    assert all(r["ours_ms"] > 0 for r in doc["rows"])
    if doc["byzfl_version"] is not None:
        krum = next(r for r in doc["rows"] if r["rule"] == "krum")
        assert krum["byzfl_ms"] > 0
