"""Printing a benchmark's table and writing its JSON: the one output path every benchmark uses."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path("bench/results")


def machine_description() -> dict[str, Any]:
    """What ran the benchmark, so a number is never read without its machine."""
    import os

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Render rows as an aligned plain-text table."""
    if not rows:
        return "(no rows)"
    cols = list(columns) if columns else list(rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.1f}"
        return str(v)

    table = [[cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in table]
    return "\n".join(lines)


def _command_line() -> str:
    """How this result was produced: `qbfl-bench <args>`, or the script (bench/*.py) and its args."""
    if not sys.argv:
        return ""
    program = Path(sys.argv[0])
    head = ["qbfl-bench"] if program.name == "qbfl-bench" else ["python", str(program)]
    return " ".join([*head, *sys.argv[1:]])


def emit(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    as_json: bool,
    title: str = "",
    columns: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
    results_dir: Path | None = None,
) -> dict[str, Any]:
    """Print the table (or the JSON document with --json) and write JSON under bench/results/."""
    doc: dict[str, Any] = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_description(),
        "command": _command_line(),
        "rows": list(rows),
    }
    if extra:
        doc.update(extra)
    out_dir = results_dir or RESULTS_DIR
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    except OSError as exc:  # a read-only checkout must not lose the printed result
        print(f"warning: could not write {out_dir}/{name}.json: {exc}", file=sys.stderr)
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        if title:
            print(title)
        print(format_table(rows, columns))
    return doc
