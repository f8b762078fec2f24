"""Run a sweep's variants, each in its own process, and keep what finished.

Layout::

    OUT/sweep.json                      the spec (grid, seeds, evaluation, baseline)
    OUT/variants/NNN-<group>-seed<S>/   variant.json, log.txt, run/ (the recipe's output), result.json
    OUT/results.md|json|csv, OUT/sweep.png

A variant is done when its ``result.json`` exists (written whole, by rename), failed ones included: a resumed
sweep reruns neither (``retry_failed`` reruns the failed). A killed sweep loses at most the running variants,
and not even those: their training resumes from its last checkpoint. One sweep runs in a folder at a time.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vlmkit.errors import ConfigError
from vlmkit.output_folder import prepare_output_folder

from .grid import Variant
from .plan import SweepPlan, check_same_sweep, write_json_atomic, write_spec
from .worker import LOG_FILE, RESULT_FILE, VARIANT_FILE

VARIANTS_DIR = "variants"


@dataclass
class Slot:
    """Where a variant runs: environment additions (one GPU each, or a share of the CPU threads)."""

    env: dict[str, str] = field(default_factory=dict)
    label: str = "cpu"


def slots(jobs: int, gpus: list[str] | None) -> list[Slot]:
    """``jobs`` places to run. With GPUs, one each (``CUDA_VISIBLE_DEVICES``); on a CPU the cores are shared."""
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: run at least one variant at a time")
    if gpus:
        if jobs > len(gpus):
            raise ConfigError(f"--jobs {jobs} with {len(gpus)} GPU(s) ({','.join(gpus)}): one GPU per variant")
        return [Slot({"CUDA_VISIBLE_DEVICES": g}, f"gpu {g}") for g in gpus[:jobs]]
    if jobs == 1:
        return [Slot()]
    per = max(1, (os.cpu_count() or 1) // jobs)
    return [Slot({"VLMKIT_THREADS": str(per), "CUDA_VISIBLE_DEVICES": ""}, f"cpu {i}") for i in range(jobs)]


def read_result(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None


def collect_results(out: Path, plan: SweepPlan) -> list[dict[str, Any]]:
    found = []
    for v in plan.variants:
        r = read_result(out / VARIANTS_DIR / v.folder)
        if r is not None:
            found.append(r)
    return found


class SweepLock:
    """One sweep per folder: a second one is refused (a killed sweep's lock goes with its process)."""

    def __init__(self, out: Path):
        self.path = out / ".sweep.lock"
        self.file: Any = None

    def __enter__(self) -> "SweepLock":
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise ConfigError(f"{self.path.parent}: a sweep is running there already (pid {holder}); wait for it, "
                              "or choose another --output") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


Events = Callable[[str, Variant, dict[str, Any] | None], None]


def prepare_variant(out: Path, plan: SweepPlan, v: Variant) -> Path:
    folder = out / VARIANTS_DIR / v.folder
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"name": v.name, "group": v.group.name, "seed": v.seed, "recipe": plan.variant_recipe(v, folder),
           "evaluation": plan.evaluation.as_dict()}
    write_json_atomic(folder / VARIANT_FILE, doc)
    return folder


def launch(folder: Path, slot: Slot, cwd: str) -> subprocess.Popen:
    env = {**os.environ, **slot.env}
    with open(folder / LOG_FILE, "ab") as log:  # the child keeps its own copy; ours closes (no leak per variant)
        return subprocess.Popen([sys.executable, "-m", "vlmkit.sweep.worker", str(folder), "--parent",
                                 str(os.getpid())], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def log_tail(folder: Path, lines: int = 3) -> str:
    try:
        text = (folder / LOG_FILE).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def run_sweep(plan: SweepPlan, out: Path, *, jobs: int = 1, gpus: list[str] | None = None,
              retry_failed: bool = False, events: Events | None = None) -> list[dict[str, Any]]:
    """Run every variant not yet done; returns all results (earlier runs' included), in grid order."""
    places = slots(jobs, gpus)
    if out.is_dir():
        check_same_sweep(out, plan)  # refused before the folder is touched; again under the lock, race-free
    out = prepare_output_folder(out, "--output")
    with SweepLock(out):
        check_same_sweep(out, plan)
        write_spec(out, plan)
        todo = []
        for v in plan.variants:
            r = read_result(out / VARIANTS_DIR / v.folder)
            if r is None or (retry_failed and r.get("status") != "ok"):
                todo.append(v)
            elif events:
                events("earlier", v, r)
        running: dict[int, tuple[subprocess.Popen, Variant, Path]] = {}
        free = list(range(len(places)))
        try:
            while todo or running:
                while todo and free:
                    v = todo.pop(0)
                    folder = prepare_variant(out, plan, v)
                    (folder / RESULT_FILE).unlink(missing_ok=True)
                    slot = free.pop(0)
                    running[slot] = (launch(folder, places[slot], plan.cwd), v, folder)
                    if events:
                        events("start", v, {"slot": places[slot].label})
                time.sleep(0.2)
                for slot, (proc, v, folder) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    del running[slot]
                    free.append(slot)
                    r = read_result(folder)
                    if r is None:  # the process died without a word (killed, out of memory, a crash)
                        r = {"name": v.name, "group": v.group.name, "seed": v.seed, "status": "failed",
                             "error": f"the variant's process exited with {proc.returncode} and no result; "
                                      f"last lines of {folder / LOG_FILE}: {log_tail(folder)}"}
                        write_json_atomic(folder / RESULT_FILE, r)
                    if events:
                        events("done", v, r)
        finally:
            for proc, _, _ in running.values():  # interrupted: stop the children (a resume continues them)
                proc.terminate()
            for proc, _, _ in running.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        return collect_results(out, plan)

