"""``vlmkit sweep``: one recipe over a grid of ``--set`` values and seeds, each variant trained then evaluated
on a held-out set, and the results tabulated against a baseline (the library side is ``vlmkit.sweep``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from .app import app
from .errors import fail, friendly


def eval_spec(eval_data: Optional[Path], eval_dataset: str, eval_images: Optional[Path], spec: Optional[str],
              batch_size: int, limit: Optional[int]):
    from vlmkit import safe_yaml
    from vlmkit.sweep.plan import EvalSpec

    if (eval_data is None) == (spec is None):
        fail("give the held-out set: --eval-data FILE, or --eval '{dataset: NAME, args: {...}}'")
    if spec is not None:
        doc = safe_yaml.load(spec, "--eval")
        if not isinstance(doc, dict) or not isinstance(doc.get("dataset"), str) \
                or not isinstance(doc.get("args", {}), dict) or set(doc) - {"dataset", "args"}:
            fail(f"--eval {spec!r}: expected a mapping {{dataset: NAME, args: {{...}}}}")
        return EvalSpec(doc["dataset"], dict(doc.get("args") or {}), batch_size, limit)
    args = {"path": str(eval_data)}
    if eval_images is not None:
        args["image_root"] = str(eval_images)
    return EvalSpec(eval_dataset, args, batch_size, limit)


class SweepProgress:
    """Variants done of all, the ones running, and the time left (from this run's finished variants); a line
    per finished variant, and a live bar on a terminal."""

    def __init__(self, total: int, jobs: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[left]}"), console=self.console,
                                 transient=True)
        self.task = self.progress.add_task("sweep", total=total, left="")
        self.total, self.jobs, self.done, self.times = total, jobs, 0, []
        self.running: dict[str, float] = {}

    def __enter__(self) -> "SweepProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def left(self) -> str:
        if not self.times:
            return "time left: after the first variant"
        mean = sum(self.times) / len(self.times)
        return f"about {max(0.0, mean * (self.total - self.done) / self.jobs) / 60:.1f} min left"

    def __call__(self, what: str, variant: Any, info: dict[str, Any] | None) -> None:
        if what == "start":
            self.running[variant.name] = time.time()
            self.progress.update(self.task, description=f"running: {', '.join(self.running)}", left=self.left())
            return
        self.done += 1
        if what == "done":
            self.times.append(time.time() - self.running.pop(variant.name, time.time()))
        info = info or {}
        head = f"[{self.done}/{self.total}] {variant.name}"
        earlier = " (earlier run)" if what == "earlier" else ""
        if info.get("status") == "ok":
            line = f"{head}: accuracy {info['accuracy']:.3f}{earlier}"
        else:
            line = f"{head}: FAILED{earlier}: {info.get('error', '?')}"
        if what == "done":
            line += f" — {self.left()}"
        self.progress.console.print(line, markup=False, highlight=False)
        self.progress.update(self.task, advance=1, left=self.left(),
                             description=f"running: {', '.join(self.running)}" if self.running else "sweep")


@app.command()
@friendly
def sweep(recipe: str = typer.Argument(..., help="Recipe YAML file or recipe preset name."),
          vary: Optional[List[str]] = typer.Option(None, "--vary", help="An axis: KEY=V1,V2 (any --set key; repeat "
                                                                        "for several axes, crossed)."),
          zip_: bool = typer.Option(False, "--zip", help="Take the axes together (the i-th value of each) instead "
                                                         "of crossing them; they need as many values each."),
          names: Optional[str] = typer.Option(None, "--names", help="Names of the groups, in order, comma-"
                                              "separated (default: their overrides, 'lr=1e-3 name=clip')."),
          seeds: str = typer.Option("0", "--seeds", help="Seeds, e.g. 0,1,2: every group trains once per seed."),
          output: Path = typer.Option(..., "--output", "-o", help="Sweep folder (rerun the command to resume)."),
          eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Held-out short-answer file."),
          eval_dataset: str = typer.Option("llava-json", "--eval-dataset", help="Dataset component reading "
                                                                                "--eval-data."),
          eval_images: Optional[Path] = typer.Option(None, "--eval-images", help="Image root of --eval-data "
                                                                                 "(default: its folder)."),
          eval_: Optional[str] = typer.Option(None, "--eval", help="Held-out set as a dataset component: "
                                                                   "'{dataset: NAME, args: {...}}'."),
          eval_batch_size: int = typer.Option(32, "--eval-batch-size", min=1, max=1 << 16),
          eval_limit: Optional[int] = typer.Option(None, "--eval-limit", min=1, help="Evaluate the first N only."),
          baseline: Optional[str] = typer.Option(None, "--baseline", help="The group others are compared with: "
                                                 "its name ('lr=0.001'), its number, or a part of its name "
                                                 "(default: the first)."),
          set_: Optional[List[str]] = typer.Option(None, "--set", help="Overrides for every variant."),
          jobs: int = typer.Option(1, "--jobs", min=1, max=256, help="Variants at a time (one GPU each with "
                                                                     "--gpus; on a CPU they share its cores)."),
          gpus: Optional[str] = typer.Option(None, "--gpus", help="GPUs to use, e.g. 0,1,2,3 (default: none)."),
          retry_failed: bool = typer.Option(False, "--retry-failed", help="Rerun variants that failed before."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Check every variant and print the plan; train "
                                                                "nothing."),
          ) -> None:
    """Train and evaluate a grid of variants of a recipe over seeds; tabulate mean ± sd and the difference to
    a baseline with a 95 % interval (results.md/json/csv and sweep.png in the output folder)."""
    from vlmkit.sweep.grid import parse_axis, parse_seeds
    from vlmkit.sweep.plan import make_plan

    from .model_config import with_default_connector

    axes = [parse_axis(v) for v in vary or []]
    plan = make_plan(recipe, axes, parse_seeds(seeds),
                     eval_spec(eval_data, eval_dataset, eval_images, eval_, eval_batch_size, eval_limit),
                     sets=list(set_ or []), baseline=baseline, zipped=zip_,
                     names=[n.strip() for n in names.split(",")] if names else None,
                     prepare=lambda rec: with_default_connector(rec.model))
    for w in plan.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"{len(plan.groups)} group(s) x {len(plan.seeds)} seed(s) = {len(plan.variants)} variant(s); "
               f"baseline: {plan.baseline}", err=True)
    if dry_run:
        for g in plan.groups:
            typer.echo(f"{g.index + 1:>3}  {g.name}" + ("  (baseline)" if g.name == plan.baseline else ""))
        return
    from vlmkit.sweep.plots import plot_sweep
    from vlmkit.sweep.results_table import write_tables
    from vlmkit.sweep.runner import run_sweep

    gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
    with SweepProgress(len(plan.variants), jobs) as progress:
        results = run_sweep(plan, output, jobs=jobs, gpus=gpu_list, retry_failed=retry_failed, events=progress)
    rows, markdown = write_tables(output, plan, results)
    plot_sweep(rows, results, output / "sweep.png", title=f"sweep of {recipe}")
    typer.echo(markdown)
    typer.echo(f"results: {output / 'results.md'} (.json, .csv); picture: {output / 'sweep.png'}", err=True)
    if any(r.failures for r in rows):
        raise typer.Exit(1)
