"""Aggregation rules by name, for configs and flags (``--aggregator qbfl``, ``--aggregator nnm+qbfl``)."""

from __future__ import annotations

from typing import Any

from qbfl.aggregation.base import Aggregator
from qbfl.aggregation.bulyan import Bulyan
from qbfl.aggregation.cclip import CenteredClipping
from qbfl.aggregation.fedavg import FedAvg
from qbfl.aggregation.geomed import GeometricMedian
from qbfl.aggregation.krum import Krum
from qbfl.aggregation.median import Median
from qbfl.aggregation.multi_krum import MultiKrum
from qbfl.aggregation.nnm import PREFIX as NNM_PREFIX
from qbfl.aggregation.nnm import NearestNeighbourMixing
from qbfl.aggregation.qbfl_rule import (
    QbflAggregator,
    QbflDistanceAggregator,
    QbflMedianAggregator,
    RobustQbflAggregator,
)
from qbfl.aggregation.trimmed_mean import TrimmedMean

AGGREGATORS: dict[str, type] = {
    FedAvg.name: FedAvg,
    TrimmedMean.name: TrimmedMean,
    Median.name: Median,
    Krum.name: Krum,
    QbflAggregator.name: QbflAggregator,
    RobustQbflAggregator.name: RobustQbflAggregator,
    QbflMedianAggregator.name: QbflMedianAggregator,
    QbflDistanceAggregator.name: QbflDistanceAggregator,
    MultiKrum.name: MultiKrum,
    Bulyan.name: Bulyan,
    GeometricMedian.name: GeometricMedian,
    CenteredClipping.name: CenteredClipping,
}


def aggregator_names() -> list[str]:
    """Every name `get_aggregator` accepts: each rule, and ``nnm+<rule>`` in front of each."""
    return sorted(AGGREGATORS) + [NNM_PREFIX + name for name in sorted(AGGREGATORS)]


def is_aggregator(name: str) -> bool:
    return name in AGGREGATORS or (
        name.startswith(NNM_PREFIX) and name[len(NNM_PREFIX) :] in AGGREGATORS
    )


def get_aggregator(name: str, **options: Any) -> Aggregator:
    """Build the rule registered under ``name``; unknown names raise ValueError listing the valid ones.

    ``nnm+<rule>`` puts nearest-neighbour mixing in front of ``<rule>`` (options go to the rule).
    """
    if name.startswith(NNM_PREFIX) and name[len(NNM_PREFIX) :] in AGGREGATORS:
        return NearestNeighbourMixing(get_aggregator(name[len(NNM_PREFIX) :], **options))
    try:
        cls = AGGREGATORS[name]
    except KeyError:
        valid = ", ".join(sorted(AGGREGATORS))
        raise ValueError(
            f"unknown aggregator {name!r}; choose one of: {valid} (or {NNM_PREFIX}<one of them>)"
        ) from None
    try:
        rule: Aggregator = cls(**options)
    except TypeError as exc:
        raise ValueError(f"aggregator {name!r} does not take options {sorted(options)}") from exc
    return rule
