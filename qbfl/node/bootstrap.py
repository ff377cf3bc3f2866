"""How a node gets its genesis: ask the publisher for the task, register, wait for the genesis.

A publisher that does not answer is retried with capped backoff `retries` times, then the node
gives up with a message saying what to check; a publisher that answers but is still waiting for
other nodes is waited for (with a progress line) up to `genesis_wait_s`. The genesis is accepted
only if the publisher signed it, it carries the task the node registered for, and it names this
node with this node's key and address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from qbfl._proto.v1 import common_pb2, publisher_pb2, publisher_pb2_grpc
from qbfl.errors import InvalidSignature, QbflError
from qbfl.ledger.genesis import GenesisBlock, TaskSpec, verify_genesis
from qbfl.ledger.registration import Registration
from qbfl.ledger.signer import Signer, digest
from qbfl.net.channel import insecure_channel

log = logging.getLogger("qbfl.node")
T = TypeVar("T")
# Between GetGenesis polls: 50 nodes polling every 0.2 s were 250 calls a second on a publisher
# that shares two cores with them, enough to fill its concurrent-call limit during a start-up.
GENESIS_POLL_S = 0.5
# Worth another try: not answering, too slow, or (RESOURCE_EXHAUSTED) answering that it is busy —
# e.g. 50 containers starting at once on two cores fill the publisher's concurrent-RPC limit.
_TRANSIENT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


class PublisherUnreachable(QbflError):
    """The publisher did not answer after the capped retries."""


class WrongGenesis(QbflError):
    """The publisher's genesis (or task) is not the one this node holds or registered for."""


@dataclass(frozen=True)
class Bootstrap:
    genesis: GenesisBlock
    publisher_public_key: bytes


def _retry(
    what: str,
    call: Callable[[], T],
    *,
    publisher: str,
    retries: int,
    sleep: Callable[[float], None],
) -> T:
    delay = 0.5
    for attempt in range(1, retries + 1):
        try:
            return call()
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            if code not in _TRANSIENT:
                raise WrongGenesis(
                    f"publisher {publisher} refused {what}: {exc.details()}"
                ) from exc  # type: ignore[attr-defined]
            if attempt == retries:
                raise PublisherUnreachable(
                    f"publisher at {publisher} did not answer ({what}) after {retries} attempts: "
                    f"{code.name}. Is `qbfl-publisher serve` running there? Check --publisher "
                    "HOST:PORT (default 127.0.0.1:50050)."
                ) from exc
            log.warning(
                "publisher %s %s (%s), attempt %d/%d; retrying in %.1f s",
                publisher,
                "busy" if code == grpc.StatusCode.RESOURCE_EXHAUSTED else "unreachable",
                code.name,
                attempt,
                retries,
                delay,
            )
            sleep(delay)
            delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


def bootstrap(
    *,
    publisher: str,
    node_id: int,
    key: Signer,
    address: str,
    retries: int = 8,
    genesis_wait_s: float = 600.0,
    expected_genesis: GenesisBlock | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_task: Callable[[TaskSpec], None] | None = None,
) -> Bootstrap:
    """Register with the publisher and return its verified genesis (see the module doc)."""
    channel = insecure_channel(publisher)
    stub = publisher_pb2_grpc.PublisherStub(channel)
    try:
        reply = _retry(
            "GetTask",
            lambda: stub.GetTask(publisher_pb2.TaskRequest(), timeout=5.0),
            publisher=publisher,
            retries=retries,
            sleep=sleep,
        )
        task = TaskSpec.decode(reply.task)
        task_hash = digest(reply.task)
        if task_hash != reply.task_hash:
            raise WrongGenesis("the publisher's task hash does not match its task bytes")
        if expected_genesis is not None and expected_genesis.task != task:
            raise WrongGenesis(
                f"this node's ledger belongs to another task (genesis "
                f"{expected_genesis.block_hash.hex()[:16]}…) than the one {publisher} publishes; "
                "use another --data-dir for the new task"
            )
        if not 0 <= node_id < task.n_nodes:
            raise WrongGenesis(f"--id {node_id} is outside this task's ids 0..{task.n_nodes - 1}")
        if on_task is not None:
            on_task(task)  # e.g. start decoding the dataset while the other nodes register
        reg = Registration(node_id, key.public_key, address, task_hash).signed(key)
        envelope = common_pb2.Envelope(sender=node_id, recipient=0, body=reg.encode())
        registered = _retry(
            "Register",
            lambda: stub.Register(envelope, timeout=10.0),
            publisher=publisher,
            retries=retries,
            sleep=sleep,
        )
        log.info(
            "node %d registered with %s as %s (%d/%d nodes)",
            node_id,
            publisher,
            address,
            registered.registered,
            registered.expected,
        )
        waited_since = clock()
        last_note = -1.0
        while True:
            answer = _retry(
                "GetGenesis",
                lambda: stub.GetGenesis(publisher_pb2.GenesisRequest(), timeout=5.0),
                publisher=publisher,
                retries=retries,
                sleep=sleep,
            )
            if answer.ready:
                break
            waited = clock() - waited_since
            if waited > genesis_wait_s:
                raise PublisherUnreachable(
                    f"no genesis after {genesis_wait_s:.0f} s: {answer.registered} of "
                    f"{answer.expected} nodes registered. Start the other nodes (ids 0.."
                    f"{answer.expected - 1}) against the same publisher."
                )
            if waited - last_note >= 10.0:
                log.info(
                    "waiting for the genesis: %d of %d nodes registered",
                    answer.registered,
                    answer.expected,
                )
                last_note = waited
            sleep(GENESIS_POLL_S)
    finally:
        channel.close()
    genesis = GenesisBlock.decode(answer.genesis)
    try:
        verify_genesis(genesis, publisher_public_key=reply.publisher_public_key)
    except InvalidSignature as exc:
        raise WrongGenesis(f"the genesis served by {publisher} is not signed by it: {exc}") from exc
    if genesis.task != task:
        raise WrongGenesis("the genesis carries another task than the one registered for")
    entry = next((e for e in genesis.roster if e.node_id == node_id), None)
    if entry is None or entry.public_key != key.public_key:
        raise WrongGenesis(f"the genesis does not list node {node_id} with this node's key")
    if expected_genesis is not None and expected_genesis.block_hash != genesis.block_hash:
        raise WrongGenesis(
            f"the publisher's genesis {genesis.block_hash.hex()[:16]}… is not the one in this "
            f"node's ledger ({expected_genesis.block_hash.hex()[:16]}…): the data directory "
            "belongs to another network; use a fresh --data-dir"
        )
    return Bootstrap(genesis, reply.publisher_public_key)
