"""Small networks commit with every rule even when f clients never submit (issue 10, finding 11).

The leader proposes with the N − f submissions present; the rule then runs with the f it can
tolerate over that many inputs (Recomputation.faults_for), and the publisher refuses a task whose
rule cannot aggregate N − f inputs at all (publisher.workspace.check_task).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from qbfl.consensus.agreement import qba_session_factory
from qbfl.consensus.inmemory import InMemoryNetwork, NetworkConditions, synthetic_genesis
from qbfl.consensus.round import ConsensusNode, RoundTimeouts
from qbfl.crypto.gf2 import random_irreducible
from qbfl.crypto.keysupply import SeededKeySupply
from qbfl.errors import ConfigError
from qbfl.publisher.workspace import build_task

P = 16
POLYS = tuple(random_irreducible(128, random.Random(1)) for _ in range(4))
RULES = ("qbfl", "qbfl-distance", "krum", "trimmed-mean", "median", "fedavg")


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("n", range(4, 11))
def test_rounds_commit_with_only_n_minus_f_submissions(n: int, rule: str) -> None:
    genesis, keys = synthetic_genesis(
        n, P, seed=n, aggregator=rule, committee_size=min(5, n), round_timeout_s=20.0
    )
    f = genesis.task.f
    assert f is not None
    silent = set(range(n - f, n))  # these clients never submit an update

    def update(node: int, round: int) -> bytes | None:
        if node in silent:
            return None
        rng = np.random.default_rng([n, round, node])
        return rng.normal(0, 0.1, P).astype("<f4").tobytes()

    net = InMemoryNetwork(seed=n, conditions=NetworkConditions(), updates=update)
    qba = qba_session_factory(
        mode=genesis.task.qba_mode,
        keys=SeededKeySupply(n),
        f=genesis.task.committee_faults,
        seed=n,
        reuse_polynomials=POLYS,
    )
    for i in range(n):
        net.add(
            ConsensusNode(
                i,
                keys[i],
                genesis,
                qba=qba,
                clock=net.clock,
                timeouts=RoundTimeouts(collect_s=1.0, qba_round_s=0.5),
            )
        )
    net.start()
    assert net.run(lambda: all(node.round > 2 for node in net.nodes.values()), max_steps=200_000)
    block = net.nodes[0].chain.block_at(1)  # type: ignore[attr-defined]
    assert not set(block.selected) & silent


@pytest.mark.parametrize(
    ("nodes", "f", "rule"),
    [(3, 1, "qbfl"), (4, 2, "qbfl"), (4, 2, "krum"), (6, 4, "qbfl-distance")],
)
def test_publisher_refuses_a_rule_that_cannot_aggregate_n_minus_f(
    nodes: int, f: int, rule: str
) -> None:
    with pytest.raises(ConfigError, match="cannot aggregate"):
        build_task(
            task="mnist",
            nodes=nodes,
            f=f,
            committee=3,
            rounds=5,
            qba="detectable",
            seed=0,
            aggregator=rule,
            round_timeout_s=10.0,
            dp=False,
        )
