"""PNG accuracy curves of simulated runs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_accuracy(
    curves: Mapping[str, Sequence[float]],
    path: Path,
    *,
    title: str = "",
    first_round: int = 1,
) -> Path:
    """Draw one test-accuracy curve per label (x: round, y: accuracy in %) into `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    try:
        for label, accuracy in curves.items():
            rounds = range(first_round, first_round + len(accuracy))
            ax.plot(list(rounds), [100.0 * a for a in accuracy], label=label, linewidth=1.4)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
        if title:
            ax.set_title(title)
        if len(curves) > 1 or any(curves):
            ax.legend(loc="lower right")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
