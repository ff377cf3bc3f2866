"""Issue 10, ledger findings 3, 4 and 8: inputs a hostile peer sends, and what they may cost a node.

Each test reproduces the issue's input. On the code before the fix: the list decoders took
~90 s for a 4 MB input (3.3 s at 1.28 MB), DpSettings let a plain ValueError escape, infinite
floats were accepted, and an unsigned block claiming view 10 000 cost 0.2–1.5 s to reject.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from qbfl.consensus.catchup import MAX_SYNC_BLOCKS
from qbfl.consensus.chainview import ChainView
from qbfl.consensus.inmemory import synthetic_genesis
from qbfl.consensus.stakes import MAX_VIEWS_PER_ROUND, StakeLedger
from qbfl.consensus.wire import SyncResponse
from qbfl.crypto.signing import SigningKey
from qbfl.ledger.block import Block, CommitteeVote, make_block
from qbfl.ledger.chain import BlockDefect, InvalidBlock, verify_block
from qbfl.ledger.encoding import (
    COUNT,
    FIELD_HEADER,
    HEADER,
    MAGIC,
    MAX_COMMITTEE_SIZE,
    MAX_IDS,
    VERSION,
    EncodingError,
    Field,
    FieldKind,
    RecordSchema,
    decode_record,
    encode_record,
)
from qbfl.ledger.genesis import DpSettings, GenesisBlock, TaskSpec

HOSTILE_BYTES = 4_000_000  # the 4 MB: ~90 s to reject before the fix
FAST_S = 1.0  # far below the old times, generous to a loaded CI machine


def record(type_tag: int, *fields: tuple[int, bytes]) -> bytes:
    """Raw record bytes, whatever the schema says (a peer need not follow it)."""
    body = b"".join(FIELD_HEADER.pack(tag, len(value)) + value for tag, value in fields)
    return HEADER.pack(MAGIC, VERSION, type_tag, len(fields)) + body


def empty_items(total_bytes: int) -> bytes:
    """A BYTES_SEQ value of as many empty items as fit in `total_bytes`: the quadratic case."""
    n = (total_bytes - COUNT.size) // COUNT.size
    return COUNT.pack(n) + COUNT.pack(0) * n


def timed(decode: Callable[[bytes], object], data: bytes) -> float:
    start = time.thread_time()
    with pytest.raises(EncodingError):
        decode(data)
    return time.thread_time() - start


# --- finding 3: linear list decoding, a count limit per list -----------------------------------


@pytest.mark.timeout(30)  # the code before the fix ran ~90 s here
def test_sync_response_of_empty_items_is_rejected_fast() -> None:
    data = record(20, (1, empty_items(HOSTILE_BYTES)))
    assert len(data) >= HOSTILE_BYTES - 8
    assert timed(SyncResponse.decode, data) < FAST_S


@pytest.mark.timeout(30)
@pytest.mark.parametrize("target", ["Block.votes", "GenesisBlock.roster"])
def test_block_votes_and_roster_of_empty_items_are_rejected_fast(target: str) -> None:
    decode: Callable[[bytes], object]
    if target == "Block.votes":
        data, decode = record(4, (10, empty_items(HOSTILE_BYTES))), Block.decode
    else:
        data, decode = record(7, (3, empty_items(HOSTILE_BYTES))), GenesisBlock.decode
    assert timed(decode, data) < FAST_S


@pytest.mark.timeout(30)
def test_list_decoding_is_linear_even_without_a_count_limit() -> None:
    """The walk itself is linear: 4 MB of one million empty items, bounded by max_len only."""
    schema = RecordSchema(
        200, "Unbounded", (Field(1, "items", FieldKind.BYTES_SEQ, max_len=16 << 20),)
    )
    data = record(200, (1, empty_items(HOSTILE_BYTES)))
    start = time.thread_time()
    items = decode_record(schema, data)["items"]
    assert time.thread_time() - start < FAST_S
    assert len(items) == (HOSTILE_BYTES - 4) // 4


def test_count_is_checked_before_anything_is_allocated() -> None:
    """A count of 2^32 − 1 over a few bytes fails at once, holding next to no memory."""
    for claimed in (0xFFFF_FFFF, MAX_SYNC_BLOCKS + 1):
        data = record(20, (1, COUNT.pack(claimed) + b"\x00" * 16))
        tracemalloc.start()
        try:
            with pytest.raises(EncodingError, match="items"):
                SyncResponse.decode(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 64 << 10


def test_stated_count_limits() -> None:
    """The list limits docs/consensus.md states ("Bounds a peer can make a node hold")."""
    limits: dict[tuple[Any, str], int] = {
        (Block, "committee"): MAX_COMMITTEE_SIZE,
        (Block, "votes"): MAX_COMMITTEE_SIZE,
        (Block, "selected"): MAX_IDS,
        (GenesisBlock, "roster"): MAX_IDS,
        (SyncResponse, "blocks"): MAX_SYNC_BLOCKS,
    }
    for (cls, name), limit in limits.items():
        (field,) = [f for f in cls.SCHEMA.fields if f.name == name]
        assert field.count_limit == limit, (cls.__name__, name)
    assert (MAX_SYNC_BLOCKS, MAX_COMMITTEE_SIZE, MAX_IDS) == (64, 1024, 100_000)


def test_a_sync_response_over_the_limit_is_refused_both_ways() -> None:
    block = make_block(
        height=1,
        round=1,
        view=0,
        prev_hash=b"\x01" * 32,
        committee=(0,),
        selected=(0,),
        update=b"\x00" * 4,
    )
    raw = block.encode()
    data = record(20, (1, COUNT.pack(65) + b"".join(COUNT.pack(len(raw)) + raw for _ in range(65))))
    with pytest.raises(EncodingError, match="65 items exceed the limit 64"):
        SyncResponse.decode(data)
    with pytest.raises(EncodingError, match="limit 64"):
        SyncResponse((block,) * 65).encode()
    assert SyncResponse.decode(SyncResponse((block,) * 64).encode()).blocks == (block,) * 64


# --- finding 4 (ledger half): every decode path raises EncodingError; no infinities --------------

TASK: dict[str, Any] = {
    "task": "mnist",
    "model": "mpo-fcnn",
    "n_nodes": 4,
    "f": 1,
    "committee_size": 3,
    "rounds": 5,
    "seed": 0,
    "lr": 0.05,
    "initial_stake": 1,
    "round_timeout_s": 60.0,
    "qba_mode": "detectable",
    "aggregator": "qbfl",
    "dp": None,
}
DP: dict[str, Any] = {"target_epsilon": 3.0, "target_delta": 1e-5, "max_grad_norm": 1.0}


def test_invalid_dp_settings_raise_encoding_error_on_every_decode_path() -> None:
    bad_dp = encode_record(DpSettings.SCHEMA, {**DP, "target_delta": 2.0})
    with pytest.raises(EncodingError, match="target_delta"):
        DpSettings.decode(bad_dp)
    task_bytes = encode_record(TaskSpec.SCHEMA, {**TASK, "dp": bad_dp})
    with pytest.raises(EncodingError, match="target_delta"):
        TaskSpec.decode(task_bytes)
    genesis, _ = synthetic_genesis(4, 2, seed=0, committee_size=3)
    values = {
        "task": task_bytes,
        "initial_parameters": genesis.initial_parameters,
        "roster": [e.encode() for e in genesis.roster],
        "publisher_public_key": genesis.publisher_public_key,
        "publisher_signature": None,
    }
    with pytest.raises(EncodingError, match="target_delta"):
        GenesisBlock.decode(encode_record(GenesisBlock.SCHEMA, values))


@pytest.mark.parametrize("name", ["lr", "round_timeout_s"])
@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_task_spec_refuses_infinite_floats(name: str, value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        TaskSpec(**{**TASK, name: value})
    with pytest.raises(EncodingError, match="finite"):
        TaskSpec.decode(encode_record(TaskSpec.SCHEMA, {**TASK, name: value}))


@pytest.mark.parametrize("name", ["target_epsilon", "target_delta", "max_grad_norm"])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_dp_settings_refuse_infinite_and_nan(name: str, value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        DpSettings(**{**DP, name: value})
    if not math.isnan(value):  # NaN has no canonical encoding: the field decoder refuses it
        with pytest.raises(EncodingError, match="finite"):
            DpSettings.decode(encode_record(DpSettings.SCHEMA, {**DP, name: value}))


def test_task_spec_refuses_a_committee_or_roster_beyond_the_list_limits() -> None:
    with pytest.raises(ValueError, match="committee_size"):
        TaskSpec(**{**TASK, "n_nodes": 2000, "committee_size": MAX_COMMITTEE_SIZE + 1})
    with pytest.raises(EncodingError, match="n_nodes"):
        TaskSpec.decode(encode_record(TaskSpec.SCHEMA, {**TASK, "n_nodes": MAX_IDS + 1}))


# --- finding 8: cheap blocks cost little to reject ---------------------------------------------


def _unsigned(genesis: GenesisBlock, view: int, votes: tuple[CommitteeVote, ...] = ()) -> Block:
    """The issue's block: small, unsigned (or with the given votes), claiming a far view."""
    return make_block(
        height=1,
        round=1,
        view=view,
        prev_hash=genesis.block_hash,
        committee=StakeLedger(genesis).committee(0).members,
        selected=(0,),
        update=np.zeros(genesis.param_count, dtype="<f4").tobytes(),
        votes=votes,
    )


