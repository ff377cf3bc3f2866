"""`qbfl-orchestrator up`: start a network, follow it live, fail on a stall, write the results.

Results in OUT: summary.json (every node's head height, head hash, stake, last accuracy, role),
rounds.csv (one row per block: accuracy, stakes, view, phase times), accuracy.png (accuracy and
stakes per round), and the logs of every process.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from qbfl.errors import ChainStalled, ConfigError, QbflError
from qbfl.ledger.genesis import GenesisBlock
from qbfl.net.observer import ChainObserver, ObservedRound, _finite
from qbfl.node.config import BASE_PORT
from qbfl.node.roles import RoleGroup, Roles, assign_roles, describe
from qbfl.orchestrator.local import (
    LocalBackend,
    NetworkPlan,
    NodeEntry,
    alive,
    locked,
    node_statuses,
)
from qbfl.orchestrator.memory import MemoryUsage, PeakMemory, process_memory
from qbfl.orchestrator.phases import PHASES, round_phases


@dataclass(frozen=True, kw_only=True)
class UpConfig:
    task: str = "mnist"
    nodes: int = 50
    malicious: tuple[RoleGroup, ...] = ()
    rounds: int = 10
    out: Path = Path("run/network")
    seed: int = 0
    aggregator: str = "qbfl"
    committee: int | None = None
    f: int | None = None
    qba: str = "detectable"
    round_timeout_s: float = 60.0
    eavesdrop: tuple[tuple[int, int], ...] = ()
    qkd: str = "bb84"
    base_port: int = BASE_PORT
    publisher_port: int = 50050
    stall_s: float | None = None  # None: 3 round timeouts
    linger_s: float = 20.0
    genesis_timeout_s: float = 600.0
    metrics_base_port: int | None = None  # node i serves Prometheus metrics on this + i
    defer_evaluation: bool = False  # evaluate the model per round after the run (benchmarks)
    resume: bool = False  # continue the network already in `out` (its keys and ledgers)

    def __post_init__(self) -> None:
        if self.nodes < 3:
            raise ConfigError("--nodes must be at least 3")
        if sum(g.count for g in self.malicious) > self.nodes:
            raise ConfigError("more malicious nodes than --nodes")
        for a, b in self.eavesdrop:
            if a == b or not (0 <= a < self.nodes and 0 <= b < self.nodes):
                raise ConfigError(f"--eavesdrop {a}-{b}: not a pair of node ids")
        if self.base_port + self.nodes > 65535:
            raise ConfigError("--base-port leaves no room for every node's port")

    @property
    def stall_after_s(self) -> float:
        return self.stall_s if self.stall_s is not None else 3 * self.round_timeout_s


class LiveDisplay:
    """A block of status lines redrawn in place on a terminal; one line per round otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._drawn = 0

    def show(self, lines: list[str]) -> None:
        if not self._tty:
            return
        out = self._stream
        if self._drawn:
            out.write(f"\x1b[{self._drawn}F")
        for line in lines:
            out.write("\x1b[2K" + line + "\n")
        out.flush()
        self._drawn = len(lines)

    def log(self, line: str) -> None:
        if self._tty and self._drawn:
            self._stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0
        self._stream.write(line + "\n")
        self._stream.flush()


def _plan(config: UpConfig, roles: dict[int, Roles]) -> NetworkPlan:
    out = config.out.resolve()
    taps: dict[int, list[int]] = {}
    for a, b in config.eavesdrop:
        taps.setdefault(a, []).append(b)
        taps.setdefault(b, []).append(a)
    return NetworkPlan(
        out=str(out),
        task=config.task,
        publisher_listen=f"127.0.0.1:{config.publisher_port}",
        qkd=config.qkd,
        linger_s=config.linger_s,
        nodes=[
            NodeEntry(
                node_id=i,
                role=roles.get(i, Roles()).label,
                listen=f"127.0.0.1:{config.base_port + i}",
                data_dir=str(out / f"node-{i}"),
                log=str(out / "logs" / f"node-{i}.log"),
                eavesdrop=sorted(taps.get(i, [])),
                metrics_port=None
                if config.metrics_base_port is None
                else config.metrics_base_port + i,
            )
            for i in range(config.nodes)
        ],
    )


