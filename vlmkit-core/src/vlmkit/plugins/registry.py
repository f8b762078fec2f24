"""Component discovery: names come from package metadata, code is imported only when used.

This module must never import torch or any plugin at import time: ``vlmkit plugins`` and
``vlmkit --help`` list components through it. Entry points are read with the standard library's
``importlib.metadata`` (the ``entrypoints`` package is in maintenance mode and points there).

Addressing: a bare name works when exactly one distribution provides it; ``distribution:name`` always
works. Duplicates are only an error when the ambiguous bare name is asked for by a user. A name that
comes with a provenance (a preset's own distribution, the distribution a checkpoint recorded) resolves in
favour of that distribution, so a third party reusing a name never changes what it means there.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import re
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterable

from vlmkit.errors import AmbiguousComponentError, PluginLoadError, UnknownComponentError
from vlmkit.plugins.hooks import HOOKS_GROUP, get_plugin_manager  # noqa: F401 - HOOKS_GROUP: the groups' companion
from vlmkit.plugins.strict import strict_mode

#: kind -> entry-point group. One group per kind, one entry point per component.
GROUPS: dict[str, str] = {
    "encoder": "vlmkit.encoders",
    "connector": "vlmkit.connectors",
    "objective": "vlmkit.objectives",
    "dataset": "vlmkit.datasets",
    "transform": "vlmkit.transforms",
    "llm": "vlmkit.llms",
    "template": "vlmkit.templates",
    "sampler": "vlmkit.samplers",
    "preset": "vlmkit.presets",
    "recipe": "vlmkit.recipes",
}
IN_PROCESS = "__main__"
#: core's own distribution: the components it ships itself (LLM adapters, the LM objective, templates)
CORE_DISTRIBUTION = "vlmkit-core"


def normalise_distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_normalise_dist = normalise_distribution


@dataclass
class ComponentEntry:
    """One registered component. ``target`` is ``module:attr`` (entry point) or an object (in-process)."""

    kind: str
    name: str
    distribution: str
    version: str
    target: str
    obj: Any = None
    error: str | None = None
    loaded: bool = False
    requires: list[str] = field(default_factory=list)

    @property
    def qualified_name(self) -> str:
        return f"{self.distribution}:{self.name}"

    def load(self) -> Any:
        """Import the component. A failure is remembered (and shown by ``vlmkit plugins``)."""
        if self.loaded:
            if self.error is not None:
                raise PluginLoadError(self.kind, self.qualified_name, self.target, self.error)
            return self.obj
        self.loaded = True
        try:
            module_name, _, attr = self.target.partition(":")
            obj = importlib.import_module(module_name)
            for part in filter(None, attr.split(".")):
                obj = getattr(obj, part)
        except Exception as exc:  # noqa: BLE001 - isolate any plugin failure
            self.error = f"{type(exc).__name__}: {exc}"
            self._traceback = traceback.format_exc()
            raise PluginLoadError(self.kind, self.qualified_name, self.target, self.error) from exc
        self.obj = obj
        return obj

    def static_status(self) -> str:
        """Best guess of health without importing: the module is findable and requirements exist."""
        if self.loaded:
            return "ok" if self.error is None else self.error
        if self.distribution == IN_PROCESS:
            return "ok"
        module_name = self.target.partition(":")[0]
        try:
            if importlib.util.find_spec(module_name.split(".")[0]) is None:
                return f"ModuleNotFoundError: no module named '{module_name}'"
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}"
        missing = _missing_requirements(self.requires)
        if missing:
            return "missing requirement(s): " + ", ".join(missing)
        return "ok"

    def as_dict(self, status: str | None = None) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "target": self.target if isinstance(self.target, str) else repr(self.target),
            "status": status if status is not None else self.static_status(),
        }


@functools.lru_cache(maxsize=None)
def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _missing_requirements(requires: Iterable[str]) -> list[str]:
    """The requirements of a distribution that this environment does not meet: not installed, or installed
    at a version outside the range. Requirements whose marker is false here are not needed: an optional
    extra's, another platform's or another Python's (``packaging`` evaluates the markers)."""
    from packaging.requirements import InvalidRequirement, Requirement

    missing = []
    for text in requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue  # metadata this environment cannot read is not a reason to call the plugin broken
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        version = _installed_version(req.name)
        if version is None:
            missing.append(req.name)
        elif req.specifier and not req.specifier.contains(version, prereleases=True):
            missing.append(f"{req.name}{req.specifier} (found {version})")
    return missing