def _reject(genesis: GenesisBlock, block: Block) -> tuple[BlockDefect, float]:
    stakes = StakeLedger(genesis).stakes
    start = time.thread_time()
    with pytest.raises(InvalidBlock) as info:
        verify_block(block, prev=genesis, genesis=genesis, stakes_before=stakes)
    return info.value.defect, time.thread_time() - start


@pytest.fixture(scope="module", params=[7, 50, 200])
def network(request: pytest.FixtureRequest) -> tuple[GenesisBlock, dict[int, SigningKey]]:
    return synthetic_genesis(request.param, 4, seed=1)


def test_unsigned_far_view_blocks_are_rejected_before_any_replay(
    network: tuple[GenesisBlock, dict[int, SigningKey]],
) -> None:
    genesis, _ = network
    # The view 10 000 (0.5 s at N = 7, 1.4 s at N = 50, 4.7 s at N = 200 before).
    defect, elapsed = _reject(genesis, _unsigned(genesis, 10_000))
    assert defect is BlockDefect.VIEW and elapsed < 0.05
    # At the cap itself: no signatures, so no replay.
    defect, elapsed = _reject(genesis, _unsigned(genesis, MAX_VIEWS_PER_ROUND))
    assert defect is BlockDefect.TOO_FEW_VOTES and elapsed < 0.05