def _wait_for_genesis(address: str, timeout_s: float) -> GenesisBlock:
    from qbfl._proto.v1 import publisher_pb2, publisher_pb2_grpc
    from qbfl.net.channel import insecure_channel

    channel = insecure_channel(address)
    stub = publisher_pb2_grpc.PublisherStub(channel)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                reply = stub.GetGenesis(publisher_pb2.GenesisRequest(), timeout=2.0)
            except Exception:
                time.sleep(0.3)
                continue
            if reply.ready:
                return GenesisBlock.decode(reply.genesis)
            time.sleep(0.3)
    finally:
        channel.close()
    raise ChainStalled(
        f"no genesis within {timeout_s:.0f} s: nodes did not all register (see logs/)"
    )


def _status_lines(
    config: UpConfig,
    observer: ChainObserver,
    statuses: dict[int, dict[str, Any]],
    phases: dict[str, float],
    started: float,
) -> list[str]:
    height = observer.chain.height
    last = observer.rounds[-1] if observer.rounds else None
    up = sum(1 for s in statuses.values() if "error" not in s)
    behind = sum(1 for s in statuses.values() if s.get("catching_up"))
    views = sum(r.view for r in observer.rounds)
    stocks = [
        bits for s in statuses.values() for bits in s.get("qkd", {}).get("stock_bits", {}).values()
    ]
    acc = f"{100 * last.accuracy:.2f}%" if last and not math.isnan(last.accuracy) else "-"
    phase = "  ".join(f"{k} {phases[k]:.2f}" for k in PHASES if k in phases)
    stake = (
        f"honest {last.honest_stake:.2f}  malicious "
        + ("-" if math.isnan(last.malicious_stake) else f"{last.malicious_stake:.2f}")
        if last
        else "-"
    )
    return [
        f"QBFL {config.task}  {config.nodes} nodes  round {height}/{config.rounds}  "
        f"elapsed {time.monotonic() - started:.0f} s",
        f"  accuracy {acc}   stake {stake}   failed views {views}",
        f"  last round {phases.get('round', math.nan):.2f} s: {phase or '-'}",
        f"  nodes up {up}/{config.nodes}, catching up {behind}   QKD stock "
        + (f"min {min(stocks) / 1000:.1f} kbit per pair" if stocks else "-"),
    ]


