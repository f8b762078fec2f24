"""The sweep's picture: accuracy per category per group (mean, sd over seeds as error bars) beside the
training loss of every variant overlaid (one colour per group, one line per seed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .results_table import GroupRow, categories_of


def plot_sweep(rows: list[GroupRow], results: list[dict[str, Any]], path: Path, title: str = "sweep") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = ["all", *categories_of(rows)]
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(13, 4.6), dpi=100, gridspec_kw={"width_ratios": [3, 2]})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / max(1, len(rows))
    for i, r in enumerate(rows):
        stats = [r.accuracy, *[r.categories.get(c) for c in cats[1:]]]
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(cats))]
        means = [s.mean if s is not None and s.n else 0.0 for s in stats]
        sds = [s.sd if s is not None and s.n else 0.0 for s in stats]
        bars.bar(xs, means, width, yerr=sds, capsize=2, color=colours[i % len(colours)],
                 label=f"{r.name} ({r.ok}/{r.seeds})")
    bars.set_xticks(range(len(cats)), cats, rotation=30 if len(cats) > 6 else 0)
    bars.set_ylim(0, 1.05)
    bars.set_ylabel("held-out accuracy (mean ± sd over seeds)")
    bars.grid(axis="y", alpha=0.3)
    bars.legend(fontsize=7, loc="lower right")
    colour_of = {r.name: colours[i % len(colours)] for i, r in enumerate(rows)}
    labelled: set[str] = set()
    for res in results:
        pts = res.get("loss") or []
        if not pts:
            continue
        xs, ys = zip(*pts)
        group = res["group"]
        curves.plot(xs, ys, color=colour_of.get(group, "grey"), linewidth=1.0, alpha=0.8,
                    label=None if group in labelled else group)
        labelled.add(group)
    curves.set_xlabel("optimizer step (all stages)")
    curves.set_ylabel("training loss")
    curves.grid(alpha=0.3)
    if labelled:
        curves.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