def test_junk_and_off_roster_votes_fail_before_the_replay(
    network: tuple[GenesisBlock, dict[int, SigningKey]],
) -> None:
    genesis, _ = network
    n = len(genesis.roster)
    junk = tuple(CommitteeVote(i, b"\x00" * 2420) for i in range(3))
    defect, elapsed = _reject(genesis, _unsigned(genesis, MAX_VIEWS_PER_ROUND, junk))
    assert defect is BlockDefect.VOTE_SIGNATURE and elapsed < 0.05
    strangers = tuple(CommitteeVote(n + i, b"\x00" * 2420) for i in range(3))
    defect, elapsed = _reject(genesis, _unsigned(genesis, MAX_VIEWS_PER_ROUND, strangers))
    assert defect is BlockDefect.VOTE_NOT_MEMBER and elapsed < 0.05
    crowd = tuple(CommitteeVote(i, b"") for i in range(6))  # more votes than the 5 seats
    defect, _ = _reject(genesis, _unsigned(genesis, MAX_VIEWS_PER_ROUND, crowd))
    assert defect is BlockDefect.VOTE_NOT_MEMBER


def test_a_colluder_signed_block_replays_once_per_round(
    network: tuple[GenesisBlock, dict[int, SigningKey]],
) -> None:
    """Three colluding roster nodes can sign any message: their far-view block reaches the replay,
    which the cap bounds and the node's chain view keeps for the rest of the round."""
    genesis, keys = network
    draft = _unsigned(genesis, MAX_VIEWS_PER_ROUND)
    message = draft.consensus_message()
    colluders = sorted(keys)[-3:]
    votes = tuple(message.sign_vote(i, keys[i]) for i in colluders)
    block = _unsigned(genesis, MAX_VIEWS_PER_ROUND, votes)
    chain = ChainView(genesis)
    start = time.thread_time()
    with pytest.raises(InvalidBlock) as info:
        chain.verify(block)
    first = time.thread_time() - start
    assert info.value.defect in (BlockDefect.COMMITTEE, BlockDefect.VOTE_NOT_MEMBER)
    assert first < 3.0  # ≤ 1 025 draws: 0.2–0.5 s at N = 200 on the 2-core dev VM
    start = time.thread_time()
    for _ in range(5):
        with pytest.raises(InvalidBlock):
            chain.verify(block)
    assert (time.thread_time() - start) / 5 < 0.05  # the replay is kept for the round
    assert chain.committee(MAX_VIEWS_PER_ROUND) == StakeLedger(genesis).committee(
        MAX_VIEWS_PER_ROUND
    )
