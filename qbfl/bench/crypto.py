"""qbfl-bench crypto: ML-DSA-44 keygen/sign/verify rates for both signature backends, side by side."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import click

from qbfl.bench.report import emit
from qbfl.crypto.signing import SignatureBackend, SigningKey, verify


def _rate(op: Callable[[int], object], seconds: float, min_ops: int) -> tuple[float, int]:
    """Operations per second of `op(i)`, run for at least `seconds` and `min_ops` calls."""
    done = 0
    start = time.perf_counter()
    while done < min_ops or time.perf_counter() - start < seconds:
        op(done)
        done += 1
    return done / (time.perf_counter() - start), done


def measure_backend(backend: SignatureBackend, *, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    seeds = [rng.randbytes(32) for _ in range(4096)]  # fresh seeds: keygen must not hit a cache
    message = rng.randbytes(200)  # about a consensus message: ids + digest + round/view
    key = SigningKey.from_seed(seeds[0], backend)
    signature = key.sign(message, context=b"qbfl")
    public = key.public_key

    keygen, n_keygen = _rate(
        lambda i: SigningKey.from_seed(seeds[(i + 1) % 4096], backend).public_key, seconds, 3
    )
    sign, n_sign = _rate(lambda i: key.sign(message, context=b"qbfl"), seconds, 3)
    check, n_verify = _rate(
        lambda i: verify(public, message, signature, context=b"qbfl", backend=backend), seconds, 3
    )
    return {
        "backend": backend.value,
        "keygen_per_s": keygen,
        "sign_per_s": sign,
        "verify_per_s": check,
        "keygen_ms": 1e3 / keygen,
        "sign_ms": 1e3 / sign,
        "verify_ms": 1e3 / check,
        "ops_timed": n_keygen + n_sign + n_verify,
    }


@click.command(name="crypto", help="ML-DSA-44 keygen/sign/verify per second, both backends.")
@click.option("--seconds", default=1.0, show_default=True, help="time per operation and backend")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def command(seconds: float, seed: int, as_json: bool) -> None:
    rows = [measure_backend(b, seconds=seconds, seed=seed) for b in SignatureBackend]
    native, pure = rows
    rows.append(
        {
            "backend": "ratio cryptography/dilithium-py",
            **{k: native[k] / pure[k] for k in ("keygen_per_s", "sign_per_s", "verify_per_s")},
        }
    )
    emit(
        "crypto",
        rows,
        as_json=as_json,
        title="ML-DSA-44, 200-byte message with context (hedged signing)",
        columns=[
            "backend",
            "keygen_per_s",
            "sign_per_s",
            "verify_per_s",
            "keygen_ms",
            "sign_ms",
            "verify_ms",
        ],
    )
