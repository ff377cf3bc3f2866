"""Byzantine-robust aggregation rules behind a registry (FedAvg, Trimmed-Mean, Median, Krum, Alg. 2, Multi-Krum, Bulyan, geometric median, centered clipping, NNM)."""

from qbfl.aggregation.base import (
    NO_FAULT_LIMIT,
    AggregationResult,
    Aggregator,
    RoundInputs,
    canonical_inputs,
    validate_updates,
)
from qbfl.aggregation.fedavg import FedAvg
from qbfl.aggregation.krum import Krum, krum_scores
from qbfl.aggregation.median import Median
from qbfl.aggregation.qbfl_rule import QbflAggregator, qbfl_scores
from qbfl.aggregation.registry import AGGREGATORS, aggregator_names, get_aggregator, is_aggregator
from qbfl.aggregation.summation import ordered_sum, pairwise_squared_distances
from qbfl.aggregation.trimmed_mean import TrimmedMean
from qbfl.aggregation.verification import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    aggregate_mismatch,
    verify_aggregate,
)

__all__ = [
    "AGGREGATORS",
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "NO_FAULT_LIMIT",
    "AggregationResult",
    "Aggregator",
    "FedAvg",
    "Krum",
    "Median",
    "QbflAggregator",
    "RoundInputs",
    "TrimmedMean",
    "aggregate_mismatch",
    "canonical_inputs",
    "aggregator_names",
    "get_aggregator",
    "is_aggregator",
    "krum_scores",
    "ordered_sum",
    "pairwise_squared_distances",
    "qbfl_scores",
    "validate_updates",
    "verify_aggregate",
]
