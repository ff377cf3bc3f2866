"""The protocol core must not import transport, container or CLI libraries (STYLE.md rule 1)."""

import ast
from pathlib import Path

import pytest

CORE = ["learning", "crypto", "consensus", "ledger", "aggregation"]
FORBIDDEN = ("grpc", "qbfl._proto", "docker", "click", "socket", "qbfl.node", "qbfl.orchestrator")
ROOT = Path(__file__).resolve().parents[2] / "qbfl"


def _core_files() -> list[Path]:
    files = [ROOT / "errors.py"]
    for pkg in CORE:
        files += sorted((ROOT / pkg).rglob("*.py"))
    return files


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_transport(path: Path) -> None:
    bad = {n for n in _imports(path) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)}
    assert not bad, f"{path} imports {sorted(bad)}; the protocol core must stay transport-free"


def test_every_module_has_a_docstring() -> None:
    missing = [
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if "_proto" not in p.parts and ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert not missing, f"modules without a one-line docstring: {missing}"
