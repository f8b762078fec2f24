"""Which periodic checkpoint a resumed run may trust.

The Trainer writes a ``checkpoint-N`` folder file by file (weights, optimizer, scheduler, RNG state,
trainer state), so a process killed mid-save leaves a folder that looks like a checkpoint but is not
one. After every file of a save is written, ``vlmkit-complete.json`` is written last (atomically): it
lists each file with its size. Resuming takes the newest folder whose manifest is there and whose
files match it, says which newer folders it passed over and why, and refuses a checkpoint whose
listed files were later removed or cut short (unless the user asks for weights only).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from vlmkit.errors import CheckpointError
from vlmkit.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, write_atomic

log = logging.getLogger(__name__)

MANIFEST = "vlmkit-complete.json"
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
#: what a weights-only resume still needs: the weights, their config, and the step count
WEIGHTS_ONLY = (WEIGHTS_FILE, CONFIG_FILE, "trainer_state.json")


def write_manifest(folder: str | Path, step: int) -> None:
    """Record every file of a finished save (written last: its presence means the save completed)."""
    root = Path(folder)
    files = {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
             if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}
    write_atomic(root / MANIFEST, json.dumps({"step": step, "files": files}, indent=1))


def checkpoints(stage_dir: str | Path) -> list[tuple[int, Path]]:
    """``checkpoint-N`` folders of a stage, newest first."""
    d = Path(stage_dir)
    found = [(int(m.group(1)), p) for p in d.iterdir() if p.is_dir() and (m := CHECKPOINT_DIR.match(p.name))] \
        if d.is_dir() else []
    return sorted(found, reverse=True)


def damage(folder: Path, weights_only: bool = False) -> list[str]:
    """What is wrong with a checkpoint that has a manifest: listed files missing or of another size."""
    doc = json.loads((folder / MANIFEST).read_text())
    problems = []
    for name, size in doc["files"].items():
        if weights_only and name not in WEIGHTS_ONLY:
            continue
        f = folder / name
        if not f.is_file():
            problems.append(f"{f}: missing")
        elif f.stat().st_size != size:
            problems.append(f"{f}: {f.stat().st_size} bytes, saved as {size} (cut short or replaced)")
    return problems


def find_resume_checkpoint(stage_dir: str | Path, weights_only: bool = False) -> str | None:
    """The newest complete checkpoint of a stage (None: start the stage from its beginning)."""
    passed = []
    for _, folder in checkpoints(stage_dir):
        if not (folder / MANIFEST).is_file():
            passed.append(f"{folder.name} (no {MANIFEST}: its save was interrupted)")
            continue
        try:
            problems = damage(folder, weights_only)
        except (OSError, ValueError, KeyError) as exc:
            passed.append(f"{folder.name} (unreadable {MANIFEST}: {exc})")
            continue
        if problems:
            hint = ("" if weights_only else "; to continue from its weights with a fresh optimizer and schedule, "
                    "pass --resume-weights-only")
            raise CheckpointError(f"cannot resume from {folder}: {problems[0]}"
                                  + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                                  + f"; restore the file, or delete the folder to resume from an earlier one{hint}")
        if passed:
            log.warning("resuming from %s; passed over %s", folder.name, ", ".join(passed))
        else:
            log.info("resuming from %s", folder.name)
        return str(folder)
    if passed:
        log.warning("no complete checkpoint in %s (passed over %s); the stage starts from its beginning",
                    stage_dir, ", ".join(passed))
    return None


def rotate(stage_dir: str | Path, keep: int | None) -> None:
    """Keep the ``keep`` newest complete checkpoints; drop older ones and older half-written folders."""
    if not keep:
        return
    complete = [(step, f) for step, f in checkpoints(stage_dir) if (f / MANIFEST).is_file()]
    if len(complete) < keep:
        return
    oldest_kept = complete[keep - 1][0]
    for step, folder in checkpoints(stage_dir):
        if step < oldest_kept:
            (folder / MANIFEST).unlink(missing_ok=True)  # first: a half-deleted folder is then never trusted
            shutil.rmtree(folder, ignore_errors=True)
