"""qbfl-bench qkd: simulated BB84 sessions: final key rate per wall second, leak, QBER under attack."""

from __future__ import annotations

import time
from typing import Any

import click

from qbfl.bench.report import emit
from qbfl.command_line import NumberList
from qbfl.crypto.bb84 import BB84Config, QberTooHigh, run_bb84_pair
from qbfl.crypto.qkd import binary_entropy


def measure_session(config: BB84Config, *, channel_error: float, seed: int) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    alice, bob = run_bb84_pair(config, seed=seed, channel_error=channel_error)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if alice.key != bob.key:  # cannot happen after a passed verification; a benchmark must not lie
        raise RuntimeError("endpoints disagree on the final key")
    return {
        "channel_error": channel_error,
        "eavesdropper": False,
        "qber": alice.qber,
        "sifted_bits": alice.sifted_bits,
        "reconciled_bits": alice.reconciled_bits,
        "errors_corrected": bob.corrected_errors,
        "leaked_bits": alice.leaked_bits,
        "leak_over_shannon": (alice.leaked_bits - config.verify_tag_bits)
        / (alice.reconciled_bits * _h(alice.qber)),
        "final_bits": alice.key_bits,
        "final_over_raw": alice.key_bits / config.n_qubits,
        "final_over_sifted": alice.key_bits / alice.sifted_bits,
        "wall_s": wall,
        "cpu_s": cpu,
        "final_mbit_per_wall_s": alice.key_bits / wall / 1e6,
        "final_mbit_per_cpu_s": alice.key_bits / cpu / 1e6,
        "simulated_s": alice.simulated_seconds,
        "outcome": "key",
    }


def _h(p: float) -> float:
    return binary_entropy(p) or float("nan")  # no errors: the leak ratio is undefined


def measure_eavesdropped(config: BB84Config, *, seed: int) -> dict[str, Any]:
    wall = time.perf_counter()
    try:
        run_bb84_pair(config, seed=seed, channel_error=0.0, eavesdropper=True)
    except QberTooHigh as exc:
        return {
            "channel_error": 0.0,
            "eavesdropper": True,
            "qber": exc.qber,
            "final_bits": 0,
            "wall_s": time.perf_counter() - wall,
            "outcome": "aborted",
        }
    raise RuntimeError("an intercept-resend attack went unnoticed")


@click.command(name="qkd", help="BB84 sessions: final key bits per wall second, leak, attack QBER.")
@click.option(
    "--qubits",
    type=click.IntRange(min=64),
    default=1_000_000,
    show_default=True,
    help="qubits sent per session",
)
@click.option(
    "--errors",
    type=NumberList(float, low=0.0, high=0.5),
    default="0.01,0.03,0.05",
    show_default=True,
    help="channel error rates",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def command(qubits: int, errors: list[float], seed: int, as_json: bool) -> None:
    config = BB84Config(n_qubits=qubits)
    rows = [
        measure_session(config, channel_error=float(e), seed=seed + i) for i, e in enumerate(errors)
    ]
    rows.append(measure_eavesdropped(config, seed=seed))
    emit(
        "qkd",
        rows,
        as_json=as_json,
        title=f"BB84, {qubits} qubits per session, Cascade ({config.cascade_passes} passes), "
        f"Toeplitz PA, eps_PE = eps_PA = {config.epsilon_pa:g}",
        columns=[
            "channel_error",
            "eavesdropper",
            "qber",
            "sifted_bits",
            "leaked_bits",
            "leak_over_shannon",
            "final_bits",
            "final_over_raw",
            "wall_s",
            "cpu_s",
            "final_mbit_per_wall_s",
            "final_mbit_per_cpu_s",
            "outcome",
        ],
        extra={"config": {k: getattr(config, k) for k in config.__dataclass_fields__}},
    )
