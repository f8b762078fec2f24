"""Each package declares every distribution it imports: read from its source (AST) and its pyproject.

An import at a module's top level needs a required dependency; an import inside a function or a
``try`` may be served by an optional extra. Imports of a sibling vlmkit package are only allowed
where the package declares it (vlmkit-cli's ``all`` extra).
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.name for p in ROOT.glob("vlmkit-*") if (p / "pyproject.toml").exists())
# import name -> distribution for the optional ones that may not be installed in this environment
KNOWN = {"bitsandbytes": "bitsandbytes", "lmms_eval": "lmms-eval", "deepspeed": "deepspeed", "peft": "peft",
         "flash_attn": "flash-attn", "PIL": "pillow", "yaml": "pyyaml", "vlmkit": "vlmkit-core",
         "vlmkit_encoders": "vlmkit-encoders", "vlmkit_fusion": "vlmkit-fusion", "vlmkit_data": "vlmkit-data",
         "vlmkit_objectives": "vlmkit-objectives", "vlmkit_cli": "vlmkit-cli"}
# modules that only an extra's users import (an entry point of another tool, or the plugin authors' kit):
# their module-level imports may come from that extra
EXTRA_ONLY_MODULES = {"vlmkit-core/src/vlmkit/integrations/lmms_eval.py": "lmms-eval",
                      "vlmkit-core/src/vlmkit/testing/": "pytest"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9_.\-]+", req.strip()).group(0))


def imports(src: Path) -> dict[str, tuple[list[str], str]]:
    """Top-level module -> (the places it is imported at module level, the first place seen)."""
    found: dict[str, tuple[list[str], str]] = {}
    for f in sorted(src.rglob("*.py")):
        tree = ast.parse(f.read_text(), str(f))
        module_level = {id(n) for n in tree.body}  # statements directly in the module body (not in def/try/if)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "__future__":
                    continue
                here = f"{f.relative_to(ROOT)}:{node.lineno}"
                eager, first = found.setdefault(top, ([], here))
                if id(node) in module_level:
                    eager.append(here)
    return found


def distribution_of(module: str) -> str:
    dists = packages_distributions().get(module) or [KNOWN.get(module, module)]
    return canonical(dists[0])


@pytest.mark.parametrize("package", PACKAGES)
def test_every_import_is_declared(package):
    meta = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
    own = canonical(meta["name"])
    required = {requirement_name(r) for r in meta.get("dependencies", [])}
    optional = {requirement_name(r) for reqs in meta.get("optional-dependencies", {}).values() for r in reqs}
    problems = []
    for module, (eager, where) in imports(ROOT / package / "src").items():
        dist = distribution_of(module)
        if dist == own:
            continue
        eager = [w for w in eager if not any(w.startswith(m) and dist == d for m, d in EXTRA_ONLY_MODULES.items())]
        if eager and dist not in required:
            problems.append(f"{eager[0]}: imports {module} at module level, but {dist} is not a required dependency")
        elif dist not in required | optional:
            problems.append(f"{where}: imports {module}, but {dist} is neither a dependency nor in an extra")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_unused_required_dependency(package):
    """The other direction: a required dependency that no module imports is not a true requirement
    (the exceptions are needed by a library we call, without an import of ours: accelerate by the Trainer,
    sentencepiece and protobuf by transformers to read the releases' slow ``tokenizer.model``)."""
    meta = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
    used = {distribution_of(m) for m in imports(ROOT / package / "src")}
    needed_without_import = {"accelerate", "sentencepiece", "protobuf"}
    unused = {requirement_name(r) for r in meta.get("dependencies", [])} - used - needed_without_import
    assert not unused, f"{package} requires {sorted(unused)} but imports none of them"


def test_cli_all_extra_names_every_sibling():
    meta = tomllib.loads((ROOT / "vlmkit-cli" / "pyproject.toml").read_text())["project"]
    names = {requirement_name(r) for r in meta["optional-dependencies"]["all"]}
    assert names == {canonical(p) for p in PACKAGES} - {"vlmkit-cli", "vlmkit-core"}
