"""`qbfl-publisher health`: the gRPC health-check probe pointed at the publisher's default address."""

from __future__ import annotations

from qbfl.node.health_cli import make_health_command

health = make_health_command(server="publisher", default_address="127.0.0.1:50050")
