"""Free loopback port ranges for tests that start real servers on fixed per-node ports."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10000


def _ephemeral_low() -> int:
    """The first port the kernel hands to outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_range(count: int, *, attempts: int = 200) -> int:
    """A base port such that base .. base+count-1 can all be bound on 127.0.0.1 right now.

    Drawn below the kernel's ephemeral range: a port probed free there can be taken by an outgoing
    connection in the seconds before the node binds it, and the node would then fail to start.
    """
    rng = random.Random()
    top = max(LOWEST + 2 * count, _ephemeral_low()) - count
    for _ in range(attempts):
        base = rng.randrange(LOWEST, top)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
                sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports found")
