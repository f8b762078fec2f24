"""A sweep's plan: its spec (recipe, axes, seeds, evaluation, baseline), checked whole before anything trains.

Every group's recipe is parsed with its overrides and its model built on the meta device, so an unknown key, a
value of the wrong type or an incompatible combination is refused at once, naming the variant. The spec is
written to ``OUT/sweep.json``; running the same command again resumes it, and a different grid in the same
folder is refused (its finished results would not be comparable).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vlmkit.errors import ConfigError, VlmkitError

from .grid import Axis, Group, Variant, expand

SPEC_FILE = "sweep.json"
SPEC_FORMAT = 1


@dataclass
class EvalSpec:
    """What every variant is evaluated on: a registered dataset and its arguments (``path`` for a file)."""

    dataset: str
    args: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    limit: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "args": self.args, "batch_size": self.batch_size, "limit": self.limit}


@dataclass
class SweepPlan:
    recipe: str
    recipe_digest: str
    sets: list[str]
    axes: list[Axis]
    zipped: bool
    seeds: tuple[int, ...]
    evaluation: EvalSpec
    baseline: str
    cwd: str
    groups: list[Group]
    variants: list[Variant]
    #: the resolved recipe document of each group (model built and checked), seed and output set per variant
    recipes: dict[int, dict[str, Any]]
    names: list[str] | None = None
    warnings: list[str] = field(default_factory=list)
    #: the held-out set's majority-answer accuracy per category and overall, read when the plan opened it
    chance: dict[str, float] = field(default_factory=dict)

    def grid(self) -> dict[str, Any]:
        """What makes two runs the same sweep (a resumed run must match it)."""
        return {"recipe": self.recipe, "recipe_digest": self.recipe_digest, "sets": self.sets,
                "axes": [{"key": a.key, "values": list(a.values)} for a in self.axes], "zip": self.zipped, "names": self.names,
                "seeds": list(self.seeds),
                "evaluation": self.evaluation.as_dict()}

    def variant_recipe(self, variant: Variant, folder: Path) -> dict[str, Any]:
        doc = json.loads(json.dumps(self.recipes[variant.group.index]))
        doc["seed"] = variant.seed
        doc["output_dir"] = str(folder / "run")
        return doc


def recipe_digest(ref: str) -> str:
    """SHA-256 of the recipe file (a preset name stands for itself): an edited recipe is another sweep."""
    p = Path(ref)
    data = p.read_bytes() if p.is_file() else ref.encode()
    return hashlib.sha256(data).hexdigest()


def pick_baseline(groups: list[Group], baseline: str | None) -> str:
    if baseline is None:
        return groups[0].name
    by_number = {str(g.index + 1): g.name for g in groups}
    names = [g.name for g in groups]
    if baseline in names:
        return baseline
    if baseline in by_number:
        return by_number[baseline]
    matches = [n for n in names if all(part in n.split(" ") for part in baseline.split())]
    if len(matches) == 1:
        return matches[0]
    raise ConfigError(f"--baseline {baseline!r}: no single group is named so; the groups are "
                      + "; ".join(f"{i + 1}: {n}" for i, n in enumerate(names[:20])))


def make_plan(recipe: str, axes: list[Axis], seeds: tuple[int, ...], evaluation: EvalSpec, *,
              sets: list[str] | None = None, baseline: str | None = None, zipped: bool = False,
              names: list[str] | None = None,
              prepare: Callable[[Any], Any] | None = None) -> SweepPlan:
    """Expand and check the grid. ``prepare`` completes a parsed recipe the way the caller's ``train`` would
    (the CLI adds its default connector)."""
    from vlmkit.model.assembly import build_model
    from vlmkit.training.recipe import load_recipe

    sets = list(sets or [])
    groups, variants = expand(axes, seeds, zipped, names)
    recipes: dict[int, dict[str, Any]] = {}
    warnings: list[str] = []
    for g in groups:
        try:
            rec = load_recipe(recipe, overrides=[*sets, *g.sets()])
            if prepare is not None:
                prepare(rec)
            model = build_model(rec.model, meta=True)
        except VlmkitError as exc:
            raise ConfigError(f"variant '{g.name}' (group {g.index + 1} of {len(groups)}): {exc}; nothing was "
                              "trained") from None
        try:
            warnings += frozen_objective_warnings(g.name, model, rec.stages)
        except VlmkitError as exc:
            raise ConfigError(f"variant '{g.name}' (group {g.index + 1} of {len(groups)}): {exc}; nothing was "
                              "trained") from None
        for st in rec.stages:
            if st.seed is not None and len(seeds) > 1:
                warnings.append(f"stage '{st.name}' sets its own seed ({st.seed}): --seeds then varies the initial "
                                "weights only, not the data order")
        recipes[g.index] = rec.to_dict()
    from vlmkit.inference.evaluation import majority_answer_rates

    chance = majority_answer_rates(check_evaluation(evaluation), evaluation.limit)
    return SweepPlan(recipe=recipe, recipe_digest=recipe_digest(recipe), sets=sets, axes=axes, zipped=zipped,
                     seeds=seeds, evaluation=evaluation, baseline=pick_baseline(groups, baseline), cwd=os.getcwd(),
                     groups=groups, variants=variants, recipes=recipes, names=names,
                     warnings=list(dict.fromkeys(warnings)), chance=chance)


def frozen_objective_warnings(group: str, model: Any, stages: list[Any]) -> list[str]:
    """The training runner's warning about an objective that weighs in the loss with none of its own
    parameters training (a void comparison: its loss cannot fall), said before the first variant trains.
    Raises the selectors' ``ConfigError`` for a ``trainable`` the model lacks."""
    from vlmkit.model.selectors import set_trainable
    from vlmkit.training.runner import frozen_objectives

    out = []
    for st in stages:
        set_trainable(model, st.trainable)  # a selector the model lacks is refused here, before anything trains
        out += [f"variant '{group}', stage '{st.name}': objective '{name}' counts in the loss but none of its own "
                f"parameters train; add 'objective.{name}' to the stage's trainable (or set its weight to 0) "
                "unless that is the intent" for name in frozen_objectives(model)]
    return out