class Registry:
    """All components of every kind, discovered lazily from entry points plus in-process ones."""

    def __init__(self) -> None:
        self._entries: dict[str, list[ComponentEntry]] | None = None
        self._in_process: dict[str, list[ComponentEntry]] = {k: [] for k in GROUPS}
        self._hooks_loaded = False

    # -- discovery ---------------------------------------------------------------------------
    def _discover(self) -> dict[str, list[ComponentEntry]]:
        if self._entries is not None:
            return self._entries
        entries: dict[str, list[ComponentEntry]] = {k: [] for k in GROUPS}
        seen: set[tuple[str, str, str]] = set()
        for dist in metadata.distributions():
            eps = [ep for ep in dist.entry_points if ep.group in GROUPS.values()]
            if not eps:
                continue
            meta = dist.metadata  # parsed once: .version and .requires would each parse METADATA again
            dist_name = _normalise_dist(meta["Name"] or "unknown")
            version = meta["Version"] or "0"
            requires = list(meta.get_all("Requires-Dist") or [])
            for ep in eps:
                kind = next(k for k, g in GROUPS.items() if g == ep.group)
                key = (kind, dist_name, ep.name)
                if key in seen:  # same distribution visible twice on sys.path
                    continue
                seen.add(key)
                entries[kind].append(ComponentEntry(kind, ep.name, dist_name, version, ep.value, requires=requires))
        self._entries = entries
        return entries

    def refresh(self) -> None:
        """Forget discovered entry points (after installing a plugin in-process)."""
        self._entries = None
        _installed_version.cache_clear()

    def register(self, kind: str, name: str, obj: Any, *, distribution: str = IN_PROCESS, version: str = "0") -> ComponentEntry:
        """Register a component object without packaging it (scripts, notebooks, tests)."""
        if kind not in GROUPS:
            raise ValueError(f"unknown component kind '{kind}'; kinds: {', '.join(GROUPS)}")
        entry = ComponentEntry(kind, name, _normalise_dist(distribution), version,
                               f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', name)}",
                               obj=obj, loaded=True)
        lst = self._in_process[kind]
        lst[:] = [e for e in lst if not (e.name == name and e.distribution == entry.distribution)]
        lst.append(entry)
        return entry

    def unregister(self, kind: str, name: str, *, distribution: str = IN_PROCESS) -> None:
        lst = self._in_process[kind]
        lst[:] = [e for e in lst if not (e.name == name and e.distribution == _normalise_dist(distribution))]

    def _ensure_hooks(self) -> None:
        """Let pluggy hook implementations register their in-process components (once)."""
        if self._hooks_loaded:
            return
        self._hooks_loaded = True
        def _register(kind: str, name: str, obj: Any, distribution: str = IN_PROCESS, version: str = "0") -> None:
            self.register(kind, name, obj, distribution=distribution, version=version)

        get_plugin_manager().hook.vlmkit_register_components(register=_register)

    # -- queries -----------------------------------------------------------------------------
    def entries(self, kind: str | None = None, *, include_hooks: bool = False) -> list[ComponentEntry]:
        if include_hooks:
            self._ensure_hooks()
        discovered = self._discover()
        kinds = [kind] if kind else list(GROUPS)
        out: list[ComponentEntry] = []
        for k in kinds:
            if k not in GROUPS:
                raise ValueError(f"unknown component kind '{k}'; kinds: {', '.join(GROUPS)}")
            out.extend(discovered[k])
            out.extend(self._in_process[k])
        return out

    def names(self, kind: str) -> list[str]:
        return sorted({e.name for e in self.entries(kind, include_hooks=True)})

    def installed_summary(self, kind: str) -> str:
        """``installed connectors: a, b`` (or that none is installed), for errors that ask for a component."""
        names = self.names(kind)
        return f"installed {kind}s: {', '.join(names)}" if names else f"no {kind} plugins are installed"

    def resolve(self, kind: str, name: str, prefer: Iterable[str] = ()) -> ComponentEntry:
        """The entry for ``name`` (bare or ``distribution:name``). ``prefer`` lists distributions that decide
        between several providers of a bare name, in order (provenance); without one that provides it,
        an ambiguous bare name is an error listing the qualified candidates."""
        entries = self.entries(kind, include_hooks=True)
        if ":" in name:
            dist, _, bare = name.partition(":")
            matches = [e for e in entries if e.name == bare and e.distribution == _normalise_dist(dist)]
            if not matches:
                raise UnknownComponentError(kind, name, difflib.get_close_matches(
                    name, [e.qualified_name for e in entries], n=3, cutoff=0.6), [e.qualified_name for e in entries])
            return matches[-1]
        matches = [e for e in entries if e.name == name]
        if not matches:
            names = sorted({e.name for e in entries})
            raise UnknownComponentError(kind, name, difflib.get_close_matches(name, names, n=3, cutoff=0.5), names)
        # an in-process registration deliberately overrides nothing: same rules as entry points
        if len({e.distribution for e in matches}) > 1:
            for dist in prefer:
                chosen = [e for e in matches if e.distribution == _normalise_dist(dist)]
                if chosen:
                    return chosen[-1]
            raise AmbiguousComponentError(kind, name, sorted(e.qualified_name for e in matches))
        return matches[-1]

    def load(self, kind: str, name: str, prefer: Iterable[str] = ()) -> Any:
        """Resolve and import a component. Import failures raise PluginLoadError (strict or not)."""
        return self.resolve(kind, name, prefer).load()

    def collisions(self) -> dict[tuple[str, str], list[str]]:
        """(kind, bare name) -> the distributions that each provide it, where there are several."""
        found: dict[tuple[str, str], set[str]] = {}
        for e in self.entries(include_hooks=True):
            found.setdefault((e.kind, e.name), set()).add(e.distribution)
        return {k: sorted(v) for k, v in found.items() if len(v) > 1}

    def check_all(self) -> list[tuple[ComponentEntry, str]]:
        """Import every component and report its status; in strict mode the first failure raises."""
        results = []
        for entry in self.entries(include_hooks=True):
            try:
                entry.load()
                results.append((entry, "ok"))
            except PluginLoadError as exc:
                if strict_mode():
                    raise
                results.append((entry, exc.error))
        return results


#: the process-wide registry
registry = Registry()


def list_components(kind: str | None = None, pattern: str | None = None) -> list[str]:
    """timm-style catalogue: ``list_components("encoder", "*convnext*")``."""
    import fnmatch

    names = sorted({e.name for e in registry.entries(kind)})
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def register(kind: str, name: str, obj: Any | None = None, **kw: Any) -> Any:
    """Register in-process; usable as a decorator: ``@register("encoder", "mine")``."""
    if obj is None:
        def deco(o: Any) -> Any:
            registry.register(kind, name, o, **kw)
            return o
        return deco
    registry.register(kind, name, obj, **kw)
    return obj
