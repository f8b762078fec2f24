"""A sweep's results as a table: per group, mean ± sd over seeds of the accuracy (overall and per category),
and the paired difference to the baseline group with its 95 % interval. Written as Markdown, JSON and CSV."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .plan import SweepPlan, write_json_atomic
from .statistics import Difference, Summary, paired_difference, summarise


@dataclass
class GroupRow:
    name: str
    seeds: int
    ok: int
    accuracy: Summary
    categories: dict[str, Summary]
    versus_baseline: Difference | None
    per_seed: dict[int, float]
    failures: list[str]
    #: per category, the paired difference to the baseline (empty for the baseline itself)
    categories_versus_baseline: dict[str, Difference] = field(default_factory=dict)
    #: per category, each seed's accuracy (what the summaries and differences are computed from)
    categories_per_seed: dict[str, dict[int, float]] = field(default_factory=dict)


def table_rows(plan: SweepPlan, results: list[dict[str, Any]]) -> list[GroupRow]:
    by_group: dict[str, list[dict[str, Any]]] = {g.name: [] for g in plan.groups}
    for r in results:
        by_group.setdefault(r["group"], []).append(r)
    per_seed = {name: {int(r["seed"]): float(r["accuracy"]) for r in rs if r.get("status") == "ok"}
                for name, rs in by_group.items()}
    base = per_seed.get(plan.baseline, {})

    def by_seed(name: str, cat: str) -> dict[int, float]:
        return {int(r["seed"]): float(r["categories"][cat]) for r in by_group.get(name, [])
                if r.get("status") == "ok" and cat in r.get("categories", {})}

    rows = []
    for g in plan.groups:
        rs = by_group[g.name]
        ok = [r for r in rs if r.get("status") == "ok"]
        cats = sorted({c for r in ok for c in r.get("categories", {})})
        rows.append(GroupRow(
            name=g.name, seeds=len(plan.seeds), ok=len(ok), accuracy=summarise([float(r["accuracy"]) for r in ok]),
            categories={c: summarise([float(r["categories"][c]) for r in ok if c in r["categories"]]) for c in cats},
            versus_baseline=None if g.name == plan.baseline else paired_difference(per_seed[g.name], base),
            per_seed=per_seed[g.name],
            failures=[f"seed {r['seed']}: {r.get('error', 'failed')}" for r in rs if r.get("status") != "ok"],
            categories_versus_baseline={} if g.name == plan.baseline else {
                c: paired_difference(by_seed(g.name, c), by_seed(plan.baseline, c)) for c in cats},
            categories_per_seed={c: by_seed(g.name, c) for c in cats}))
    return rows


def _pm(s: Summary) -> str:
    return "—" if s.n == 0 else f"{s.mean:.3f} ± {s.sd:.3f}" if s.n > 1 else f"{s.mean:.3f}"


def _diff(d: Difference | None) -> str:
    if d is None:
        return "baseline"
    if d.n == 0:
        return "—"
    if math.isnan(d.low):
        return f"{d.mean:+.3f} (one seed: no interval)"
    return f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"


def categories_of(rows: list[GroupRow]) -> list[str]:
    return sorted({c for r in rows for c in r.categories})


def to_markdown(plan: SweepPlan, rows: list[GroupRow], chance: dict[str, float] | None = None) -> str:
    cats = categories_of(rows)
    head = ["group", "seeds ok", "accuracy (mean ± sd)", "vs baseline [95% CI]", *cats]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = f"**{r.name}**" if r.name == plan.baseline else r.name
        ok = f"{r.ok}/{r.seeds}" + (" (failed: see below)" if r.failures else "")
        lines.append("| " + " | ".join([name, ok, _pm(r.accuracy), _diff(r.versus_baseline),
                                        *[_pm(r.categories.get(c, summarise([]))) for c in cats]]) + " |")
    if chance:
        lines.append("| chance (majority answer) | | " + f"{chance.get('all', math.nan):.3f} | | "
                     + " | ".join(f"{chance[c]:.3f}" if c in chance else "—" for c in cats) + " |")
    notes = [f"- {r.name}, {f}" for r in rows for f in r.failures]
    text = "\n".join(lines) + "\n"
    others = [r for r in rows if r.categories_versus_baseline]
    if others and cats:
        text += (f"\nDifference to **{plan.baseline}** per category [95% CI]:\n\n| group | "
                 + " | ".join(cats) + " |\n|" + "---|" * (len(cats) + 1) + "\n")
        for r in others:
            text += f"| {r.name} | " + " | ".join(_diff(r.categories_versus_baseline.get(c)) if c in
                                                  r.categories_versus_baseline else "—" for c in cats) + " |\n"
    text += (f"\nBaseline: **{plan.baseline}**. Differences are paired by seed (seeds {', '.join(map(str, plan.seeds))})"
             "; the interval is Student's t at 95 %.\n")
    if notes:
        text += "\nFailed variants:\n" + "\n".join(notes) + "\n"
    return text


def to_json(plan: SweepPlan, rows: list[GroupRow], chance: dict[str, float] | None = None) -> dict[str, Any]:
    def num(x: float) -> float | None:
        return None if math.isnan(x) else round(x, 6)

    return {"baseline": plan.baseline, "seeds": list(plan.seeds), "chance_majority_answer": chance, "groups": [{
        "name": r.name, "seeds_ok": r.ok, "seeds": r.seeds, "accuracy_mean": num(r.accuracy.mean),
        "accuracy_sd": num(r.accuracy.sd), "per_seed": {str(k): v for k, v in sorted(r.per_seed.items())},
        "categories": {c: {"mean": num(s.mean), "sd": num(s.sd), "per_seed": {
            str(k): v for k, v in sorted(r.categories_per_seed.get(c, {}).items())}, **({"versus_baseline": {
            "mean": num(r.categories_versus_baseline[c].mean),
            "ci95": [num(r.categories_versus_baseline[c].low), num(r.categories_versus_baseline[c].high)]}}
            if c in r.categories_versus_baseline else {})} for c, s in r.categories.items()},
        "versus_baseline": None if r.versus_baseline is None else {
            "mean": num(r.versus_baseline.mean), "ci95": [num(r.versus_baseline.low), num(r.versus_baseline.high)],
            "pairs": r.versus_baseline.n},
        "failures": r.failures} for r in rows]}


def to_csv(rows: list[GroupRow]) -> str:
    cats = categories_of(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["group", "seeds_ok", "seeds", "accuracy_mean", "accuracy_sd", "diff_mean", "diff_ci_low",
                "diff_ci_high", *[f"{c}_mean" for c in cats], *[f"{c}_sd" for c in cats], "failures"])
    for r in rows:
        d = r.versus_baseline
        w.writerow([r.name, r.ok, r.seeds, r.accuracy.mean, r.accuracy.sd, "" if d is None else d.mean,
                    "" if d is None else d.low, "" if d is None else d.high,
                    *[r.categories[c].mean if c in r.categories else "" for c in cats],
                    *[r.categories[c].sd if c in r.categories else "" for c in cats], " / ".join(r.failures)])
    return buf.getvalue()


def chance_levels(plan: SweepPlan) -> dict[str, float]:
    """The held-out set's majority-answer accuracy, per category and overall (read by the plan when it
    checked the set)."""
    return plan.chance


def write_tables(out: Path, plan: SweepPlan, results: list[dict[str, Any]]) -> tuple[list[GroupRow], str]:
    """results.md/json/csv; returns the rows and the Markdown."""
    rows = table_rows(plan, results)
    chance = chance_levels(plan)
    markdown = to_markdown(plan, rows, chance)
    (out / "results.md").write_text(markdown)
    write_json_atomic(out / "results.json", to_json(plan, rows, chance))
    (out / "results.csv").write_text(to_csv(rows))
    return rows, markdown
