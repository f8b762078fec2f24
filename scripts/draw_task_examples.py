"""Pictures of the claim tasks for docs/claims.md: a few test images of each synthetic task, each with its
question and answer (or caption) under it, enlarged without smoothing so single pixels stay visible.

    python scripts/draw_task_examples.py            # all tasks into docs/images/
    python scripts/draw_task_examples.py clutter    # one
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images"


def datasets(tmp: str) -> dict:
    from vlmkit_data.synthetic import SyntheticShapesDataset
    from vlmkit_data.synthetic_clutter import SyntheticClutterDataset
    from vlmkit_data.synthetic_details import SyntheticDetailsDataset
    from vlmkit_data.synthetic_vip import SyntheticVipDataset

    return {
        "details": lambda: SyntheticDetailsDataset(tmp, split="test", n_train=1, n_test=12, image_size=128,
                                                   progress=False),
        "clutter": lambda: SyntheticClutterDataset(tmp, split="test", n_train=1, n_test=12, progress=False),
        "dense_captions": lambda: SyntheticShapesDataset(tmp, split="test", n_train=1, n_test=12,
                                                         style="dense-caption", progress=False),
        # the first 8 test records: one per prompt shape
        "vip": lambda: SyntheticVipDataset(tmp, split="test", n_train=1, n_test=8, progress=False),
    }


#: how many examples a task's picture shows (default 6)
COUNT = {"vip": 8}


def draw(name: str, ds, n: int = 6) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 3.0))
    for ax, i in zip(axes, range(n)):
        s = ds[i]
        ax.imshow(s.images[0], interpolation="nearest")
        question = s.turns[0].text.replace("<image>", "").strip()
        ax.set_title("\n".join(textwrap.wrap(question, 24)), fontsize=7)
        ax.set_xlabel("\n".join(textwrap.wrap(s.turns[1].text, 28)), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = OUT / f"{name}_examples.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tasks", nargs="*", help="details, clutter, dense_captions, vip (default: all)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        made = datasets(tmp)
        unknown = set(args.tasks) - set(made)
        if unknown:
            ap.error(f"unknown task(s) {', '.join(sorted(unknown))}; choose from {', '.join(made)}")
        for name in args.tasks or list(made):
            print(draw(name, made[name](), COUNT.get(name, 6)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
