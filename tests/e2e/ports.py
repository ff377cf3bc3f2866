"""Free loopback port ranges for tests that start real servers on fixed per-node ports."""

from __future__ import annotations

import random
import socket


def free_range(count: int, *, attempts: int = 200) -> int:
    """A base port such that base .. base+count-1 can all be bound on 127.0.0.1 right now."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(20000, 60000 - count)
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
