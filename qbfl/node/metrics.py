"""Prometheus metrics of a node (`--metrics-port`): the text exposition format over plain HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Sample = tuple[str, dict[str, str], float]  # name, labels, value


def render(samples: Iterable[Sample], help_text: dict[str, str]) -> str:
    """Samples in the Prometheus text format (version 0.0.4), grouped by metric name."""
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for name, labels, value in samples:
        by_name.setdefault(name, []).append((labels, value))
    lines: list[str] = []
    for name, rows in by_name.items():
        kind = "counter" if name.endswith("_total") else "gauge"
        lines.append(f"# HELP {name} {help_text.get(name, name)}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            label = ",".join(
                f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                for k, v in sorted(labels.items())
            )
            lines.append(f"{name}{{{label}}} {value:g}" if label else f"{name} {value:g}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves `/metrics` from `collect()` on a background thread."""

    def __init__(self, host: str, port: int, collect: Callable[[], str]) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = outer._collect().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._collect = collect
        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def node_metrics(status: dict[str, Any]) -> str:
    """A node's status document (`Ledger.Status`) as Prometheus samples (docs/network.md §7)."""
    s = status
    samples: list[Sample] = [
        ("qbfl_height", {}, float(s.get("height", 0))),
        ("qbfl_round", {}, float(s.get("round", 0))),
        ("qbfl_view", {}, float(s.get("view", 0))),
        ("qbfl_view_changes_total", {}, float(s.get("view_changes", 0))),
        ("qbfl_stake", {}, float(s.get("stake", 0))),
        ("qbfl_catching_up", {}, float(bool(s.get("catching_up", False)))),
        ("qbfl_loop_queue_depth", {}, float(s.get("loop_depth", 0))),
    ]
    for key, value in sorted(s.get("counters", {}).items()):
        parts = key.split(":")
        if parts[0] == "received" and len(parts) == 2:
            samples.append(("qbfl_messages_received_total", {"kind": parts[1]}, value))
        elif parts[0] == "rejected":
            samples.append(("qbfl_messages_rejected_total", {"reason": ":".join(parts[1:])}, value))
        elif parts[0] == "sent" and len(parts) == 2:
            samples.append(("qbfl_messages_sent_total", {"kind": parts[1]}, value))
    for phase, seconds in s.get("phases", {}).items():
        samples.append(("qbfl_phase_seconds", {"phase": phase}, seconds))
    for pair, bits in s.get("qkd", {}).get("stock_bits", {}).items():
        samples.append(("qbfl_qkd_key_stock_bits", {"peer": pair}, bits))
    return render(
        samples,
        {
            "qbfl_height": "height of the node's head block",
            "qbfl_round": "round in progress",
            "qbfl_view": "view of the round in progress",
            "qbfl_stake": "this node's stake after the head block",
            "qbfl_qkd_key_stock_bits": "unused QKD key bits shared with a peer",
            "qbfl_phase_seconds": "duration of the last round's phases as seen by this node",
        },
    )