def open_eval_dataset(evaluation: EvalSpec) -> Any:
    from vlmkit.plugins.registry import registry

    args = dict(evaluation.args)
    if "path" in args and "image_root" not in args:
        args["image_root"] = str(Path(args["path"]).parent)
    return registry.load("dataset", evaluation.dataset)(**args)


def check_evaluation(evaluation: EvalSpec) -> Any:
    """The held-out set opens and holds records, before anything trains. Returns it, opened."""
    from vlmkit.errors import DataError

    try:
        ds = open_eval_dataset(evaluation)
    except TypeError as exc:
        raise ConfigError(f"--eval: dataset '{evaluation.dataset}' does not take these arguments "
                          f"({', '.join(evaluation.args) or 'none'}): {exc}") from None
    except VlmkitError as exc:
        raise ConfigError(f"--eval: {exc}") from None
    if len(ds) == 0:
        raise DataError("the held-out set has no records", file=str(evaluation.args.get("path", evaluation.dataset)),
                        kind="empty")
    return ds


def check_same_sweep(out: Path, plan: SweepPlan) -> None:
    """A folder holds one sweep: resuming it needs the same grid."""
    spec = out / SPEC_FILE
    if not spec.is_file():
        return
    try:
        old = json.loads(spec.read_text())["grid"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{spec}: not a sweep spec ({exc}); choose another --output") from None
    new = plan.grid()
    differs = [k for k in new if old.get(k) != new[k]]
    if differs:
        raise ConfigError(f"{out} holds another sweep (its {', '.join(differs)} differ from this command's); "
                          "rerun the same command to resume it, or choose another --output")


def write_spec(out: Path, plan: SweepPlan) -> None:
    doc = {"format": SPEC_FORMAT, "grid": plan.grid(), "baseline": plan.baseline, "cwd": plan.cwd,
           "groups": [{"index": g.index, "name": g.name, "overrides": dict(g.overrides)} for g in plan.groups],
           "variants": [{"name": v.name, "folder": v.folder, "group": v.group.index, "seed": v.seed}
                        for v in plan.variants]}
    write_json_atomic(out / SPEC_FILE, doc)


def write_json_atomic(path: Path, doc: Any) -> None:
    """Whole or not at all (``checkpoint.write_atomic``): a kill mid-write leaves the previous file or none."""
    from vlmkit.model.checkpoint import write_atomic

    write_atomic(path, json.dumps(doc, indent=1))
