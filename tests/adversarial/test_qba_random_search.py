"""Seeded random adversaries against detectable-mode QBA: no validity or consistency violation; shrunk traces on failure."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from qba_fixtures import SEARCH_PARAMS, search_polys

import qbfl.consensus.qba.driver as qba_driver
from qbfl.consensus.qba import (
    EquivocatingLeader,
    QbaAdversary,
    QbaMode,
    QbaOutcome,
    QbaParticipant,
    RandomByzantine,
    SilentAdversary,
    TamperingRelay,
    TripleId,
    round_one_pairs,
    run_qba,
)
from qbfl.consensus.qba.messages import Forwarded, QbaMessage
from qbfl.consensus.qba.search import (
    RecordingAdversary,
    ScriptedAdversary,
    Trial,
    describe,
    run_trial,
    shrink,
    violations,
)
from qbfl.crypto.keysupply import SeededKeySupply

SIZES = (3, 4, 5, 7)


def _strategy(rng: random.Random, committee: list[int]) -> QbaAdversary:
    kind = rng.randrange(5)
    if kind == 0:
        return SilentAdversary()
    if kind == 1:
        return TamperingRelay(rng.choice([b"0", b"1"]))
    if kind == 2:
        table = {pair: rng.choice([b"0", b"1"]) for pair in round_one_pairs(committee)}
        return EquivocatingLeader.from_table(table)
    return RandomByzantine(rng.randrange(1 << 30), p=rng.choice([0.1, 0.3, 0.6, 1.0]))


def random_trial(rng: random.Random, mode: QbaMode, polys) -> tuple[Trial, QbaOutcome]:  # type: ignore[no-untyped-def]
    """Draw a setup and a strategy, run it once with a recorder: the replayable trial and its outcome."""
    n = rng.choice(SIZES)
    f = (n - 1) // 2
    committee = list(range(n))
    rng.shuffle(committee)  # leaders and faulty members at every position
    # mostly within the bound f, sometimes beyond it: detectable mode claims safety for any number
    limit = f if rng.random() < 0.8 else n - 1
    faulty = frozenset(rng.sample(committee, rng.randint(1, limit)))
    recorder = RecordingAdversary(_strategy(rng, committee))
    value = rng.choice([b"0", b"1"])
    key_seed = rng.randrange(1 << 30)
    outcome = run_qba(
        mode=mode,
        committee=committee,
        leader_value=value,
        f=f,
        keys=SeededKeySupply(key_seed),
        polys=polys,
        adversary=recorder,
        faulty=faulty,
        params=SEARCH_PARAMS,
    )
    return Trial(mode, tuple(committee), f, faulty, value, recorder.decisions, key_seed), outcome


def search(
    mode: QbaMode, trials: int, seed: int, hooks: Counter[str] | None = None
) -> tuple[int, str | None]:
    """Run `trials` random trials; return how many deviated and the first failure's shrunk trace.

    `hooks` (optional) counts the trials in which each hook deviated ("reforge", "replay:check", …).
    """
    rng = random.Random(seed)
    polys = search_polys()
    deviating = 0
    for _ in range(trials):
        trial, outcome = random_trial(rng, mode, polys)
        deviating += bool(trial.script)
        if hooks is not None:
            hooks.update({key[0] for key in trial.script})
        if violations(trial, outcome):

            def fails(t: Trial) -> bool:
                return bool(violations(t, run_trial(t, polys=search_polys(), params=SEARCH_PARAMS)))

            small = shrink(trial, fails)
            small_out = run_trial(small, polys=search_polys(), params=SEARCH_PARAMS)
            return deviating, describe(small, small_out, violations(small, small_out))
    return deviating, None


def test_recorded_trials_replay_exactly() -> None:
    rng = random.Random(99)
    for _ in range(30):
        trial, outcome = random_trial(rng, rng.choice(list(QbaMode)), search_polys())
        replayed = run_trial(trial, polys=search_polys(), params=SEARCH_PARAMS)
        assert replayed.outputs == outcome.outputs
        assert replayed.deviations == outcome.deviations
        # checking signatures one by one or in batches changes nothing but speed
        unbatched = run_qba(
            mode=trial.mode,
            committee=trial.committee,
            leader_value=trial.leader_value,
            f=trial.f,
            keys=SeededKeySupply(trial.key_seed),
            polys=search_polys(),
            adversary=ScriptedAdversary(trial.script),
            faulty=trial.faulty,
            params=SEARCH_PARAMS,
            batch=False,
        )
        assert unbatched.outputs == outcome.outputs
        assert unbatched.excluded == outcome.excluded


def test_random_search_finds_no_violation_in_detectable_mode() -> None:
    hooks: Counter[str] = Counter()
    deviating, failure = search(QbaMode.DETECTABLE, trials=5000, seed=20240601, hooks=hooks)
    assert failure is None, "shrunk counterexample:\n" + failure
    assert deviating > 3500  # the adversaries did act (~80 % of trials deviate somewhere)
    # issue 10: the adversaries also re-sign with revealed keys and replay every message kind
    assert hooks["reforge"] > 300, hooks
    for step in ("sign", "forward", "reveal", "check", "accepted", "round-end"):
        assert hooks[f"replay:{step}"] > 100, hooks


class _CharlieBeforeIssue10(QbaParticipant):
    """Charlie's forward handling as it was: only a pending or recorded operation was refused, so she
    revealed again for a second forward once her first check had run or been queued."""

    def _as_charlie_forwarded(self, t: TripleId, msg: Forwarded) -> list[QbaMessage]:
        if t in self._charlie_pending or t in self._recorded:
            return []
        self._forwarded.pop(t, None)  # forget the one-time-key record the fix keeps
        return super()._as_charlie_forwarded(t, msg)


def test_the_search_finds_the_re_forward_forgery_in_the_old_charlie(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The point of extending the search: it would have found finding 1 (in a few trials)."""
    monkeypatch.setattr(qba_driver, "QbaParticipant", _CharlieBeforeIssue10)
    _, failure = search(QbaMode.DETECTABLE, trials=200, seed=20240601)
    assert failure is not None
    print(failure)
    assert "reforge" in failure and "validity" in failure


