"""Commands that train, generate and evaluate (all import torch lazily, inside the command)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .app import app
from .errors import fail, friendly
from .siblings import require_components

THREADS_HELP = ("torch CPU threads (default: the CPUs not busy with other work, re-checked while training; "
                "env VLMKIT_THREADS).")


def fix_threads(threads: Optional[int], apply: bool = False) -> None:
    """--threads N is VLMKIT_THREADS=N for everything this command runs. Training sizes the pool per stage and
    says so on stderr; ``apply`` sizes it now, quietly (generation and evaluation print only their answer)."""
    import logging
    import os

    if threads is not None:
        os.environ["VLMKIT_THREADS"] = str(threads)
    if apply:
        from vlmkit.cpu_threads import apply_threads

        apply_threads()
        return
    say = logging.getLogger("vlmkit.cpu_threads")  # one line on stderr: the count and why
    if not say.handlers:
        say.addHandler(CurrentStderrHandler())
        say.setLevel(logging.INFO)
        say.propagate = False


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream of the moment it was made
    (a caller that swaps stderr, a test runner, must not leave the handler writing to a closed file)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@app.command()
@friendly
def train(recipe: str = typer.Argument(..., help="Recipe YAML file or recipe preset name."),
          output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (overrides the recipe)."),
          resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint in the "
                                                              "output folder."),
          weights_only: bool = typer.Option(False, "--resume-weights-only",
                                            help="Resume even if the checkpoint's optimizer/scheduler state is gone "
                                                 "(fresh optimizer and schedule from its weights)."),
          deepspeed: Optional[str] = typer.Option(None, "--deepspeed", help="zero2, zero3 or a DeepSpeed JSON file."),
          set_: Optional[List[str]] = typer.Option(None, "--set",
                                                   help="Override recipe keys: stages.0.lr=1e-3, model.max_length=128"),
          threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
          ) -> None:
    """Train a recipe: a model config plus one or more stages."""
    fix_threads(threads)
    from vlmkit.training.recipe import load_recipe
    from vlmkit.training.runner import run_recipe

    from .model_config import with_default_connector

    rec = load_recipe(recipe, overrides=set_ or [])
    with_default_connector(rec.model)
    if output is not None:
        rec.output_dir = str(output)
    if deepspeed is not None:
        for st in rec.stages:
            st.deepspeed = deepspeed
    final = run_recipe(rec, resume=resume or weights_only, weights_only=weights_only)
    import os

    if os.environ.get("RANK", "0") == "0":  # one line, not one per process, under torchrun
        typer.echo(f"final checkpoint: {final}")


@app.command()
@friendly
def generate(model: Path = typer.Option(..., "--model", help="vlmkit checkpoint folder."),
             image: Optional[List[Path]] = typer.Option(None, "--image", help="Image file (repeat for several)."),
             prompt: str = typer.Option(..., "--prompt", help="User prompt; images go first unless it holds <image>."),
             max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, max=1 << 16),
             template: Optional[str] = typer.Option(None, "--template", help="Chat template (default: the model's)."),
             sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy decoding."),
             transform: Optional[List[str]] = typer.Option(
                 None, "--transform", help="A transform to apply to the prompt and images first (repeat, in order): "
                 "a name or a YAML mapping {name: ..., args: {...}}, as for `vlmkit data preview`."),
             seed: int = typer.Option(0, "--seed", help="Seed of the transforms' random stream."),
             save_transformed: Optional[Path] = typer.Option(None, "--save-transformed",
                                                             help="Save the first image after the transforms here."),
             trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                                    help="Let the LLM's own Python code in the checkpoint run "
                                                         "(never on by a checkpoint's say-so)."),
             threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
             ) -> None:
    """Answer a prompt about images with a trained model (greedy by default).

    Transforms run on the prompt and images first. A ViP-LLaVA visual prompt, for instance (vlmkit-data's
    `vip` transform): --transform '{name: vip, args: {bbox: [20, 10, 60, 50], shapes: [ellipse], color: red}}'
    draws the ellipse and turns '{region}' in the prompt into its phrase ("within the red ellipse").
    """
    from vlmkit.inference.generation import generate_batch, prompt_sample

    from .commands_data import transform_spec

    fix_threads(threads, apply=True)

    specs = [transform_spec(t) for t in transform or []]
    tags = prompt.count("<image>")
    if tags and tags != len(image or []):
        fail(f"--prompt has {tags} <image> tag(s) but {len(image or [])} --image given: give one --image per tag, or "
             "no tag (the images then go first)")
    prompted = prompt_sample([str(p) for p in image or []], prompt, transforms=specs, seed=seed)
    if save_transformed is not None:
        if not prompted.images:
            fail("--save-transformed: there is no image")
        prompted.images[0].save(save_transformed)
    from vlmkit.model.checkpoint import load_checkpoint

    loaded = load_checkpoint(model, trust_remote_code=trust_remote_code).eval()
    text = generate_batch(loaded, [prompted.turns], [prompted.images], template=template, max_new_tokens=max_new_tokens,
                          do_sample=sample)[0]
    typer.echo(text)


@app.command("eval")
@friendly
def evaluate(model: Path = typer.Option(..., "--model", help="vlmkit checkpoint folder."),
             data: Path = typer.Option(..., "--data", help="Short-answer JSONL (LLaVA records)."),
             images: Optional[Path] = typer.Option(None, "--images", help="Image root (default: the data file's folder)."),
             batch_size: int = typer.Option(32, "--batch-size", min=1, max=1 << 16),
             limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate only the first N records."),
             dataset: str = typer.Option("llava-json", "--dataset", help="Dataset component that reads --data."),
             as_json: bool = typer.Option(False, "--json"),
             trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                                    help="Let the LLM's own Python code in the checkpoint run "
                                                         "(never on by a checkpoint's say-so)."),
             threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP)) -> None:
    """Exact-match accuracy on short-answer questions, overall and per category."""
    from vlmkit.inference.evaluation import evaluate_file

    fix_threads(threads, apply=True)

    report = evaluate_file(str(model), str(data), dataset=dataset, image_root=str(images) if images else None,
                           batch_size=batch_size, limit=limit, trust_remote_code=trust_remote_code)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"accuracy: {report['accuracy']:.4f} ({report['correct']}/{report['total']})")
    for cat, r in sorted(report["categories"].items()):
        typer.echo(f"  {cat:<10} {r['accuracy']:.4f} ({r['correct']}/{r['total']})")


@app.command()
@friendly
def demo(output: Path = typer.Option(Path("demo-out"), "--output", "-o", help="Where data, checkpoint and plots go."),
         steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default: the demo recipe's)."),
         seed: int = typer.Option(0, "--seed"),
         threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP)) -> None:
    """The embedded default: build a tiny model, make synthetic data, train, evaluate, save."""
    fix_threads(threads)
    from .demo import DEMO_NEEDS, run_demo

    require_components("vlmkit demo", *DEMO_NEEDS)
    run_demo(output, steps=steps, seed=seed)
