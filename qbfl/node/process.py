"""`qbfl-node start`: one node process — key, registration, genesis, ledger, gRPC, rounds, shutdown.

Threads: gRPC handlers authenticate and decode, then hand each message to the EventLoop, the one
thread that touches the NodeRuntime; the Ticker turns timers into events; the TrainingWorker
trains off the loop; outbound calls are gRPC futures (GrpcTransport). SIGTERM (or SIGINT) stops
serving, closes the ledger and exits 0.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc

from qbfl._proto.v1 import common_pb2
from qbfl.consensus.effects import Broadcast, CommitBlock, Effect, Send, SetTimer, ViewChanged
from qbfl.consensus.envelope import MessageKind
from qbfl.consensus.events import (
    BlockReceived,
    Event,
    LocalUpdateReady,
    Message,
    SyncBlocksReceived,
    TimerFired,
    event_for,
)
from qbfl.crypto.signing import SigningKey
from qbfl.errors import QbflError
from qbfl.learning.data import warm_up_shard_statistics
from qbfl.ledger.genesis import GenesisBlock, TaskSpec
from qbfl.ledger.store import LedgerStore
from qbfl.net.logs import setup_logging
from qbfl.net.serde import Received, envelope_from_proto, envelope_to_proto
from qbfl.node.assembly import (
    LEDGER_FILE,
    build_runtime,
    held_genesis,
    load_or_create_key,
    open_store,
)
from qbfl.node.bootstrap import PublisherUnreachable, bootstrap
from qbfl.node.config import NodeConfig
from qbfl.node.loop import EventLoop, Ticker, TrainingWorker
from qbfl.node.memory import limit_arenas, trim
from qbfl.node.metrics import MetricsServer, node_metrics
from qbfl.node.milestones import Milestones
from qbfl.node.qbakeys import PreparedPolynomials
from qbfl.node.qkdkeys import KeyEvidence
from qbfl.node.qkdlink import QkdLinks
from qbfl.node.runtime import NodeRuntime, status_document
from qbfl.node.servicer import NodeServer
from qbfl.node.transport import GrpcTransport

log = logging.getLogger("qbfl.node")

DISCONNECT_FILE = "disconnect-seconds"  # read on SIGUSR1 (qbfl-orchestrator perturb … disconnect)


class NodeShell:
    """A running node process (see the module docstring); `run()` blocks until it is done."""

    def __init__(self, config: NodeConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.node_id = config.node_id
        self.counters: Counter[str] = Counter()
        self._clock = clock
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._genesis: GenesisBlock | None = None
        self._runtime: NodeRuntime | None = None
        self._transport: GrpcTransport | None = None
        self._loop = EventLoop()
        self._ticker = Ticker(self._on_timer, clock)
        self._trainer: TrainingWorker | None = None
        self._status: dict[str, Any] = {
            "node": self.node_id,
            "state": "starting",
            "height": 0,
            "head_hash": None,
            "catching_up": True,
            "role": config.roles.label,
        }
        self._highest_seen = 0
        self._catching_up = True
        self._done_at: float | None = None
        self._polys: PreparedPolynomials | None = None
        self._key: SigningKey | None = None
        self._qkd: QkdLinks | None = None
        self._evidence = KeyEvidence()
        self.milestones = Milestones(clock)

    # --- NodeEdge (what the servicers call) ------------------------------------------------------

    def ready(self) -> bool:
        return self._ready.is_set()

    def accepting(self) -> bool:
        return self._transport is not None and not self._transport.disconnected()

    def authenticate(self, envelope: common_pb2.Envelope, kind: MessageKind) -> Received:
        assert self._genesis is not None
        return envelope_from_proto(
            envelope,
            public_keys=self._genesis.public_keys,
            network=self._genesis.block_hash,
            kind=kind,
            me=self.node_id,
        )

    def seal(self, kind: MessageKind, to: int, body: bytes) -> common_pb2.Envelope:
        assert self._genesis is not None and self._key is not None
        return envelope_to_proto(
            self._key,
            network=self._genesis.block_hash,
            kind=kind,
            sender=self.node_id,
            recipient=to,
            body=body,
        )

    def deliver(self, sender: int, message: Message) -> str:
        event = event_for(sender, message)
        if isinstance(event, BlockReceived):
            self._highest_seen = max(self._highest_seen, event.block.height)
            self.milestones.mark(event.block.round, "block_arrived")
        counters = self._runtime.node.counters if self._runtime else Counter[str]()
        before = (counters["buffered"], counters["duplicate_block"])
        self._loop.call(lambda: self._handle(event))
        if counters["duplicate_block"] > before[1]:
            return "duplicate"
        return "buffered" if counters["buffered"] > before[0] else "accepted"

    def store(self) -> LedgerStore:
        assert self._runtime is not None
        return self._runtime.store

    def status(self) -> dict[str, Any]:
        return dict(self._status)

    def qkd_session(self, requests: Any, context: grpc.ServicerContext) -> Any:
        """A peer opened a BB84 session: check who it is, then run our end (qkdlink)."""
        links = self._qkd
        if links is None or not self.ready():
            context.abort(grpc.StatusCode.UNAVAILABLE, "this node runs no QKD links (yet)")
        try:
            first = next(requests)
        except StopIteration:
            return
        peer = first.sender
        if self._genesis is None or peer not in self._genesis.public_keys or peer == self.node_id:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED, f"node {peer} is not a peer on the roster"
            )
        assert links is not None
        try:
            yield from links.serve(itertools.chain([first], requests), peer)
        except QbflError as exc:
            context.abort(grpc.StatusCode.ABORTED, f"{type(exc).__name__}: {exc}")

    # --- the event loop ---------------------------------------------------------------------------

    def _handle(self, event: Event) -> list[Effect]:
        assert self._runtime is not None and self._transport is not None
        round_now = self._runtime.round
        started = self._clock()
        effects = self._runtime.handle(event)
        self.milestones.observe(round_now, event, effects, started, self._clock())
        self._route(effects)
        return effects

    def _route(self, effects: list[Effect]) -> None:
        assert self._runtime is not None and self._transport is not None
        committed = False
        for effect in effects:
            if isinstance(effect, Send):
                self._transport.send(effect.to, effect.message)
            elif isinstance(effect, Broadcast):
                self._transport.broadcast(effect.message)
            elif isinstance(effect, SetTimer):
                self._transport.set_timer(
                    effect.kind, effect.round, effect.view, effect.delay_s, effect.seq
                )
            elif isinstance(effect, CommitBlock):
                committed = True
        if committed:
            height = self._runtime.height
            rounds = self._runtime.node.task.rounds
            log.info(
                "node %d: block %d committed (view %d, %d selected)%s",
                self.node_id,
                height,
                self._runtime.node.chain.block_at(height).view,
                len(self._runtime.node.chain.block_at(height).selected),
                "" if height < rounds else " — the task's last block",
            )
            if height < rounds and self._trainer is not None and not self._catching_up:
                self._trainer.request(self._runtime.round)
            if height >= rounds and self._done_at is None:
                self._done_at = self._clock()
        if committed or any(isinstance(e, ViewChanged) for e in effects):
            self._prefetch_keys()
        error = self._runtime.node.last_error
        if error is not None:
            self._runtime.node.last_error = None
            log.warning("node %d: %s", self.node_id, error)
        self._refresh_status()

    def _prefetch_keys(self) -> None:
        """Start the QKD sessions this node will need as leader of the round in progress (its
        view and the next one, drawn from the chain alone) while the clients train."""
        runtime, links = self._runtime, self._qkd
        if runtime is None or links is None:
            return
        node = runtime.node
        size = len(node.committee.members)
        per_member = 2 * max(size - 2, 1)
        if str(node.task.qba_mode) == "paper":
            per_member *= size
        for view in (node.view, node.view + 1):
            try:
                committee = node.chain.committee(view)
            except ValueError:
                continue
            if committee.leader == self.node_id:
                for member in committee.members:
                    links.ensure(member, 2 * per_member)

    def _post(self, event: Event) -> None:
        def work() -> None:
            try:
                self._handle(event)
            except QbflError as exc:
                self.counters[f"rejected:local:{type(exc).__name__}"] += 1
                log.debug("node %d: %s rejected: %s", self.node_id, type(event).__name__, exc)

        try:
            self._loop.post(work, wait=False)
        except QbflError:
            self.counters["dropped:loop_full"] += 1

    def _on_timer(self, event: TimerFired) -> None:
        self._post(event)

    def _on_trained(self, round: int, update: bytes) -> None:
        self.milestones.mark(round, "trained")
        self._post(LocalUpdateReady(round, update))

    def _train(self, round: int) -> bytes | None:
        assert self._runtime is not None
        self.milestones.mark(round, "training_started")
        try:
            return self._runtime.train(round)
        finally:
            trim()  # the round's activations and gradients, handed back

    def _on_sync(self, event: SyncBlocksReceived) -> None:
        if event.response.blocks:
            top = max(b.height for b in event.response.blocks)
            self._highest_seen = max(self._highest_seen, top)
        self._post(event)

    def _refresh_status(self) -> None:
        runtime = self._runtime
        if runtime is None:
            return
        qkd: dict[str, Any] = {
            "source": self.config.qkd,
            "polynomials_ready": self._polys.stock if self._polys is not None else 0,
        } | (self._qkd.status() if self._qkd is not None else {})
        transport = self._transport
        self._status = status_document(
            runtime,
            role=self.config.roles.label,
            done=self._done_at is not None,
            catching_up=self._catching_up or self._highest_seen > runtime.height,
            qkd=qkd,
            counters=dict(self.counters) | (dict(transport.counters) if transport else {}),
            loop_depth=self._loop.depth,
            milestones=self.milestones.recent(),
        )

    # --- metrics ----------------------------------------------------------------------------------

    def _metrics(self) -> str:
        return node_metrics(self._status)

    # --- life cycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        config = self.config
        limit_arenas()
        setup_logging(config.log_format, prefix=f"node-{self.node_id} ")
        directory = config.directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = key = load_or_create_key(directory)
        server = NodeServer(self, config.listen_address)
        self._install_signals()
        metrics: MetricsServer | None = None
        try:
            genesis = self._genesis_for(key)
            if genesis is None:
                return 0  # stopped while waiting
            self._genesis = genesis
            if config.qkd == "bb84":
                self._qkd = QkdLinks(
                    me=self.node_id,
                    key=key,
                    network=genesis.block_hash,
                    addresses={e.node_id: e.address for e in genesis.roster},
                    public_keys=genesis.public_keys,
                    authenticate=self.authenticate,
                    tapped=frozenset(config.eavesdrop),
                )
            store = open_store(directory / LEDGER_FILE, genesis, self.node_id)
            runtime = self._build_runtime(key, genesis, store)
            self._runtime = runtime
            self._transport = GrpcTransport(
                me=self.node_id,
                key=key,
                network=genesis.block_hash,
                addresses={e.node_id: e.address for e in genesis.roster},
                public_keys=genesis.public_keys,
                ticker=self._ticker,
                deliver_sync=self._on_sync,
                clock=self._clock,
            )
            self._trainer = TrainingWorker(self._train, self._on_trained)
            if config.metrics_port is not None:
                host = config.listen_address.rpartition(":")[0]
                metrics = MetricsServer(host, config.metrics_port, self._metrics)
                metrics.start()
                log.info("metrics on http://%s:%d/metrics", host, metrics.port)
            self._loop.start()
            self._ticker.start()
            self._trainer.start()
            self._loop.call(self._boot)
            self._ready.set()
            server.serving(True)
            log.info(
                "node %d serving on %s (genesis %s…, height %d, roles: %s)",
                self.node_id,
                config.listen_address,
                genesis.block_hash.hex()[:16],
                runtime.height,
                config.roles.label,
            )
            self._startup_sync()
            self._wait_until_done()
            return 0
        finally:
            server.stop()
            self._shutdown(metrics)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGUSR1, lambda *_: self._disconnect())

    def _disconnect(self) -> None:
        """SIGUSR1: drop all peer traffic for the seconds in DISCONNECT_FILE (default 10)."""
        seconds = 10.0
        with contextlib.suppress(OSError, ValueError):
            seconds = float((self.config.directory / DISCONNECT_FILE).read_text().strip())
        if self._transport is not None:
            self._transport.disconnected_until = self._clock() + seconds
        log.warning("node %d: disconnected from all peers for %.1f s", self.node_id, seconds)

    def _genesis_for(self, key: SigningKey) -> GenesisBlock | None:
        path = self.config.directory / LEDGER_FILE
        held = held_genesis(path)
        try:
            boot = bootstrap(
                publisher=self.config.publisher,
                node_id=self.node_id,
                key=key,
                address=self.config.advertised_address,
                retries=self.config.publisher_retries,
                genesis_wait_s=self.config.genesis_wait_s,
                expected_genesis=held,
                sleep=self._sleep,
                on_task=self._warm_up,
            )
        except PublisherUnreachable:
            if held is None:
                raise
            log.warning(
                "node %d: publisher unreachable; resuming from the genesis in %s",
                self.node_id,
                path,
            )
            return held
        if self._stop.is_set():
            return None
        return boot.genesis

    def _warm_up(self, task: TaskSpec) -> None:
        """Read the dataset and its statistics on a thread while waiting for the genesis (seconds
        on a cold start); the Learner then decodes only this node's rows (load_shard)."""

        def load() -> None:
            with contextlib.suppress(Exception):  # the Learner reports a missing dataset itself
                warm_up_shard_statistics(str(task.task), self.config.dataset_dir)

        threading.Thread(target=load, name="dataset-warm-up", daemon=True).start()

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise PublisherUnreachable("stopped while waiting for the publisher")

    def _build_runtime(
        self, key: SigningKey, genesis: GenesisBlock, store: LedgerStore
    ) -> NodeRuntime:
        self._polys = PreparedPolynomials(random.Random(int.from_bytes(os.urandom(8), "little")))
        self._polys.start()
        return build_runtime(
            self.config,
            key,
            genesis,
            store,
            links=self._qkd,
            evidence=self._evidence,
            polys=self._polys,
            clock=self._clock,
        )

    def _boot(self) -> None:
        assert self._runtime is not None
        restored = self._runtime.restore()
        effects = restored if restored else self._runtime.start()
        self._route(effects)

    def _startup_sync(self) -> None:
        """Compare with peers before training: fetch what they hold beyond our head (a restart,
        or a ledger that lost its tail), then train for the round in progress."""
        assert self._runtime is not None and self._transport is not None
        peers = self._transport.peers
        random.Random(self.node_id).shuffle(peers)
        for peer in peers[:3]:
            while not self._stop.is_set():
                response = self._transport.fetch_now(peer, self._runtime.height + 1)
                if response is None or not response.blocks:
                    break
                self._highest_seen = max(self._highest_seen, *(b.height for b in response.blocks))
                event = SyncBlocksReceived(peer, response)
                try:
                    self._loop.call(functools.partial(self._handle, event))
                except QbflError as exc:
                    log.warning("node %d: blocks from %d rejected: %s", self.node_id, peer, exc)
                    break
        self._catching_up = False
        self._refresh_status()
        if self._trainer is not None and self._runtime.height < self._runtime.node.task.rounds:
            self._trainer.request(self._runtime.round)

    def _wait_until_done(self) -> None:
        announced = False
        while not self._stop.wait(0.2):
            done_at = self._done_at
            if done_at is None:
                continue
            if self.config.linger_s is None:
                if not announced:
                    log.info(
                        "node %d: task complete at height %d; still serving the ledger to peers "
                        "(SIGTERM or Ctrl-C to stop)",
                        self.node_id,
                        self._runtime.height if self._runtime else 0,
                    )
                    announced = True
                continue
            if self._clock() - done_at >= self.config.linger_s:
                log.info(
                    "node %d: task complete at height %d; exiting after %.0f s of serving peers",
                    self.node_id,
                    self._runtime.height if self._runtime else 0,
                    self.config.linger_s,
                )
                return

    def _shutdown(self, metrics: MetricsServer | None) -> None:
        if self._trainer is not None:
            self._trainer.stop()
        self._ticker.stop()
        self._loop.stop()
        if self._polys is not None:
            self._polys.stop()
        if self._transport is not None:
            self._transport.close()
        if self._qkd is not None:
            self._qkd.close()
        if metrics is not None:
            metrics.stop()
        if self._runtime is not None:
            if self._runtime.writer is not None:
                self._runtime.writer.close()  # every applied block on disk before exit 0
            self._runtime.store.close()
        log.info("node %d stopped", self.node_id)