def test_batched_and_unbatched_agree_for_a_random_faulty_leader() -> None:
    """Issue 10, finding 2: with RandomByzantine(p=1) as faulty leader (N = 3…5), broken signatures
    came out valid unbatched: 129 of 900 seeded runs differed on main, 24 of these 180."""
    differ = []
    for n in (3, 4, 5):
        for seed in range(60):
            outputs = []
            for batch in (True, False):
                out = run_qba(
                    committee=list(range(n)),
                    leader_value=b"0",
                    f=(n - 1) // 2,
                    keys=SeededKeySupply(seed),
                    polys=search_polys(),
                    params=SEARCH_PARAMS,
                    adversary=RandomByzantine(seed, p=1.0),
                    faulty=[0],
                    batch=batch,
                )
                outputs.append(out.outputs)
            if outputs[0] != outputs[1]:
                differ.append((n, seed))
    assert differ == []


def test_random_search_finds_and_shrinks_a_paper_mode_violation() -> None:
    """The same search against the appendix as written finds a violation and shrinks it to a few steps."""
    _, failure = search(QbaMode.PAPER, trials=1500, seed=7)
    assert failure is not None
    print(failure)
    deviations = [line for line in failure.splitlines() if line.startswith("  ")]
    assert 1 <= len(deviations) <= 6, failure


@pytest.mark.slow
def test_long_random_search_detectable_mode() -> None:
    for seed in range(4):
        _, failure = search(QbaMode.DETECTABLE, trials=10_000, seed=1000 + seed)
        assert failure is None, "shrunk counterexample:\n" + failure
