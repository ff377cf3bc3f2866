"""`health`: a gRPC health-check probe (grpc.health.v1) for HEALTHCHECK lines and Kubernetes probes."""

from __future__ import annotations

import sys

import click

# Exit codes a probe caller can tell apart (Docker and Kubernetes only look at zero vs non-zero).
EXIT_SERVING = 0
EXIT_NOT_SERVING = 1
EXIT_UNREACHABLE = 2

ADDRESS_ENV = "QBFL_HEALTH_ADDRESS"


def check_health(address: str, *, service: str = "", timeout: float = 5.0) -> str:
    """The status name the server at `address` reports for `service` ("" = the whole server).

    Returns "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" or "UNKNOWN"; raises ConnectionError
    when nothing answers within `timeout` seconds (refused, unresolvable, or no health service).
    """
    # Imported here so that `qbfl-node --help` and other commands do not pay for grpc.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            name = code.name if code is not None else "error"
            raise ConnectionError(f"{address}: {name}: {detail}") from exc
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def make_health_command(*, server: str, default_address: str) -> click.Command:
    """A click `health` command for `server` ("node" or "publisher") with its default address."""

    @click.command(
        name="health",
        help=(
            f"Ask a {server} for its gRPC health status (grpc.health.v1); exit 0 iff it answers "
            f"SERVING, 1 if it answers anything else, 2 if it cannot be reached. Default address: "
            f"${ADDRESS_ENV}, else {default_address}."
        ),
    )
    @click.option(
        "--address",
        envvar=ADDRESS_ENV,
        default=default_address,
        show_default=True,
        help=f"HOST:PORT of the {server}'s gRPC server.",
    )
    @click.option(
        "--service", default="", help='Health service name to ask about ("" = the whole server).'
    )
    @click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=5.0,
        show_default=True,
        help="Seconds to wait for an answer.",
    )
    @click.option("--quiet", "-q", is_flag=True, help="Print nothing; the exit code says it all.")
    def health(address: str, service: str, timeout: float, quiet: bool) -> None:
        try:
            status = check_health(address, service=service, timeout=timeout)
        except ConnectionError as exc:
            if not quiet:
                click.echo(f"{server} unreachable: {exc}", err=True)
            sys.exit(EXIT_UNREACHABLE)
        if not quiet:
            click.echo(f"{address} {status}")
        sys.exit(EXIT_SERVING if status == "SERVING" else EXIT_NOT_SERVING)

    return health


# Node N listens on 127.0.0.1:(51000+N) by default; without --address (or $QBFL_HEALTH_ADDRESS) ask node 0.
health = make_health_command(server="node", default_address="127.0.0.1:51000")
