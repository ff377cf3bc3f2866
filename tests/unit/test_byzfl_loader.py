"""The ByzFL loader fails with its own error type, naming the install command, when byzfl is absent."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from qbfl.bench import byzfl_modules


def test_missing_byzfl_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "byzfl", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(byzfl_modules.ByzflUnavailable, match="pip install --no-deps byzfl"):
        byzfl_modules.load_byzfl()


def test_loading_never_runs_the_package_init() -> None:
    try:
        loaded = byzfl_modules.load_byzfl()
    except byzfl_modules.ByzflUnavailable:
        pytest.skip("byzfl is not installed")
    assert "torchvision" not in sys.modules  # what byzfl/__init__.py would have imported
    assert "byzfl.fed_framework" not in sys.modules
    assert loaded.aggregators.__file__.endswith("byzfl/aggregators/aggregators.py")
