"""Core's layout keeps its direction: each sub-package imports only the layers below it (the map in
docs/design.md), and no sub-package has an import cycle inside it.

Read from the source with ``ast`` (every import, also those inside functions), so a lazy import that
would hide a cycle or a wrong direction at run time is found too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "vlmkit-core" / "src" / "vlmkit"

#: sub-package (or root module) -> what it may import besides itself; the order of docs/design.md's map
LEAVES = {"errors", "progress", "cpu_threads", "safe_yaml", "output_folder"}
#: root modules every layer may use: error types, the progress bar, bounded YAML, output folders
BASE = {"errors", "progress", "safe_yaml", "output_folder"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "progress": set(),
    "safe_yaml": {"errors"},
    "output_folder": {"errors"},
    "cpu_threads": {"errors"},
    "plugins": {"errors", "safe_yaml"},
    "model": BASE | {"plugins"},
    "data": BASE | {"plugins", "model"},
    "interop": BASE | {"plugins", "model"},
    "inference": BASE | {"cpu_threads", "plugins", "model", "data"},
    "training": BASE | {"cpu_threads", "plugins", "model", "data"},
    "integrations": BASE | {"cpu_threads", "plugins", "model", "data", "inference"},
    "sweep": BASE | {"cpu_threads", "plugins", "model", "data", "inference", "training"},
    "testing": BASE | {"cpu_threads", "plugins", "model", "data", "interop", "inference", "training"},
}
#: the package's front door and the old-path aliases name the layers by design
EXEMPT = {"vlmkit", "vlmkit.moved_modules", "vlmkit.plugin_api"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str | None = None) -> set[str]:
    """Every vlmkit module ``path`` imports (``from vlmkit.x import y`` counts y when it is a module)."""
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "vlmkit")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "vlmkit":
                continue
            found.add(target)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if _source(sub) is not None:
                    found.add(sub)
    found.discard(name)
    return found


def _source(module: str) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for candidate in (CORE / rel.with_suffix(".py"), CORE / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = {_module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def test_every_module_sits_in_a_known_layer():
    unknown = sorted(m for m in MODULES if m not in EXEMPT and _layer(m) not in ALLOWED)
    assert not unknown, f"modules outside the map of docs/design.md (add them to a sub-package): {unknown}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m not in EXEMPT))
def test_imports_go_down_the_layers_only(module):
    own = _layer(module)
    wrong = _wrong_direction(module, _imports(MODULES[module]))
    assert not wrong, f"{module} ({own}) may import only {sorted(ALLOWED[own])}, but imports {wrong}"


def _wrong_direction(module: str, imports: set[str]) -> list[str]:
    own = _layer(module)
    return sorted(t for t in imports if _layer(t) not in (own, None) and _layer(t) not in ALLOWED[own])


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package", sorted(ALLOWED.keys() - LEAVES))
def test_no_import_cycle_inside_a_package(package):
    inside = {m for m in MODULES if _layer(m) == package and m != f"vlmkit.{package}"}
    graph = {m: {t for t in _imports(MODULES[m]) if t in inside} for m in inside}
    assert _cycle(graph) is None, f"import cycle inside vlmkit.{package}: {' -> '.join(_cycle(graph))}"


def test_the_checker_sees_a_wrong_direction_and_a_cycle(tmp_path):
    """The two rules above fail on a model module importing training lazily, and on a two-module loop."""
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from vlmkit.training import runner\n    from vlmkit.errors import ConfigError\n")
    assert _wrong_direction("vlmkit.model.bad", _imports(bad, "vlmkit.model.bad")) == [
        "vlmkit.training", "vlmkit.training.runner"]


def test_the_flat_layouts_import_paths_still_work():
    """Plugins written against the flat layout keep loading: an old path is the very module at its new one
    (shared classes), with a DeprecationWarning naming it; the old module names serve their old names."""
    import subprocess
    import sys

    code = (
        "import warnings\n"
        "warnings.simplefilter('error')\n"
        "import vlmkit\n"
        "try:\n"
        "    from vlmkit.contracts import VisionEncoder\n"
        "except DeprecationWarning as w:\n"
        "    assert 'vlmkit.model.contracts' in str(w), w\n"
        "warnings.simplefilter('ignore')\n"
        "from vlmkit.contracts import VisionEncoder\n"
        "from vlmkit.registry import registry\n"
        "import vlmkit.model.contracts, vlmkit.plugins.registry\n"
        "assert VisionEncoder is vlmkit.model.contracts.VisionEncoder and registry is vlmkit.plugins.registry.registry\n"
        "from vlmkit.model import VisionLanguageModel\n"
        "from vlmkit.inference import generate\n"
        "assert callable(generate) and VisionLanguageModel.__module__ == 'vlmkit.model.vlm'\n"
        "from vlmkit.moved_modules import MOVED\n"
        "import importlib\n"
        "for old, new in MOVED.items():\n"
        "    assert importlib.import_module(old) is importlib.import_module(new), old\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
