"""Round trips, signatures and validation of updates, consensus messages, votes, blocks and genesis."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbfl.crypto.signing import SigningKey
from qbfl.errors import InvalidSignature, InvalidUpdate
from qbfl.ledger.block import (
    Block,
    CommitteeVote,
    ConsensusMessage,
    UpdateSubmission,
    check_update,
    make_block,
)
from qbfl.ledger.encoding import EncodingError
from qbfl.ledger.genesis import (
    DpSettings,
    GenesisBlock,
    QbaMode,
    TaskName,
    TaskSpec,
    verify_genesis,
)
from qbfl.ledger.signer import digest

from .conftest import params_bytes

u64 = st.integers(0, 2**64 - 1)
hashes = st.binary(min_size=32, max_size=32)
floats32 = st.lists(st.floats(width=32, allow_nan=False), max_size=12).map(params_bytes)
id_sets = st.sets(st.integers(0, 1000), max_size=10).map(lambda s: tuple(sorted(s)))
votes = st.dictionaries(st.integers(0, 1000), st.binary(max_size=40), max_size=5).map(
    lambda d: tuple(CommitteeVote(k, v) for k, v in sorted(d.items()))
)
blocks = st.builds(
    Block,
    height=u64,
    round=u64,
    view=u64,
    prev_hash=hashes,
    leader=u64,
    committee=st.lists(st.integers(0, 1000), max_size=7).map(tuple),
    selected=id_sets,
    update=floats32,
    update_hash=hashes,
    votes=votes,
    leader_signature=st.none() | st.binary(max_size=40),
)
updates = st.builds(
    UpdateSubmission,
    round=u64,
    client_id=u64,
    update=floats32,
    base_block_hash=hashes,
    view=st.none() | u64,
    signature=st.none() | st.binary(max_size=40),
)
tasks = st.builds(
    TaskSpec,
    task=st.sampled_from(list(TaskName)),
    model=st.text(min_size=1, max_size=10),
    n_nodes=st.integers(5, 100),
    rounds=st.integers(1, 500),
    seed=u64,
    lr=st.floats(1e-4, 1.0),
    committee_size=st.integers(1, 5),
    initial_stake=st.integers(1, 10),
    round_timeout_s=st.floats(0.1, 600),
    qba_mode=st.sampled_from(list(QbaMode)),
    dp=st.none()
    | st.builds(DpSettings, st.floats(0.1, 10), st.floats(1e-9, 0.1), st.floats(0.1, 5)),
)


@settings(max_examples=60, deadline=None)
@given(blocks)
def test_block_round_trip(block: Block) -> None:
    raw = block.encode()
    again = Block.decode(raw)
    assert again == block
    assert again.block_hash == block.block_hash == digest(raw)


@settings(max_examples=60, deadline=None)
@given(blocks, blocks)
def test_block_hash_is_injective(a: Block, b: Block) -> None:
    assert (a.block_hash == b.block_hash) == (a == b)


@settings(max_examples=60, deadline=None)
@given(updates)
def test_update_round_trip(u: UpdateSubmission) -> None:
    assert UpdateSubmission.decode(u.encode()) == u


@settings(max_examples=60, deadline=None)
@given(tasks)
def test_task_round_trip(t: TaskSpec) -> None:
    assert TaskSpec.decode(t.encode()) == t


def test_every_byte_of_a_block_matters() -> None:
    block = make_block(
        height=1,
        round=1,
        view=0,
        prev_hash=b"\x01" * 32,
        committee=(4, 2, 7),
        selected=(5, 1),
        update=params_bytes([1.0, -2.0]),
        votes=(CommitteeVote(7, b"s7"), CommitteeVote(2, b"s2")),
    )
    raw = block.encode()
    for i in range(len(raw)):
        tampered = bytearray(raw)
        tampered[i] ^= 0x01
        try:
            other = Block.decode(bytes(tampered))
        except EncodingError:
            continue
        assert other.block_hash != block.block_hash, f"byte {i} does not change the hash"


def test_make_block_orders_and_hashes() -> None:
    update = params_bytes([0.5, 0.25])
    block = make_block(
        height=3,
        round=3,
        view=1,
        prev_hash=b"\x00" * 32,
        committee=(9, 1, 4),
        selected=(8, 2, 5),
        update=update,
        votes=(CommitteeVote(4, b"b"), CommitteeVote(1, b"a")),
    )
    assert block.leader == 9
    assert block.selected == (2, 5, 8)
    assert [v.member_id for v in block.votes] == [1, 4]
    assert block.update_hash == digest(update)
    assert block.consensus_message() == ConsensusMessage(3, 1, (2, 5, 8), digest(update))


def test_committee_seed_ignores_signatures_but_not_the_agreed_content() -> None:
    """A leader must not be able to re-sign until the next committee suits it (Alg. 1 seed)."""
    kwargs = dict(
        height=2,
        round=2,
        view=0,
        prev_hash=b"\x02" * 32,
        committee=(3, 1, 2),
        selected=(1, 2),
        update=params_bytes([1.0, 2.0]),
    )
    a = make_block(**kwargs, votes=(CommitteeVote(1, b"x"), CommitteeVote(2, b"y")))  # type: ignore[arg-type]
    b = make_block(**kwargs, votes=(CommitteeVote(1, b"z"), CommitteeVote(3, b"w")))  # type: ignore[arg-type]
    assert a.block_hash != b.block_hash
    assert a.committee_seed == b.committee_seed
    for change in ({"selected": (1, 3)}, {"view": 1}, {"prev_hash": b"\x03" * 32}):
        c = make_block(**{**kwargs, **change}, votes=a.votes)  # type: ignore[arg-type]
        assert c.committee_seed != a.committee_seed, change
    d = make_block(**{**kwargs, "update": params_bytes([1.0, 2.5])}, votes=a.votes)  # type: ignore[arg-type]
    assert d.committee_seed != a.committee_seed


def test_unsorted_or_duplicate_votes_cannot_be_encoded() -> None:
    block = make_block(
        height=1, round=1, view=0, prev_hash=b"\x00" * 32, committee=(1,), selected=(1,), update=b""
    )
    for vs in [
        (CommitteeVote(2, b""), CommitteeVote(1, b"")),
        (CommitteeVote(1, b""), CommitteeVote(1, b"x")),
    ]:
        with pytest.raises(EncodingError, match="sorted"):
            dataclasses.replace(block, votes=vs).encode()


def test_update_signature(keys: dict[int, SigningKey]) -> None:
    sub = UpdateSubmission(
        round=2, client_id=3, update=params_bytes([1, 2, 3]), base_block_hash=b"h" * 32
    )
    signed = sub.signed(keys[3])
    signed.verify(keys[3].public_key, expected_param_count=3)
    with pytest.raises(InvalidSignature):
        signed.verify(keys[4].public_key, expected_param_count=3)
    with pytest.raises(InvalidSignature):
        dataclasses.replace(signed, round=3).verify(keys[3].public_key, expected_param_count=3)
    with pytest.raises(InvalidSignature):
        sub.verify(keys[3].public_key, expected_param_count=3)
    with pytest.raises(InvalidUpdate, match="expected 16"):
        signed.verify(keys[3].public_key, expected_param_count=4)
    # A vote signature is not an update signature: the contexts separate them.
    msg = ConsensusMessage(2, 0, (3,), b"h" * 32)
    vote = msg.sign_vote(3, keys[3])
    forged = dataclasses.replace(sub, signature=vote.signature)
    with pytest.raises(InvalidSignature):
        forged.verify(keys[3].public_key, expected_param_count=3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_update_must_be_finite(bad: float) -> None:
    with pytest.raises(InvalidUpdate, match="NaN or Inf"):
        check_update(params_bytes([0.0, bad]), 2)
    assert check_update(params_bytes([0.0, 1.0]), 2).tolist() == [0.0, 1.0]


def test_vote_verifies_only_for_its_message(keys: dict[int, SigningKey]) -> None:
    msg = ConsensusMessage(1, 0, (1, 2), b"\x05" * 32)
    vote = msg.sign_vote(2, keys[2])
    msg.verify_vote(vote, keys[2].public_key)
    with pytest.raises(InvalidSignature):
        dataclasses.replace(msg, view=1).verify_vote(vote, keys[2].public_key)


def test_genesis_signature_and_round_trip(genesis: GenesisBlock, publisher_key: SigningKey) -> None:
    verify_genesis(genesis, publisher_public_key=publisher_key.public_key)
    again = GenesisBlock.decode(genesis.encode())
    assert again == genesis and again.block_hash == genesis.block_hash
    assert genesis.height == 0 and genesis.param_count == 6
    assert genesis.task.f == 3  # ⌊0.4·8⌋
    tampered = dataclasses.replace(genesis, initial_parameters=params_bytes(np.ones(6)))
    with pytest.raises(InvalidSignature):
        verify_genesis(tampered)
    with pytest.raises(InvalidSignature, match="different publisher"):
        verify_genesis(genesis, publisher_public_key=b"x" * 1312)


def test_task_validation() -> None:
    base = dict(task="mnist", model="m", n_nodes=10, rounds=1, seed=0, lr=0.1)
    assert TaskSpec(**base).qba_mode is QbaMode.DETECTABLE
    for bad in [
        dict(task="cifar"),
        dict(qba_mode="fast"),
        dict(f=10),
        dict(committee_size=11),
        dict(initial_stake=0),
        dict(lr=0.0),
        dict(model=""),
    ]:
        with pytest.raises(ValueError):
            TaskSpec(**{**base, **bad})
