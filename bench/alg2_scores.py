"""Why Alg. 2 keeps (or drops) attackers: per round, the mean v1, z(v1), z(v2) of honest vs malicious
clients inside a real simulator run (docs/aggregation.md, "A flaw of Eq. 7 against bit-flippers").

    .venv/bin/python bench/alg2_scores.py --attack bitflip --malicious 15 --rounds 45

Prints one row every --every rounds (and every round that kept an attacker) and writes
bench/results/alg2-scores-<aggregator>-<attack>-m<malicious>.json.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from qbfl.aggregation import registry
from qbfl.aggregation.qbfl_rule import NORMALISATIONS, QbflAggregator, qbfl_scores
from qbfl.bench.report import emit
from qbfl.orchestrator.simulate import SimulationConfig, malicious_ids, run_simulation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist")
    parser.add_argument("--attack", default="bitflip")
    parser.add_argument("--malicious", type=int, default=15)
    parser.add_argument(
        "--aggregator",
        default="qbfl",
        choices=["qbfl", "qbfl-robust", "qbfl-median", "qbfl-distance"],
    )
    parser.add_argument("--rounds", type=int, default=45)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = SimulationConfig(
        task=args.task, nodes=50, malicious=args.malicious, attack=args.attack,
        aggregator=args.aggregator, rounds=args.rounds, seed=args.seed,
    )  # fmt: skip
    bad = set(malicious_ids(config))
    rule = registry.AGGREGATORS[args.aggregator]
    assert issubclass(rule, QbflAggregator)
    log: list[dict[str, Any]] = []

    class Probe(rule):  # type: ignore[valid-type, misc]
        """The chosen rule, unchanged, recording its scores on the side."""

        def aggregate(self, updates, *, client_ids, stakes, f, previous):  # type: ignore[no-untyped-def]
            result = super().aggregate(
                updates, client_ids=client_ids, stakes=stakes, f=f, previous=previous
            )
            rows = np.asarray(updates, dtype=np.float64)
            v1, v2, _ = qbfl_scores(
                rows, previous=previous, f=f, normalisation=self.normalisation,
                reference=self.reference,
            )  # fmt: skip
            z = NORMALISATIONS[self.normalisation]
            z1, z2 = z(v1), z(v2)
            m = np.array([i in bad for i in client_ids])
            norms = np.linalg.norm(rows, axis=1)
            log.append(
                {
                    "kept_malicious": sum(i in bad for i in result.selected),
                    "v1_honest": float(v1[~m].mean()),
                    "v1_malicious": float(v1[m].mean()),
                    "z1_honest": float(z1[~m].mean()),
                    "z1_malicious": float(z1[m].mean()),
                    "z2_honest": float(z2[~m].mean()),
                    "z2_malicious": float(z2[m].mean()),
                    "norm_honest": float(norms[~m].mean()),
                    "honest_mean_norm": float(np.linalg.norm(rows[~m].mean(axis=0))),
                }
            )
            return result

    registry.AGGREGATORS[args.aggregator] = Probe
    result = run_simulation(config)
    rows = [
        {
            "round": r,
            "accuracy": round(rec.accuracy, 4),
            **{k: round(v, 3) for k, v in entry.items()},
        }
        for r, (rec, entry) in enumerate(zip(result.records, log, strict=True), 1)
    ]
    shown = [row for row in rows if (row["round"] - 1) % args.every == 0 or row["kept_malicious"]]
    emit(
        f"alg2-scores-{args.aggregator}-{args.attack}-m{args.malicious}",
        shown,
        as_json=False,
        title=f"Alg. 2 scores, {args.task}, {args.malicious} {args.attack}, {args.aggregator}",
        extra={"every_round": rows, "config": config.to_json()},
    )


if __name__ == "__main__":
    main()
