"""Node memory for `up`: the cgroup and /proc readers and the sampling thread, without an engine."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from qbfl.orchestrator import docker_backend
from qbfl.orchestrator.docker_backend import _memory_from_cgroup
from qbfl.orchestrator.memory import MemoryUsage, PeakMemory, process_memory


def test_cgroup_v1_and_v2_files_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2 = tmp_path / "v1" / "abc", tmp_path / "v2" / "def"
    v1.mkdir(parents=True)
    v2.mkdir(parents=True)
    (v1 / "memory.usage_in_bytes").write_text("1000000\n")
    (v1 / "memory.stat").write_text("cache 5\ntotal_inactive_file 250000\n")
    (v1 / "cgroup.procs").write_text(f"{os.getpid()}\n")
    (v2 / "memory.current").write_text("2000000\n")
    (v2 / "memory.stat").write_text("anon 7\ninactive_file 500000\n")
    (v2 / "cgroup.procs").write_text("")
    monkeypatch.setattr(
        docker_backend,
        "_CGROUP_DIRS",
        (str(tmp_path / "v1" / "{id}"), str(tmp_path / "v2" / "{id}")),
    )
    first = _memory_from_cgroup("abc")
    assert first is not None and first.usage_bytes == 1_000_000
    assert first.working_set_bytes == 750_000
    assert first.pss_bytes is not None and first.pss_bytes > 1_000_000  # this test process
    assert _memory_from_cgroup("def") == MemoryUsage(2_000_000, 1_500_000, 0)
    assert _memory_from_cgroup("missing") is None


class _FakeNet:
    def __init__(self) -> None:
        self.calls = 0

    def memory_all(self) -> dict[str, MemoryUsage]:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("a container went away mid-sample")
        mib = 1 << 20
        per_node = 100 * mib if self.calls == 3 else 50 * mib
        usage = {f"node-{i}": MemoryUsage(per_node, per_node, per_node) for i in range(3)}
        if self.calls == 4:  # one node's PSS could not be read: counted, not hidden
            usage["node-2"] = MemoryUsage(per_node, per_node, None)
        usage["publisher"] = MemoryUsage(999 * mib, 999 * mib, 999 * mib)  # not a node
        return usage


def test_peak_memory_samples_on_its_own_thread_and_keeps_the_maximum() -> None:
    net = _FakeNet()
    sampler = PeakMemory(net.memory_all, interval_s=0.01)
    sampler.start()
    deadline = time.monotonic() + 10
    while net.calls < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.finish()
    sampler.finish()  # idempotent: `up` calls it on the way out whatever happened before
    assert not sampler.is_alive()
    assert (
        sampler.peak["pss_bytes"] == 300 << 20
    )  # three nodes at 100 MiB; the publisher not counted
    assert sampler.peak["samples"] >= 3
    assert sampler.peak["pss_unreadable"] == 1


def test_a_live_process_has_rss_and_pss_and_a_gone_one_none() -> None:
    mine = process_memory(os.getpid())
    assert mine is not None and mine.usage_bytes > 1_000_000
    assert mine.pss_bytes is not None and 0 < mine.pss_bytes <= mine.usage_bytes * 2
    assert process_memory(2**22 + 12345) is None  # above the kernel's pid_max
