"""The plugin API keeps its promises: every ``vlmkit.*`` name any version of the docs showed still imports, the
declared stable list (``vlmkit.plugin_api``) resolves, and a moved path warns with its removal version.

The frozen 0.1-era plugin itself (``tests/legacy/plugin-0.1``) runs its own suite in ``nox -s legacy_plugin``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORD = json.loads((ROOT / "tests" / "fixtures" / "api_history" / "documented_names.json").read_text())
sys.path.insert(0, str(ROOT / "scripts"))
import documented_names  # noqa: E402


def resolve(dotted: str) -> object:
    """Import the longest importable module prefix of ``dotted`` and walk the rest as attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not exc.name.startswith("vlmkit") and i == len(parts):
                # the module exists but needs an optional package (vlmkit.integrations.lmms_eval needs lmms-eval)
                if importlib.util.find_spec(name) is not None:
                    return name
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("name", RECORD["names"])
def test_every_name_the_docs_ever_showed_still_resolves(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert resolve(name) is not None


def test_the_record_holds_every_name_the_current_docs_show():
    new = documented_names.current_names() - set(RECORD["names"]) - set(RECORD["not_import_paths"])
    assert not new, f"docs name {sorted(new)}: run `python scripts/documented_names.py` and commit the record"


def test_the_record_holds_every_name_of_the_docs_history():
    """Where the clone has its history (CI's does), nothing a past guide showed is missing from the record."""
    try:
        names, commits = documented_names.history_names()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no git history here ({type(exc).__name__}); the record was made from {RECORD['commits_read']} "
                    "commits")
    if RECORD["oldest"] not in commits:
        pytest.skip("a shallow clone: the record's oldest commit is not in it")
    missing = names - set(RECORD["names"]) - set(RECORD["not_import_paths"])
    assert not missing, f"run `python scripts/documented_names.py`: {sorted(missing)}"
    assert "vlmkit.build_context.load_pretrained" in RECORD["names"]  # the 0.1 guide's call


def test_not_import_paths_are_what_the_record_says():
    from vlmkit.plugins.registry import GROUPS

    groups = {f"vlmkit.{g.split('.', 1)[1]}" for g in GROUPS.values()} if isinstance(GROUPS, dict) else set()
    for name, what in RECORD["not_import_paths"].items():
        assert what in ("an entry-point group", "the checkpoint's config file")
        if what == "an entry-point group" and groups:
            assert name in groups


def test_every_stable_name_resolves_from_plugin_api_and_from_its_module():
    import vlmkit.plugin_api as api

    for name, module in api.STABLE.items():
        assert getattr(api, name) is getattr(importlib.import_module(module), name), name
    with pytest.raises(AttributeError, match=r"stable names are listed in vlmkit\.plugin_api\.STABLE"):
        api.NotAName  # noqa: B018


def test_the_guide_imports_only_stable_names_or_documented_modules():
    """Every ``from vlmkit... import X`` in the current guide names something in the stable list (or the
    testing kit, or a whole module): the guide never teaches an internal name."""
    import re

    import vlmkit.plugin_api as api

    text = (ROOT / "docs" / "writing-a-plugin.md").read_text()
    stable = set(api.STABLE)
    for module, names in re.findall(r"^from (vlmkit[\w.]*) import ([\w, ]+)$", text, re.MULTILINE):
        if module.startswith("vlmkit.testing"):
            continue
        for n in (x.strip() for x in names.split(",")):
            assert n in stable or importlib.util.find_spec(f"{module}.{n}") is not None, f"{module}.{n}"


def test_a_moved_path_warns_naming_the_new_path_and_the_removal_version():
    code = ("import warnings, sys; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import vlmkit.build_context\nexcept DeprecationWarning as w:\n    print(w)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    from vlmkit.moved_modules import REMOVED_IN

    assert "vlmkit.build_context moved to vlmkit.model.build_context" in out and f"removed in vlmkit-core {REMOVED_IN}" in out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import vlmkit.build_context as old
        import vlmkit.model.build_context as new
    assert old is new