def run_up(
    config: UpConfig,
    *,
    stream: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Start the network on this machine's processes, follow it to `rounds` blocks, stop it; the
    summary (raises ChainStalled)."""
    roles = assign_roles(config.malicious, config.nodes, config.seed)
    out = _prepare_out(config)
    plan = _plan(config, roles)
    backend = LocalBackend(plan, preload_task=config.task)
    display = LiveDisplay(stream)
    display.log(
        f"starting {config.nodes} nodes (malicious: {describe(roles)}) and a publisher on 127.0.0.1; "
        f"logs in {out / 'logs'}"
    )
    sampler = PeakMemory(lambda: _node_memory(plan))
    # SIGTERM (`down`, or a supervisor) must run the `finally` below that stops every node
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with locked(out):
            plan.orchestrator_pid = os.getpid()
            backend.start_publisher(out / "publisher")
            for entry in plan.nodes:
                backend.start_node(entry.node_id)
            plan.save()
        sampler.start()

        def stop() -> dict[int, int | None]:
            sampler.finish()
            return backend.stop_all()

        summary = follow(config, plan, display, stop=stop)
        summary.update(backend="local", malicious=describe(roles), memory_peak=sampler.peak)
        _write_results(out, summary, summary["phases_per_round"], config)
        return summary
    finally:
        sampler.finish()
        backend.stop_all()
        signal.signal(signal.SIGTERM, previous)


def _node_memory(plan: NetworkPlan) -> dict[str, MemoryUsage]:
    usage = {}
    for entry in plan.nodes:
        found = process_memory(entry.pid) if entry.pid else None
        if found is not None:
            usage[f"node-{entry.node_id}"] = found
    return usage


def _prepare_out(config: UpConfig) -> Path:
    """OUT with its publisher directory initialised for the task (refusing a stale network)."""
    from qbfl.publisher.workspace import Workspace, build_task

    spec = build_task(
        task=config.task,
        nodes=config.nodes,
        f=config.f,
        committee=config.committee if config.committee is not None else min(5, config.nodes),
        rounds=config.rounds,
        qba=config.qba,
        seed=config.seed,
        aggregator=config.aggregator,
        round_timeout_s=config.round_timeout_s,
        dp=False,
    )
    out = config.out.resolve()
    if (out / "network.json").exists() and not config.resume:
        raise ConfigError(
            f"{out} holds a network from an earlier `up` (its keys and ledgers): pass --resume to "
            "continue it, or choose another --out (or remove that directory)"
        )
    (out / "logs").mkdir(parents=True, exist_ok=True)
    Workspace.create(out / "publisher", spec)
    return out


def _where_logs(plan: NetworkPlan) -> str:
    if plan.backend == "docker":
        return f"docker logs {plan.project}-node-N, until `qbfl-orchestrator down`"
    return str(Path(plan.out) / "logs")


def follow(
    config: UpConfig,
    plan: NetworkPlan,
    display: LiveDisplay,
    *,
    stop: Callable[[], dict[int, int | None]],
) -> dict[str, Any]:
    """Wait for the genesis, follow the chain to `rounds` blocks with the live display, stop the
    nodes (`stop` returns their exit codes) and return the summary: the loop every backend shares."""
    out = Path(plan.out)
    started = time.monotonic()
    genesis = _wait_for_genesis(plan.publisher_listen, config.genesis_timeout_s)
    genesis_after_s = time.monotonic() - started  # every node registered (start-up included)
    display.log(f"genesis {genesis.block_hash.hex()[:16]}… signed; {config.rounds} rounds")
    addresses = {e.node_id: e.listen for e in plan.nodes}
    phases: dict[str, float] = {}

    def on_round(r: ObservedRound) -> None:
        display.log(
            f"round {r.round:>4}/{config.rounds}  acc {100 * r.accuracy:6.2f}%  view {r.view}  "
            f"selected {r.selected} (malicious {r.malicious_selected})  stake honest "
            f"{r.honest_stake:.2f} malicious "
            + ("-" if math.isnan(r.malicious_stake) else f"{r.malicious_stake:.2f}")
            + f"  at {r.at_s:.1f} s"
        )

    observer = ChainObserver(
        genesis, addresses=addresses, on_round=on_round, defer=config.defer_evaluation
    )
    observer.roles = {e.node_id: e.role for e in plan.nodes}
    if not config.defer_evaluation:
        observer.prepare()
    last_progress = time.monotonic()
    last_height = 0
    statuses: dict[int, dict[str, Any]] = {}
    next_status = 0.0
    rows: list[dict[str, Any]] = []
    milestones: dict[str, dict[str, dict[str, float]]] = {}  # round → node → milestone → t

    def poll_statuses() -> None:
        # every 2 s at most, not per block: 50 status calls per block were measurable load
        nonlocal statuses, next_status, last_height, phases
        statuses = node_statuses(plan)
        for node_id, status in statuses.items():
            for r, marks in status.get("milestones", {}).items():
                milestones.setdefault(r, {}).setdefault(str(node_id), {}).update(marks)
        next_status = time.monotonic() + 2.0
        if plan.backend == "local":
            _reload_pids(plan)
        for r in observer.rounds[last_height:]:
            phases = _phases_of(r.round, statuses, observer)
            rows.append(_row(r, phases))
        last_height = len(observer.rounds)

    while not observer.done:
        applied = observer.poll_once()
        now = time.monotonic()
        if applied:
            last_progress = now
        if now >= next_status:
            poll_statuses()
        display.show(_status_lines(config, observer, statuses, phases, started))
        if now - last_progress > config.stall_after_s:
            raise ChainStalled(
                f"chain stalled at height {observer.chain.height}: no new block for "
                f"{config.stall_after_s:.0f} s (logs: {_where_logs(plan)})"
            )
        if not applied:
            time.sleep(0.3)
    poll_statuses()  # the milestones of the last rounds
    observer.finish_evaluation()
    for row in rows:  # accuracy evaluated after the run when deferred
        row["accuracy"] = observer.accuracy_at(row["round"])
    nodes = observer.settled_node_summaries(wait_s=config.round_timeout_s)
    summary = observer.summary(nodes)
    timed = [r["round_s"] for r in rows if "round_s" in r]
    if timed:
        summary["mean_round_s"] = sum(timed) / len(timed)
    exit_codes = stop()
    summary.update(
        out=str(out),
        wall_seconds=time.monotonic() - started,
        genesis_after_s=genesis_after_s,
        genesis_monotonic=started + genesis_after_s,  # this machine's clock: for benchmarks
        phases_per_round=rows,
        exit_codes={str(k): v for k, v in sorted(exit_codes.items())},
    )
    (out / "milestones.json").write_text(json.dumps(milestones, sort_keys=True) + "\n")
    display.log(
        f"done: height {observer.chain.height}, final accuracy "
        f"{100 * (summary['final_accuracy'] or 0):.2f}%, honest heads agree: "
        f"{summary['honest_heads_agree']}; wrote {out / 'summary.json'}"
    )
    return summary


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _reload_pids(plan: NetworkPlan) -> None:
    """Pick up processes that `perturb` started from another shell."""
    try:
        fresh = NetworkPlan.load(Path(plan.out))
    except (ConfigError, json.JSONDecodeError):
        return
    for entry, new in zip(plan.nodes, fresh.nodes, strict=False):
        if new.pid and new.pid != entry.pid and alive(new.pid):
            entry.pid = new.pid


def _phases_of(
    round_: int, statuses: dict[int, dict[str, Any]], observer: ChainObserver
) -> dict[str, float]:
    block = observer.chain.block_at(round_)
    milestones = {
        i: s.get("milestones", {}).get(str(round_), {})
        for i, s in statuses.items()
        if "error" not in s
    }
    return round_phases(milestones, leader=block.leader, committee=block.committee)


def _row(r: ObservedRound, phases: dict[str, float]) -> dict[str, Any]:
    return {
        "round": r.round,
        "view": r.view,
        "accuracy": r.accuracy,
        "honest_stake": r.honest_stake,
        "malicious_stake": r.malicious_stake,
        "selected": r.selected,
        "malicious_selected": r.malicious_selected,
        "at_s": round(r.at_s, 3),
        **{f"{k}_s": round(v, 4) for k, v in phases.items()},
    }


def _write_results(
    out: Path, summary: dict[str, Any], rows: list[dict[str, Any]], config: UpConfig
) -> None:
    (out / "summary.json").write_text(json.dumps(_finite(summary), indent=2, default=str) + "\n")
    if rows:
        keys = sorted({k for row in rows for k in row}, key=lambda k: (k != "round", k))
        with (out / "rounds.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        plot_network(rows, out / "accuracy.png", title=f"{config.task}, {config.nodes} nodes")


def plot_network(rows: list[dict[str, Any]], path: Path, *, title: str) -> None:
    """Accuracy and mean stakes (honest, malicious) per round, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ax1.plot(rounds, [100 * r["accuracy"] for r in rows], marker=".")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title(title)
    ax1.grid(alpha=0.3)
    ax2.plot(rounds, [r["honest_stake"] for r in rows], label="honest (mean)")
    malicious = [r["malicious_stake"] for r in rows]
    if any(not math.isnan(m) for m in malicious):
        ax2.plot(rounds, malicious, label="malicious (mean)")
    ax2.set_xlabel("round")
    ax2.set_ylabel("stake")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def stop_network(out: Path, grace_s: float = 10.0) -> list[str]:
    """`down`: stop every process a plan names (nodes, publisher; `up` itself if still running)."""
    import os
    import signal

    with locked(out):
        plan = NetworkPlan.load(out)
    stopped = []
    if alive(plan.orchestrator_pid) and plan.orchestrator_pid != os.getpid():
        assert plan.orchestrator_pid is not None
        os.kill(plan.orchestrator_pid, signal.SIGTERM)
        stopped.append(f"orchestrator (pid {plan.orchestrator_pid})")
    backend = LocalBackend(plan)
    running = [e.node_id for e in plan.nodes if alive(e.pid)]
    backend.stop_all(grace_s)
    stopped += [f"node {i}" for i in running]
    return stopped


def wait_for_height(
    out: Path,
    height: int,
    *,
    stall_s: float,
    poll_s: float = 1.0,
    echo: Callable[[str], None] = print,
) -> dict[int, int]:
    """Block until every honest node is at `height`; ChainStalled if none advances for `stall_s`."""
    plan = NetworkPlan.load(out)
    honest = {e.node_id for e in plan.nodes if e.role == "honest"}
    best, since = -1, time.monotonic()
    while True:
        statuses = node_statuses(plan)
        heights = {i: int(s.get("height", -1)) for i, s in statuses.items() if i in honest}
        low = min(heights.values()) if heights else -1
        if low >= height:
            return heights
        top = sum(heights.values())
        if top > best:
            best, since = top, time.monotonic()
            echo(
                f"honest heights: min {low}, max {max(heights.values(), default=-1)} (waiting for {height})"
            )
        elif time.monotonic() - since > stall_s:
            raise ChainStalled(f"chain stalled at height {low}: no progress for {stall_s:.0f} s")
        time.sleep(poll_s)


__all__ = ["QbflError", "UpConfig", "run_up", "stop_network", "wait_for_height"]
