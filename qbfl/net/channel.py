"""gRPC server and channel settings: explicit message-size limits, keepalive, one place."""

from __future__ import annotations

from concurrent import futures

import grpc

# A block of the dense FCNN is 0.8 MB; a sync response of 64 such blocks would be 52 MB. The
# node answers sync requests with at most SYNC_RESPONSE_BYTES of blocks, so 64 MiB bounds every
# message a peer may send; anything larger is RESOURCE_EXHAUSTED before it is read.
MAX_MESSAGE_BYTES = 64 << 20
SYNC_RESPONSE_BYTES = 32 << 20

_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # Reconnect quickly after a peer restarts (the default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


def insecure_channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=_OPTIONS)


def server(max_workers: int = 8) -> grpc.Server:
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=[
            *_OPTIONS,
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
        maximum_concurrent_rpcs=4 * max_workers,
    )
