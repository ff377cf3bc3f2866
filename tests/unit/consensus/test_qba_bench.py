"""`qbfl-bench qba` end to end on small sizes: it runs real QBA instances and reports their counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from qbfl.bench.cli import main


def test_qba_bench_reports_exact_counts_and_writes_its_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # results go to ./bench/results, here a temporary folder
    args = ["qba", "--sizes", "3,5", "--bits", "500", "--repeat", "1", "--prepare", "4", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output[result.output.index("{") :])
    rows = {(r["mode"], r["N"]): r for r in doc["rows"]}
    assert rows[("paper", 5)]["qds_ops"] == 36  # Σ_{m=0}^{f-1} A_{N-1}^{2+m}
    assert rows[("detectable", 5)]["qds_ops"] == 12  # A_{N-1}^2
    assert rows[("paper", 3)]["qds_ops"] == rows[("detectable", 3)]["qds_ops"] == 2
    assert rows[("detectable", 5)]["key_bits"] == 12 * 768  # 6n key bits per QDS operation
    assert rows[("paper", 5)]["paper_fig5_s"] == 0.51
    assert all(r["online_s"] > 0 for r in doc["rows"])
    written = json.loads((tmp_path / "bench/results/qba.json").read_text())
    assert written["rows"] == doc["rows"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["qba", "--sizes", "2"], "2 is outside [3, inf)"),
        (["qba", "--sizes", "5,x"], "'x' is not an integer"),
        (["qba", "--bits", ""], "needs at least one number"),
        (["qba", "--repeat", "0"], "--repeat"),
        (["qkd", "--errors", "0.01,0.7"], "0.7 is outside [0.0, 0.5)"),
        (["table1", "--steps", "0"], "0 is outside [1, inf)"),
    ],
)
def test_bad_bench_flags_are_usage_errors_not_tracebacks(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
