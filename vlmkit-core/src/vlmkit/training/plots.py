"""Loss curves as pictures: one line per logged loss term, written next to the checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def loss_terms(log_history: Sequence[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    terms: dict[str, list[tuple[int, float]]] = {}
    for row in log_history:
        step = row.get("step")
        if step is None:
            continue
        for k, v in row.items():
            if k == "loss" or k.startswith("loss/"):
                name = "total" if k == "loss" else k.split("/", 1)[1]
                terms.setdefault(name, []).append((int(step), float(v)))
    return terms


def plot_loss_curve(log_history: Sequence[dict[str, Any]], path: str | Path, title: str = "training loss") -> Path | None:
    terms = loss_terms(log_history)
    if not terms:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, pts in sorted(terms.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, label=name, linewidth=1.6 if name == "total" else 1.0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
