"""Keep a long-running node's heap small: few malloc arenas, freed memory handed back (glibc only).

50 node processes share 2 cores and 24 GiB: each one's threads (gRPC workers, QKD sessions, the
trainer) would otherwise get an arena of their own, and the transient buffers of a BB84 session
or a training round would stay mapped after they are freed (measured: ~50 MB of anonymous memory
per node). No-ops where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import functools

M_ARENA_MAX = -8


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (probe: glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(count: int = 2) -> None:
    """At most `count` malloc arenas for this process (call before starting threads)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, count)


def trim() -> None:
    """Return freed heap memory to the system (after a training round or a QKD session)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
