"""Which periodic checkpoint a resumed run may trust.

The Trainer writes a ``checkpoint-N`` folder file by file (weights, optimizer, scheduler, RNG state,
trainer state), so a process killed mid-save leaves a folder that looks like a checkpoint but is not
one. After every file of a save is written, ``vlmkit-complete.json`` is written last (atomically): it
lists each file with its size and SHA-256. Resuming takes the newest folder whose manifest is there and
whose files match it byte for byte, and says which newer folders it passed over and why: a half-written
save, a file removed, cut short, or changed at the same size. When no checkpoint verifies, resuming stops
with the problems named (``--resume-weights-only`` needs only the weights, their config and the step).
Manifests of vlmkit before 0.2 record sizes only: such a checkpoint is passed over unless the caller allows
unverified checkpoints (``--allow-unverified``).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from vlmkit.errors import CheckpointError
from vlmkit.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, write_atomic
from vlmkit.model.integrity import allow_unverified, file_sha256

log = logging.getLogger(__name__)

MANIFEST = "vlmkit-complete.json"
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
#: what a weights-only resume still needs: the weights, their config, and the step count
WEIGHTS_ONLY = (WEIGHTS_FILE, CONFIG_FILE, "trainer_state.json")


def write_manifest(folder: str | Path, step: int) -> None:
    """Record every file of a finished save (written last: its presence means the save completed)."""
    root = Path(folder)
    files = {str(p.relative_to(root)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}
    write_atomic(root / MANIFEST, json.dumps({"step": step, "files": files}, indent=1))


def checkpoints(stage_dir: str | Path) -> list[tuple[int, Path]]:
    """``checkpoint-N`` folders of a stage, newest first."""
    d = Path(stage_dir)
    found = [(int(m.group(1)), p) for p in d.iterdir() if p.is_dir() and (m := CHECKPOINT_DIR.match(p.name))] \
        if d.is_dir() else []
    return sorted(found, reverse=True)


def damage(folder: Path, weights_only: bool = False, allow: bool | None = None) -> list[str]:
    """What is wrong with a checkpoint that has a manifest: listed files missing, of another size, or of
    other content; a manifest without digests, unless unverified checkpoints are allowed."""
    doc = json.loads((folder / MANIFEST).read_text())
    problems = []
    for name, entry in doc["files"].items():
        if weights_only and name not in WEIGHTS_ONLY:
            continue
        f = folder / name
        size, digest = (entry, None) if isinstance(entry, int) else (entry["size"], entry["sha256"])
        if not f.is_file():
            problems.append(f"{f}: missing")
        elif f.stat().st_size != size:
            problems.append(f"{f}: {f.stat().st_size} bytes, saved as {size} (cut short or replaced)")
        elif digest is None:
            if not allow_unverified(allow):
                problems.append(f"{folder / MANIFEST}: records sizes only (written by vlmkit before 0.2), so the "
                                "files cannot be verified (--allow-unverified resumes from it anyway)")
                break
        elif file_sha256(f) != digest:
            problems.append(f"{f}: changed since it was saved (same size, other content: corrupt or edited)")
    return problems


def find_resume_checkpoint(stage_dir: str | Path, weights_only: bool = False,
                           allow: bool | None = None) -> str | None:
    """The newest complete checkpoint of a stage whose files verify (None: start the stage from its beginning)."""
    passed, damaged = [], []
    for _, folder in checkpoints(stage_dir):
        if not (folder / MANIFEST).is_file():
            passed.append(f"{folder.name} (no {MANIFEST}: its save was interrupted)")
            continue
        try:
            problems = damage(folder, weights_only, allow)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems = [f"{folder / MANIFEST}: unreadable ({type(exc).__name__}: {exc})"]
        if problems:
            more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
            passed.append(f"{folder.name} ({problems[0]}{more})")
            damaged.append(problems[0] + more)
            continue
        if passed:
            log.warning("resuming from %s; passed over %s", folder.name, "; ".join(passed))
        else:
            log.info("resuming from %s", folder.name)
        return str(folder)
    if damaged:
        hint = ("" if weights_only else "; to continue from the weights of the newest with a fresh optimizer and "
                "schedule, pass --resume-weights-only")
        raise CheckpointError(f"cannot resume from {stage_dir}: no checkpoint verifies: {'; '.join(damaged)}; restore "
                              f"the files, or delete the folders to start the stage again{hint}")
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
