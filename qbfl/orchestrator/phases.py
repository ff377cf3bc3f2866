"""Split one round's wall time into its phases from every node's milestones (qbfl.node.milestones).

All node processes on one machine stamp milestones with the same monotonic clock, so the
critical path of round r reads: the first node enters the round → the last update is trained →
the leader proposes (after verifying submissions; it aggregates) → the last committee member
decides in QBA → the leader broadcasts the block → the last node commits it.
"""

from __future__ import annotations

from collections.abc import Mapping

PHASES = ("training", "submission", "aggregation", "qba", "voting", "propagation")


def round_phases(
    milestones: Mapping[int, Mapping[str, float]], *, leader: int, committee: tuple[int, ...]
) -> dict[str, float]:
    """Seconds per phase of one round, and `round` (first entry → last commit); {} if incomplete."""
    starts: list[float] = []
    for m in milestones.values():
        start = m.get("entered", m.get("training_started"))
        if start is not None:
            starts.append(start)
    lead = milestones.get(leader, {})
    proposed = lead.get("proposed")
    block_out = lead.get("block_out")
    commits = [m["committed"] for m in milestones.values() if "committed" in m]
    if not starts or proposed is None or block_out is None or not commits:
        return {}
    t0 = min(starts)
    trained = [m["trained"] for m in milestones.values() if "trained" in m]
    last_trained = min(max(trained), proposed) if trained else t0
    decided = [milestones[c]["decided"] for c in committee if "decided" in milestones.get(c, {})]
    last_decided = max(decided) if decided else proposed
    aggregate = lead.get("aggregate_s", 0.0)
    return {
        "training": max(0.0, last_trained - t0),
        "submission": max(0.0, proposed - aggregate - last_trained),
        "aggregation": aggregate,
        "qba": max(0.0, last_decided - proposed),
        "voting": max(0.0, block_out - last_decided),
        "propagation": max(0.0, max(commits) - block_out),
        "round": max(commits) - t0,
    }
