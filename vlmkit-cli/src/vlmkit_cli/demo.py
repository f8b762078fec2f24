"""The embedded default: everything local, on a CPU, in minutes.

1. generate the synthetic shapes data (LLaVA JSONL + PNG, same loader as real data);
2. build the tiny model (tiny-conv encoder 64 px -> 4x4 tokens, mlp2x_gelu, 2-layer Llama of width 128);
3. train it with the `demo` recipe (transformers Trainer, progress bar, loss curve);
4. evaluate exact-match accuracy on held-out questions, per category, against the majority-answer baseline;
5. leave the checkpoint, the loss curve and a report in the output folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

#: the components the demo uses, with the sibling that ships each (checked before anything runs)
DEMO_NEEDS = (("preset", "vlmkit-encoders:tiny", "vlmkit-encoders"),
              ("connector", "vlmkit-fusion:mlp2x_gelu", "vlmkit-fusion"),
              ("dataset", "vlmkit-data:synthetic-shapes", "vlmkit-data"))

DEMO_RECIPE: dict[str, Any] = {
    "model": {"preset": "vlmkit-encoders:tiny"},
    "seed": 0,
    "stages": [{
        "name": "demo",
        "data": {"dataset": "vlmkit-data:synthetic-shapes", "args": {"split": "train"}, "on_bad_sample": "error"},
        "trainable": ["encoders", "connector", "llm"],
        "lr": 1e-3,
        "max_steps": 2000,
        "batch_size": 64,
        "schedule": "cosine",
        "warmup_ratio": 0.03,
        "logging_steps": 25,
        "save_steps": 400,
        "weight_decay": 0.0,
    }],
}


def run_demo(output: Path, steps: int | None = None, seed: int = 0, n_train: int = 6000, n_test: int = 600) -> dict[str, Any]:
    import copy

    from rich.console import Console

    from vlmkit.inference.evaluation import evaluate, majority_answer_rates
    from vlmkit.model.checkpoint import load_checkpoint
    from vlmkit.plugins.registry import registry
    from vlmkit.training.recipe import parse_recipe
    from vlmkit.training.runner import run_recipe

    console = Console()
    t0 = time.time()
    output = Path(output)
    console.print(f"[b]1/4[/b] generating synthetic shapes data in {output / 'data'}")
    data_args = {"root": str(output / "data"), "n_train": n_train, "n_test": n_test, "seed": seed}
    shapes = registry.load("dataset", "vlmkit-data:synthetic-shapes")
    test = shapes(split="test", **data_args)

    doc = copy.deepcopy(DEMO_RECIPE)
    doc["seed"] = seed
    doc["output_dir"] = str(output / "run")
    stage = doc["stages"][0]
    stage["data"]["args"].update(data_args)
    if steps is not None:
        stage["max_steps"] = steps
    recipe = parse_recipe(doc, "demo recipe")
    console.print("[b]2/4[/b] building the tiny model and [b]3/4[/b] training")
    resume = (output / "run").exists()
    if resume:  # an interrupted demo goes on; a finished one is only evaluated again
        console.print(f"resuming the run in {output / 'run'} (a finished run is not retrained; use a new --output "
                      "or delete that folder to train from scratch)")
    final = run_recipe(recipe, resume=resume)
    t_train = time.time() - t0

    console.print(f"[b]4/4[/b] evaluating on {n_test} held-out questions")
    model = load_checkpoint(final)
    report = evaluate(model, test, batch_size=64)
    report["chance_majority"] = {k: v for k, v in majority_answer_rates(test).items() if k != "all"}
    report["seconds_total"] = round(time.time() - t0, 1)
    report["seconds_train"] = round(t_train, 1)
    report["checkpoint"] = str(final)
    report["loss_curve"] = str(final / "loss_curve.png")
    (output / "demo_report.json").write_text(json.dumps(report, indent=2))

    from rich.table import Table

    table = Table("category", "accuracy", "correct/total", "chance (majority answer)", title="held-out accuracy")
    for cat, r in sorted(report["categories"].items()):
        table.add_row(cat, f"{r['accuracy']:.1%}", f"{r['correct']}/{r['total']}", f"{report['chance_majority'].get(cat, 0):.1%}")
    table.add_row("[b]all[/b]", f"[b]{report['accuracy']:.1%}[/b]", f"{report['correct']}/{report['total']}", "")
    console.print(table)
    console.print(f"checkpoint: {final}\nloss curve: {final / 'loss_curve.png'}\n"
                  f"time: {report['seconds_total']} s (training {report['seconds_train']} s)")
    return report
