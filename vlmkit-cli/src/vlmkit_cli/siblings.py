"""Which sibling package the CLI's own defaults and commands come from, so that a CLI installed without
it fails with one line that says what to install (not an unknown-name error or a ModuleNotFoundError).

Torch-free: only importlib and the registry's discovery (which imports no plugin).
"""

from __future__ import annotations

import importlib.util

from .errors import fail

#: the sibling distributions and their import names
SIBLINGS = {"vlmkit-encoders": "vlmkit_encoders", "vlmkit-fusion": "vlmkit_fusion",
            "vlmkit-objectives": "vlmkit_objectives", "vlmkit-data": "vlmkit_data"}
WHOLE_TOOLKIT = 'pip install "vlmkit-cli[all]" (the whole toolkit)'


def install_hint(dist: str) -> str:
    return f"pip install {dist}, or {WHOLE_TOOLKIT}"


def require_module(dist: str, purpose: str) -> None:
    """Fail with one line when ``dist`` (a sibling the command imports directly) is not installed."""
    if importlib.util.find_spec(SIBLINGS[dist]) is None:
        fail(f"{purpose} needs {dist}, which is not installed: {install_hint(dist)}")


def missing_components(*needs: tuple[str, str, str]) -> list[tuple[str, str, str]]:
    """The ``(kind, bare name, distribution)`` of each of ``needs`` that is not installed."""
    from vlmkit.plugins.registry import registry

    def installed(kind: str, name: str) -> bool:
        qualified = {e.qualified_name for e in registry.entries(kind, include_hooks=True)}
        return name in qualified if ":" in name else name in registry.names(kind)

    return [(kind, name.split(":")[-1], dist) for kind, name, dist in needs if not installed(kind, name)]


def require_components(purpose: str, *needs: tuple[str, str, str]) -> None:
    """Fail with one line when a component the CLI names by default is not installed.

    ``needs`` holds ``(kind, name, distribution that ships it)``; all missing ones are named together.
    """
    missing = missing_components(*needs)
    if missing:
        what = ", ".join(f"{kind} '{name}' ({dist})" for kind, name, dist in missing)
        dists = " ".join(dict.fromkeys(dist for _, _, dist in missing))
        fail(f"{purpose} uses {what}, not installed: pip install {dists}, or {WHOLE_TOOLKIT}")
