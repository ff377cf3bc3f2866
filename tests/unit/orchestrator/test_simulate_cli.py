"""`qbfl-orchestrator simulate`: clear errors for bad flags, and the three output files."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from qbfl.orchestrator.cli import main


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["simulate", *args])
    return result.exit_code, result.output


def test_more_malicious_than_nodes_is_a_usage_error() -> None:
    code, out = _run("--nodes", "5", "--malicious", "7")
    assert code == 2
    assert "--malicious" in out and "7 malicious clients but only 5 nodes" in out


def test_unknown_attack_aggregator_and_task_are_rejected() -> None:
    for flag, value in (("--attack", "foo"), ("--aggregator", "mean"), ("--task", "cifar")):
        code, out = _run(flag, value)
        assert code == 2, out
        assert f"'{value}' is not one of" in out


def test_negative_rounds_and_large_f_are_rejected() -> None:
    code, out = _run("--rounds", "0")
    assert code == 2 and "--rounds" in out
    code, out = _run("--nodes", "5", "--f", "5")
    assert code == 2 and "--f" in out


def test_simulate_writes_rounds_summary_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, text = _run(
        "--nodes", "6", "--malicious", "2", "--attack", "labelflip", "--rounds", "2",
        "--seed", "4", "--device", "cpu", "--out", str(out),
        "--samples-per-client", "60", "--test-samples", "300",
    )  # fmt: skip
    assert code == 0, text
    assert "round    2/2" in text and "stake honest" in text
    lines = (out / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["malicious"] == 2 and summary["config"]["f"] == 2
    assert 0.0 <= summary["final_accuracy"] <= 1.0 and "mean_last_20" in summary
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_new_options_reach_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, text = _run(
        "--nodes", "6", "--malicious", "2", "--attack", "minmax", "--aggregator", "nnm+qbfl",
        "--partition", "dirichlet", "--alpha", "0.5", "--attack-knowledge", "colluders",
        "--rounds", "1", "--device", "cpu", "--out", str(out),
        "--samples-per-client", "60", "--test-samples", "300",
    )  # fmt: skip
    assert code == 0, text
    assert "partition dirichlet α=0.5" in text
    config = json.loads((out / "summary.json").read_text())["config"]
    assert (config["partition"], config["alpha"]) == ("dirichlet", 0.5)
    assert (config["attack"], config["attack_knowledge"]) == ("minmax", "colluders")
    assert config["aggregator"] == "nnm+qbfl"


def test_alpha_without_dirichlet_is_a_usage_error() -> None:
    code, out = _run("--alpha", "0.5")
    assert code == 2 and "dirichlet" in out


def test_plain_simulator_flags_with_consensus_are_a_usage_error() -> None:
    for flags in (
        ("--partition", "dirichlet", "--alpha", "0.5"),
        ("--attack-knowledge", "colluders"),
    ):
        code, out = _run("--consensus", "--nodes", "6", "--rounds", "1", *flags)
        assert code == 2, out
        assert flags[0] in out and "plain simulator only" in out


def test_consensus_dp_accounting_without_dp_is_a_usage_error() -> None:
    code, out = _run("--consensus", "--nodes", "6", "--rounds", "1", "--dp-accounting", "round")
    assert code == 2 and "--dp-accounting needs --dp" in out


def test_consensus_trains_every_node_with_dp_per_round(tmp_path: Path) -> None:
    out = tmp_path / "dp"
    code, text = _run(
        "--consensus", "--nodes", "5", "--malicious", "1:bitflip", "--rounds", "2",
        "--qkd", "seeded", "--test-samples", "300", "--out", str(out),
        "--dp", "--dp-accounting", "round",
    )  # fmt: skip
    assert code == 0, text
    assert "DP (round): each round's release (4, 1e-5)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dp_accounting"] == "round" and summary["honest_heads_agree"]
    assert summary["rounds"] == 2
    # two releases at (4, 1e-5) each compose to more than 4, at most 8
    assert 4.0 < summary["spent_epsilon"] <= 8.0
