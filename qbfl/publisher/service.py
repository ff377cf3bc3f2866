"""The publisher's gRPC service: serve the task, register nodes, build and serve the genesis block."""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc

from qbfl._proto.v1 import publisher_pb2, publisher_pb2_grpc
from qbfl.errors import InvalidSignature, QbflError
from qbfl.ledger.encoding import EncodingError
from qbfl.ledger.genesis import GenesisBlock
from qbfl.ledger.registration import Registration
from qbfl.node.config import parse_address
from qbfl.publisher.workspace import Workspace

log = logging.getLogger("qbfl.publisher")


class RegistrationRefused(QbflError):
    """A registration that cannot be accepted (wrong id, a different key for a taken id, …)."""


class Registry:
    """Registrations of one task; builds the genesis once all N nodes are in (thread-safe)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._lock = threading.Lock()
        self._regs = workspace.registrations()
        self._genesis = workspace.genesis()
        self.ready = threading.Event()
        if self._genesis is None and len(self._regs) == workspace.task.n_nodes:
            self._genesis = workspace.make_genesis(self._regs)
        if self._genesis is not None:
            self.ready.set()

    @property
    def genesis(self) -> GenesisBlock | None:
        return self._genesis

    @property
    def registered(self) -> int:
        return len(self._regs)

    def register(self, reg: Registration) -> int:
        """Accept `reg` (verified); returns how many nodes are registered. Idempotent per key."""
        task = self.workspace.task
        reg.verify(task_hash=self.workspace.task_hash)
        if not 0 <= reg.node_id < task.n_nodes:
            raise RegistrationRefused(
                f"node id {reg.node_id} is outside this task's 0..{task.n_nodes - 1}"
            )
        parse_address(reg.address, "address")
        with self._lock:
            held = self._regs.get(reg.node_id)
            if held is not None and held.public_key != reg.public_key:
                raise RegistrationRefused(
                    f"node {reg.node_id} is already registered with another key; a node keeps its "
                    "key in its data directory (node.key): start it with the same --data-dir"
                )
            if self._genesis is not None:
                entry = next(e for e in self._genesis.roster if e.node_id == reg.node_id)
                if entry.public_key != reg.public_key:
                    raise RegistrationRefused(
                        f"node {reg.node_id} is in the genesis with another key"
                    )
                if entry.address != reg.address:
                    raise RegistrationRefused(
                        f"the genesis names node {reg.node_id} at {entry.address}; it registered "
                        f"{reg.address} (start it with --advertise {entry.address})"
                    )
                return len(self._regs)
            if held != reg:
                self.workspace.save_registration(reg)
                self._regs[reg.node_id] = reg
                log.info(
                    "registered node %d at %s (%d/%d)",
                    reg.node_id,
                    reg.address,
                    len(self._regs),
                    task.n_nodes,
                )
            if len(self._regs) == task.n_nodes:
                self._genesis = self.workspace.make_genesis(self._regs)
                self.ready.set()
                log.info(
                    "all %d nodes registered: genesis %s signed and served",
                    task.n_nodes,
                    self._genesis.block_hash.hex()[:16],
                )
            return len(self._regs)


class PublisherServicer(publisher_pb2_grpc.PublisherServicer):
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def GetTask(self, request: Any, context: Any) -> Any:
        ws = self._registry.workspace
        return publisher_pb2.TaskReply(
            task=ws.task.encode(), publisher_public_key=ws.key.public_key, task_hash=ws.task_hash
        )

    def Register(self, request: Any, context: Any) -> Any:
        try:
            reg = Registration.decode(request.body)
            if reg.node_id != request.sender:
                raise RegistrationRefused(
                    f"envelope sender {request.sender} registers node {reg.node_id}"
                )
            count = self._registry.register(reg)
        except (EncodingError, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{type(exc).__name__}: {exc}")
        except InvalidSignature as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"InvalidSignature: {exc}")
        except RegistrationRefused as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return publisher_pb2.RegisterReply(
            registered=count, expected=self._registry.workspace.task.n_nodes
        )

    def GetGenesis(self, request: Any, context: Any) -> Any:
        genesis = self._registry.genesis
        n = self._registry.workspace.task.n_nodes
        return publisher_pb2.GenesisReply(
            ready=genesis is not None,
            genesis=genesis.encode() if genesis is not None else b"",
            registered=self._registry.registered,
            expected=n,
        )
