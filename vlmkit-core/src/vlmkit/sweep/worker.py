"""One variant of a sweep, in its own process: train its recipe (resuming what a killed run left), evaluate,
write ``result.json``.

``python -m vlmkit.sweep.worker FOLDER --parent PID``. The process ends when its sweep does (the parent is
watched), so a killed sweep leaves no orphan training on. A failure is a result too (``status: failed`` with
the message), so the sweep records it and goes on.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from .plan import EvalSpec, open_eval_dataset, write_json_atomic

VARIANT_FILE, RESULT_FILE, LOCK_FILE, LOG_FILE = "variant.json", "result.json", ".lock", "log.txt"


def watch_parent(parent: int, every: float = 0.5) -> None:
    """Exit at once when the sweep that started this process is gone (killed with -9 included)."""
    def loop() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(137)
            time.sleep(every)

    threading.Thread(target=loop, name="vlmkit-sweep-parent-watch", daemon=True).start()


def loss_curve(run_dir: Path) -> list[list[float]]:
    """(step, total loss) over every stage, in stage order, the steps of later stages offset to follow on."""
    from vlmkit.training.plots import loss_terms

    points: list[list[float]] = []
    offset = 0
    for stage_dir in sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name[:2].isdigit()):
        history = stage_dir / "final" / "log_history.json"
        if not history.is_file():
            continue
        total = loss_terms(json.loads(history.read_text())).get("total", [])
        points += [[offset + step, loss] for step, loss in total]
        offset += max((step for step, _ in total), default=0)
    return points


def run_variant(folder: Path) -> dict[str, Any]:
    from vlmkit.cpu_threads import apply_threads
    from vlmkit.inference.evaluation import evaluate
    from vlmkit.model.checkpoint import load_checkpoint
    from vlmkit.training.recipe import parse_recipe
    from vlmkit.training.runner import run_recipe

    spec = json.loads((folder / VARIANT_FILE).read_text())
    t0 = time.time()
    apply_threads()
    recipe = parse_recipe(spec["recipe"], f"sweep variant '{spec['name']}'")
    final = run_recipe(recipe, resume=True)
    evaluation = EvalSpec(**spec["evaluation"])
    report = evaluate(load_checkpoint(final), open_eval_dataset(evaluation), batch_size=evaluation.batch_size,
                      limit=evaluation.limit, progress=False)
    return {"status": "ok", "accuracy": report["accuracy"], "correct": report["correct"], "total": report["total"],
            "categories": {c: r["accuracy"] for c, r in report["categories"].items()},
            "checkpoint": str(final), "seconds": round(time.time() - t0, 1),
            "loss": loss_curve(Path(recipe.output_dir))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlmkit.sweep.worker")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--parent", type=int, default=None)
    args = parser.parse_args(argv)
    if args.parent is not None:
        watch_parent(args.parent)
    folder: Path = args.folder
    lock = open(folder / LOCK_FILE, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one process per variant, even if an orphan of a killed sweep lingers
    spec = json.loads((folder / VARIANT_FILE).read_text())
    base = {"name": spec["name"], "group": spec["group"], "seed": spec["seed"]}
    try:
        result = run_variant(folder)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a failed variant is a result: recorded, and the sweep goes on
        from vlmkit.errors import VlmkitError

        traceback.print_exc()
        message = str(exc) if isinstance(exc, VlmkitError) else f"{type(exc).__name__}: {exc}"
        result = {"status": "failed", "error": message.splitlines()[0][:500] if message else type(exc).__name__}
    write_json_atomic(folder / RESULT_FILE, {**base, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
