"""Stand-ins for `qbfl-publisher` and `qbfl-node` that follow the CLI contract, to rehearse scripts/ci-docker.sh.

Not the protocol: a node's chain is a clock. `start` records its first start time in its data
directory and serves grpc.health.v1 SERVING on --listen; `status --json` reports height
min(ROUNDS, seconds since that first start / BLOCK_SECONDS) and a head hash that depends on the
height only, so honest nodes agree, a killed node stops answering, and a restarted one "catches
up" from its data directory. `health` is the real probe. Build: see Dockerfile beside this file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from concurrent import futures
from pathlib import Path

ROUNDS = int(os.environ.get("FAKE_ROUNDS", "8"))
BLOCK_SECONDS = float(os.environ.get("FAKE_BLOCK_SECONDS", "3"))


def _flag(args: list[str], name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args else default


def _serve(address: str) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(address)
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    print(f"fake serving on {address}", flush=True)
    server.wait_for_termination()


def node(args: list[str]) -> int:
    command = args[0]
    if command == "start":
        data = Path(_flag(args, "--data-dir", "qbfl-data/node-0"))
        data.mkdir(parents=True, exist_ok=True)
        first = data / "first-start"
        if not first.exists():
            first.write_text(str(time.time()))
        print(f"fake node {_flag(args, '--id', '?')} roles {args.count('--malicious')}", flush=True)
        _serve(_flag(args, "--listen", "127.0.0.1:51000"))
        return 0
    if command == "status":
        (first,) = Path("/var/lib/qbfl").glob("node-*/first-start")
        height = min(ROUNDS, int((time.time() - float(first.read_text())) / BLOCK_SECONDS))
        head = hashlib.sha256(f"block {height}".encode()).hexdigest()
        status = {"height": height, "head_hash": head, "round": height, "catching_up": False}
        print(json.dumps(status))
        return 0
    os.execv("/opt/venv/bin/qbfl-node.real", ["qbfl-node", *args])
    return 1


def publisher(args: list[str]) -> int:
    command = args[0]
    if command == "init":
        Path(_flag(args, "--out", "qbfl-data/publisher")).mkdir(parents=True, exist_ok=True)
        print("fake publisher initialised", flush=True)
        return 0
    if command == "serve":
        _serve(_flag(args, "--listen", "127.0.0.1:50050"))
        return 0
    os.execv("/opt/venv/bin/qbfl-publisher.real", ["qbfl-publisher", *args])
    return 1


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    sys.exit(node(rest) if role == "node" else publisher(rest))
