"""ByzFL's aggregators and attacks without its package __init__ (which needs torchvision), for comparisons.

ByzFL 0.0.11 (EPFL, PyPI `byzfl`) declares torchvision, and `byzfl/__init__.py` imports its
federated framework, whose data distributor imports torchvision. PyPI's torchvision wheels are
built against other torch versions and break beside this project's CPU torch 2.13. The modules we
compare against need only torch, numpy and scipy: `byzfl/aggregators/{aggregators,
preaggregators}.py`, `byzfl/attacks/attacks.py` and `byzfl/utils/`. So the dev setup installs
byzfl with `--no-deps`, and `load_byzfl` registers an empty package object named `byzfl` whose
`__path__` is the installed directory: Python's import machinery then loads
`byzfl.aggregators`, `byzfl.attacks` and `byzfl.utils` from the real files (their own absolute
`from byzfl.utils.misc import …` resolve through it), and `byzfl/__init__.py` never runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass


class ByzflUnavailable(ImportError):
    """byzfl is not installed (scripts/setup.sh installs it with --no-deps)."""


@dataclass(frozen=True)
class Byzfl:
    """The three ByzFL modules we use."""

    aggregators: (
        types.ModuleType
    )  # Average, Median, TrMean, GeometricMedian, Krum, MultiKrum, CenteredClipping, …
    preaggregators: types.ModuleType  # NNM, Bucketing, Clipping, ARC
    attacks: (
        types.ModuleType
    )  # SignFlipping, InnerProductManipulation, ALittleIsEnough, Gaussian, …
    version: str


def load_byzfl() -> Byzfl:
    """Import ByzFL's aggregator and attack modules from the installed files, skipping its __init__."""
    loaded = sys.modules.get("byzfl")
    if loaded is None:
        spec = importlib.util.find_spec("byzfl")  # locates, does not execute, the package
        if spec is None or not spec.submodule_search_locations:
            raise ByzflUnavailable(
                "byzfl is not installed; run scripts/setup.sh or "
                ".venv/bin/pip install --no-deps byzfl==0.0.11"
            )
        package = types.ModuleType("byzfl")
        package.__path__ = list(spec.submodule_search_locations)
        package.__package__ = "byzfl"
        package.__spec__ = spec
        sys.modules["byzfl"] = package
    from importlib.metadata import version

    return Byzfl(
        aggregators=importlib.import_module("byzfl.aggregators.aggregators"),
        preaggregators=importlib.import_module("byzfl.aggregators.preaggregators"),
        attacks=importlib.import_module("byzfl.attacks.attacks"),
        version=version("byzfl"),
    )
