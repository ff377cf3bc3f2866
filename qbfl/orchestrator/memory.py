"""Memory of a network's nodes while it runs: processes (local backend) or containers (docker).

`PeakMemory` samples on its own thread, so a slow sample never delays the live display; `up`
records the peaks in summary.json as `memory_peak`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MemoryUsage:
    """Memory of one node: its cgroup's (or process's) view and the PSS of its processes."""

    usage_bytes: int  # a container: the cgroup's usage, page cache included; a process: its RSS
    working_set_bytes: int  # usage minus inactive file cache (what `docker stats` shows)
    pss_bytes: int | None = None  # proportional set size summed over the node's processes


def pss_of(pids: Iterable[int]) -> int | None:
    """Sum of Pss over these processes, read from /proc (None if one is unreadable)."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def process_memory(pid: int) -> MemoryUsage | None:
    """RSS and PSS of one live process (None once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    rss = next(
        (int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")),
        0,
    )
    return MemoryUsage(rss, rss, pss_of([pid]))


class PeakMemory(threading.Thread):
    """The nodes' total memory, sampled every `interval_s` on its own thread: one sample of 50
    containers through the engine took tens of seconds, which on the follow loop delayed the
    display by a minute. `sample` returns usage per service; only `node-*` entries count."""

    def __init__(
        self, sample: Callable[[], dict[str, MemoryUsage]], interval_s: float = 2.0
    ) -> None:
        super().__init__(name="node-memory", daemon=True)
        self._sample = sample
        self._interval_s = interval_s
        self._done = threading.Event()
        # pss_unreadable: node readings without a PSS (a process /proc would not show), which
        # count as 0 above: a reader of the peaks must know they are then lower bounds
        self.peak = {
            "pss_bytes": 0,
            "working_set_bytes": 0,
            "max_node_pss_bytes": 0,
            "samples": 0,
            "pss_unreadable": 0,
        }

    def run(self) -> None:
        while not self._done.is_set():
            try:
                usage = self._sample()
            except Exception:  # a node going away mid-sample: take the next one
                usage = {}
            nodes = [u for name, u in usage.items() if name.startswith("node-")]
            if nodes and not self._done.is_set():
                pss = [u.pss_bytes or 0 for u in nodes]
                peak = self.peak
                peak["pss_bytes"] = max(peak["pss_bytes"], sum(pss))
                peak["max_node_pss_bytes"] = max(peak["max_node_pss_bytes"], max(pss))
                peak["working_set_bytes"] = max(
                    peak["working_set_bytes"], sum(u.working_set_bytes for u in nodes)
                )
                peak["samples"] += 1
                peak["pss_unreadable"] += sum(u.pss_bytes is None for u in nodes)
            self._done.wait(self._interval_s)

    def finish(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join(timeout=60)
