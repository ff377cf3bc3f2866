"""Aggregation rules by name, for configs and flags (``--aggregator qbfl``)."""

from __future__ import annotations

from typing import Any

from qbfl.aggregation.base import Aggregator
from qbfl.aggregation.fedavg import FedAvg
from qbfl.aggregation.krum import Krum
from qbfl.aggregation.median import Median
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
}


def get_aggregator(name: str, **options: Any) -> Aggregator:
    """Build the rule registered under ``name``; unknown names raise ValueError listing the valid ones."""
    try:
        cls = AGGREGATORS[name]
    except KeyError:
        valid = ", ".join(sorted(AGGREGATORS))
        raise ValueError(f"unknown aggregator {name!r}; choose one of: {valid}") from None
    try:
        rule: Aggregator = cls(**options)
    except TypeError as exc:
        raise ValueError(f"aggregator {name!r} does not take options {sorted(options)}") from exc
    return rule
