"""qbfl-publisher: write a task and its initial model, then register nodes and serve the genesis."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click

from qbfl.command_line import QbflGroup
from qbfl.publisher.health_cli import health

DEFAULT_DIR = Path("qbfl-data") / "publisher"  # (workspace.py imports torch: not at CLI import)

DEFAULT_LISTEN = "127.0.0.1:50050"
log = logging.getLogger("qbfl.publisher")


@click.group(
    cls=QbflGroup, help="Publish a QBFL task, register its nodes, serve the genesis block."
)
def main() -> None:
    pass


@main.command(help="Write the task, the initial model and the publisher key to --out.")
@click.option("--task", type=click.Choice(["mnist", "fashion-mnist"]), required=True)
@click.option("--nodes", type=click.IntRange(min=3), default=50, show_default=True)
@click.option(
    "--malicious-f",
    "f",
    type=click.IntRange(min=0),
    default=None,
    help="f of Alg. 2: how many malicious clients the rule tolerates [default: ⌊0.4·nodes⌋].",
)
@click.option(
    "--committee",
    type=click.IntRange(min=1),
    default=None,
    help="Nc, the committee size [default: 5, or --nodes when fewer].",
)
@click.option(
    "--rounds", type=click.IntRange(min=1), default=None, help="[default: 200 MNIST, 300 Fashion]"
)
@click.option(
    "--qba", type=click.Choice(["detectable", "paper"]), default="detectable", show_default=True
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--aggregator", default="qbfl", show_default=True, help="Aggregation rule (registry name)."
)
@click.option(
    "--round-timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds before a view change.",
)
@click.option(
    "--dp/--no-dp", default=False, help="Record DP-SGD settings (ε=4, δ=1e-5, C=1) in the task."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
)
def init(
    task: str,
    nodes: int,
    f: int | None,
    committee: int | None,
    rounds: int | None,
    qba: str,
    seed: int,
    aggregator: str,
    round_timeout: float,
    dp: bool,
    out: Path,
) -> None:
    from qbfl.publisher.workspace import Workspace, build_task

    committee = committee if committee is not None else min(5, nodes)
    spec = build_task(
        task=task,
        nodes=nodes,
        f=f,
        committee=committee,
        rounds=rounds,
        qba=qba,
        seed=seed,
        aggregator=aggregator,
        round_timeout_s=round_timeout,
        dp=dp,
    )
    workspace, created = Workspace.create(out, spec)
    verb = "wrote" if created else "already initialised:"
    click.echo(
        f"{verb} {out}: {task} ({spec.model}), {nodes} nodes, f={spec.f}, committee {committee}, "
        f"{spec.rounds} rounds, {aggregator}, QBA {qba}, seed {seed}"
    )
    click.echo(f"task hash {workspace.task_hash.hex()}")
    click.echo("next:")
    click.echo(f"  qbfl-publisher serve --dir {out}          # registers nodes, serves the genesis")
    click.echo(
        f"  qbfl-node start --id 0 … qbfl-node start --id {nodes - 1}   # one terminal each, or:"
    )
    click.echo(f"  qbfl-orchestrator up --backend local --nodes {nodes}   # all of them at once")


@main.command(help="Register the task's nodes, then sign and serve the genesis block.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
)
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, envvar="QBFL_PUBLISHER_LISTEN")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--observe/--no-observe",
    default=True,
    show_default=True,
    help="Log one line per committed round (accuracy, stakes) and write summary.json.",
)
@click.option(
    "--linger",
    type=click.FloatRange(min=0),
    default=None,
    help="Exit this many seconds after the task's last block (with --observe) [default: keep "
    "serving until SIGTERM/Ctrl-C].",
)
def serve(
    directory: Path, listen: str, log_format: str, observe: bool, linger: float | None
) -> None:
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from qbfl._proto.v1 import publisher_pb2_grpc
    from qbfl.errors import QbflError
    from qbfl.net.channel import server as grpc_server
    from qbfl.net.logs import setup_logging
    from qbfl.publisher.service import PublisherServicer, Registry
    from qbfl.publisher.workspace import Workspace

    setup_logging(log_format, prefix="publisher ")
    workspace = Workspace.open(directory)
    registry = Registry(workspace)
    server = grpc_server()
    publisher_pb2_grpc.add_PublisherServicer_to_server(PublisherServicer(registry), server)
    health_servicer = health.HealthServicer()
    for name in ("", "qbfl.v1.Publisher"):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        bound = server.add_insecure_port(listen)
    except RuntimeError:
        bound = 0
    if not bound:
        raise QbflError(f"cannot listen on {listen}: the port is in use; pass --listen HOST:PORT")
    server.start()
    task = workspace.task
    log.info(
        "serving %s on %s: %s, %d nodes (%d registered), %d rounds",
        directory,
        listen,
        task.task,
        task.n_nodes,
        registry.registered,
        task.rounds,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    observer = None
    try:
        if observe:
            from qbfl.net.observer import ChainObserver

            while not stop.is_set() and not registry.ready.wait(0.5):
                pass
            if registry.genesis is not None and not stop.is_set():
                observer = ChainObserver(registry.genesis, summary_path=directory / "summary.json")
                observer.run(stop)
                if observer.done and linger is not None:
                    stop.wait(linger)
                    return
        stop.wait()
    finally:
        server.stop(grace=2.0).wait(3.0)
        log.info("publisher stopped")
    sys.exit(0)


main.add_command(health)

if __name__ == "__main__":
    main()
