"""The local backend: a publisher and N `qbfl-node start` processes on 127.0.0.1 (DESIGN §8).

Nodes fork from a forkserver that imported and warmed torch and decoded the dataset before any
gRPC use (qbfl.orchestrator.preload), so 50 of them share those pages; each child still runs the
`qbfl-node start` command line and serves its own gRPC port. The plan, the ports and every
process id are kept in OUT/network.json (under a lock), so `status`, `perturb` and `down` work
from another shell while `up` runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

from qbfl.errors import ConfigError, QbflError
from qbfl.node.roles import Roles, parse_roles

PLAN_FILE = "network.json"


@dataclass
class NodeEntry:
    node_id: int
    role: str  # Roles.label
    listen: str
    data_dir: str
    log: str
    pid: int | None = None
    eavesdrop: list[int] = field(default_factory=list)
    metrics_port: int | None = None

    @property
    def roles(self) -> Roles:
        return Roles() if self.role == "honest" else parse_roles([self.role])

    def argv(self, publisher: str, *, qkd: str, linger_s: float) -> list[str]:
        args = [
            "start",
            "--id",
            str(self.node_id),
            "--publisher",
            publisher,
            "--listen",
            self.listen,
            "--data-dir",
            self.data_dir,
            "--qkd",
            qkd,
            "--linger",
            str(linger_s),
            "--device",
            "cpu",
        ]
        if self.role != "honest":
            args += ["--malicious", self.role]
        for peer in self.eavesdrop:
            args += ["--eavesdrop", str(peer)]
        if self.metrics_port is not None:
            args += ["--metrics-port", str(self.metrics_port)]
        return args


@dataclass
class NetworkPlan:
    """What `up` started, where it lives, and how to reach it."""

    out: str
    task: str
    nodes: list[NodeEntry]
    publisher_listen: str
    publisher_pid: int | None = None
    qkd: str = "bb84"
    linger_s: float = 30.0
    orchestrator_pid: int | None = None
    backend: str = "local"  # or "docker": containers of `project`, from `image`
    project: str | None = None
    image: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.out) / PLAN_FILE

    def node(self, node_id: int) -> NodeEntry:
        for entry in self.nodes:
            if entry.node_id == node_id:
                return entry
        raise ConfigError(f"no node {node_id} in {self.path} (ids 0..{len(self.nodes) - 1})")

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, out: Path) -> NetworkPlan:
        path = out / PLAN_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"{path} does not exist: no network was started with --out {out}"
            ) from None
        doc["nodes"] = [NodeEntry(**n) for n in doc["nodes"]]
        return cls(**doc)


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Serialise changes to OUT/network.json between `up`, `perturb` and `down`."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".network.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _run_node(argv: list[str], log_path: str) -> None:
    """Body of a forkserver child: its own session and log file, then the node CLI."""
    # A process group of its own: Ctrl-C on `up` reaches the orchestrator only, which stops the
    # nodes in order. Not a session of its own: with the kernel's autogroup scheduling every
    # session is weighed as one, so 50 sessions would make a node's low-priority training thread
    # weigh as much as another node's protocol threads (measured: a block reached the last of 50
    # nodes up to 1.5 s after the leader sent it).
    os.setpgid(0, 0)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    from qbfl.node.cli import main

    main(argv, prog_name="qbfl-node")


class LocalBackend:
    """Starts and perturbs the processes of one NetworkPlan on this machine."""

    def __init__(self, plan: NetworkPlan, *, preload_task: str | None = None) -> None:
        self.plan = plan
        self._ctx: ForkServerContext | None = None
        self._children: dict[int, multiprocessing.process.BaseProcess] = {}
        self._preload_task = preload_task

    # --- processes ----------------------------------------------------------------------------

    def _forkserver(self) -> ForkServerContext:
        if self._ctx is None:
            if self._preload_task:
                os.environ["QBFL_PRELOAD_TASK"] = self._preload_task
                # qbfl.learning.models.TASK_MODEL, restated: importing it would load torch here
                os.environ["QBFL_PRELOAD_MODEL"] = (
                    "cnn-mpo" if self._preload_task == "fashion-mnist" else "fcnn-mpo"
                )
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["qbfl.orchestrator.preload"])
            self._ctx = ctx
        return self._ctx

    def start_publisher(self, directory: Path) -> int:
        log = open(Path(self.plan.out) / "publisher.log", "ab")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qbfl.publisher.cli",
                "serve",
                "--dir",
                str(directory),
                "--listen",
                self.plan.publisher_listen,
                "--no-observe",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        log.close()
        self.plan.publisher_pid = proc.pid
        return proc.pid

    def start_node(self, node_id: int, *, forkserver: bool = True) -> int:
        entry = self.plan.node(node_id)
        argv = entry.argv(
            self.plan.publisher_listen, qkd=self.plan.qkd, linger_s=self.plan.linger_s
        )
        Path(entry.data_dir).mkdir(parents=True, exist_ok=True)
        if forkserver:
            ctx = self._forkserver()
            proc = ctx.Process(target=_run_node, args=(argv, entry.log), name=f"node-{node_id}")
            proc.start()
            self._children[node_id] = proc
            pid = proc.pid
        else:  # from `perturb`, another process than `up`: a plain process of its own
            with open(entry.log, "ab") as log:
                pid = subprocess.Popen(
                    [sys.executable, "-m", "qbfl.node.cli", *argv],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    process_group=0,
                ).pid
        assert pid is not None
        entry.pid = pid
        return pid

    def signal_node(self, node_id: int, sig: signal.Signals) -> bool:
        pid = self.plan.node(node_id).pid
        if not alive(pid):
            return False
        assert pid is not None
        os.kill(pid, sig)
        return True

    def wait_exit(self, pid: int | None, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not alive(pid)

    def stop_all(self, grace_s: float = 10.0) -> dict[int, int | None]:
        """SIGTERM every node and the publisher, then SIGKILL what is still up after `grace_s`.

        Returns the exit code of every node this backend forked (None: not known here).
        """
        pids = [e.pid for e in self.plan.nodes] + [self.plan.publisher_pid]
        for pid in pids:
            if alive(pid):
                assert pid is not None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for pid in pids:
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                assert pid is not None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        codes: dict[int, int | None] = {}
        for node_id, proc in self._children.items():
            proc.join(timeout=1.0)
            codes[node_id] = proc.exitcode
        return codes

    # --- perturbations (CometBFT e2e runner: kill, pause, restart, disconnect) -----------------

    def perturb(self, node_id: int, action: str, seconds: float, *, forkserver: bool) -> str:
        entry = self.plan.node(node_id)
        if action == "kill":
            self.signal_node(node_id, signal.SIGKILL)
            self.wait_exit(entry.pid, 5.0)
            time.sleep(seconds)
            pid = self.start_node(node_id, forkserver=forkserver)
            return f"node {node_id} killed (SIGKILL) and started again from {entry.data_dir} (pid {pid})"
        if action == "restart":
            self.signal_node(node_id, signal.SIGTERM)
            if not self.wait_exit(entry.pid, 15.0):
                self.signal_node(node_id, signal.SIGKILL)
                self.wait_exit(entry.pid, 5.0)
            time.sleep(seconds)
            pid = self.start_node(node_id, forkserver=forkserver)
            return f"node {node_id} stopped (SIGTERM) and started again (pid {pid})"
        if action == "pause":
            if not self.signal_node(node_id, signal.SIGSTOP):
                raise QbflError(f"node {node_id} is not running")
            time.sleep(seconds)
            self.signal_node(node_id, signal.SIGCONT)
            return f"node {node_id} paused (SIGSTOP) for {seconds:g} s, then resumed (SIGCONT)"
        if action == "disconnect":
            Path(entry.data_dir, "disconnect-seconds").write_text(f"{seconds}\n")
            if not self.signal_node(node_id, signal.SIGUSR1):
                raise QbflError(f"node {node_id} is not running")
            return f"node {node_id} drops all peer traffic for {seconds:g} s"
        raise ConfigError(
            f"unknown perturbation {action!r}; use kill, pause, restart or disconnect"
        )


def node_statuses(plan: NetworkPlan, timeout: float = 2.0) -> dict[int, dict[str, Any]]:
    """Each node's status document, or {"error": …} for a node that does not answer."""
    from concurrent.futures import ThreadPoolExecutor

    from qbfl.net.probe import node_status

    def one(entry: NodeEntry) -> tuple[int, dict[str, Any]]:
        try:
            return entry.node_id, node_status(entry.listen, timeout=timeout)
        except QbflError as exc:
            return entry.node_id, {"error": str(exc), "role": entry.role}

    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(pool.map(one, plan.nodes))
