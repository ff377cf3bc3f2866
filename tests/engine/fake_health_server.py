"""A stand-in for publisher/node in compose tests: writes DIR/ok, then serves grpc.health.v1 SERVING on $QBFL_HEALTH_ADDRESS."""

import os
import pathlib
import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

address = os.environ["QBFL_HEALTH_ADDRESS"]
out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
(out / "ok").write_text("ok")
server = grpc.server(futures.ThreadPoolExecutor(2))
servicer = health.HealthServicer()
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port(address)
server.start()
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
print("serving", address, flush=True)
server.wait_for_termination()
