"""Every ``vlmkit.*`` name that any committed version of the docs showed in code: what plugins were told to use.

Reads every version of every Markdown file under ``docs/`` and of ``README.md`` in the git history (``git log --all``), takes the
fenced code blocks and the inline code spans, and collects the dotted names that start with ``vlmkit.``.
Writes ``tests/fixtures/api_history/documented_names.json``, which ``tests/test_plugin_api.py`` imports
name by name. Run it after changing the docs (the test says so when the current docs name something new):

    python scripts/documented_names.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "api_history" / "documented_names.json"
NAME = re.compile(r"\bvlmkit(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
DOCS = ("docs", "README.md")
FENCE = re.compile(r"```.*?```", re.DOTALL)
INLINE = re.compile(r"`[^`\n]+`")
#: dotted names in the docs that are not Python import paths, and what they are
NOT_IMPORT_PATHS = {
    "vlmkit.yaml": "the checkpoint's config file",
    **{f"vlmkit.{g}": "an entry-point group" for g in (
        "encoders", "connectors", "objectives", "datasets", "transforms", "llms", "samplers", "templates", "presets",
        "recipes")},
}


def names_in(markdown: str) -> set[str]:
    code = FENCE.findall(markdown) + INLINE.findall(FENCE.sub("", markdown))
    return {m.rstrip(".") for block in code for m in NAME.findall(block)}


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def history_names() -> tuple[set[str], list[str]]:
    """(names, commits read): every version of every docs/*.md file in the history."""
    commits = _git("log", "--all", "--format=%H", "--", *DOCS).split()
    names: set[str] = set()
    for commit in commits:
        for path in _git("ls-tree", "-r", "--name-only", commit, "--", *DOCS).split():
            if path.endswith(".md"):
                names |= names_in(_git("show", f"{commit}:{path}"))
    return names, commits


def current_names() -> set[str]:
    return set().union(*(names_in(p.read_text()) for p in [*(ROOT / "docs").rglob("*.md"), ROOT / "README.md"]))


def main() -> None:
    names, commits = history_names()
    names |= current_names()
    record = {"about": __doc__.splitlines()[0], "commits_read": len(commits), "oldest": commits[-1] if commits else None,
              "not_import_paths": NOT_IMPORT_PATHS, "names": sorted(n for n in names if n not in NOT_IMPORT_PATHS)}
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {len(record['names'])} names from {len(commits)} commits", file=sys.stderr)


if __name__ == "__main__":
    main()
