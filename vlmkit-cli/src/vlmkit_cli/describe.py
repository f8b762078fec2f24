"""``vlmkit info``: a component's origin, docstring and arguments (also feeds the generated reference)."""

from __future__ import annotations

import inspect
from typing import Any


def describe_component(name: str, kind: str | None = None) -> dict[str, Any]:
    from vlmkit.errors import UnknownComponentError
    from vlmkit.plugins.arguments import describe_arguments
    from vlmkit.plugins.registry import GROUPS, registry

    kinds = [kind] if kind else list(GROUPS)
    found = []
    for k in kinds:
        try:
            found.append(registry.resolve(k, name))
        except UnknownComponentError:
            continue
    if not found:
        import difflib

        known = sorted({e.name for e in registry.entries(kind, include_hooks=True)})
        raise UnknownComponentError(kind or "component", name, difflib.get_close_matches(name, known, n=3, cutoff=0.6),
                                    known)
    if len(found) > 1:
        from vlmkit.errors import ConfigError

        kinds = ", ".join(f"{e.kind} ({e.distribution})" for e in found)
        raise ConfigError(f"'{name}' names components of several kinds: {kinds}; say which with --kind "
                          f"{found[0].kind} (or --kind {found[1].kind})")
    entry = found[0]
    obj = entry.load()
    doc: dict[str, Any] = entry.as_dict("ok")
    if isinstance(obj, dict):
        doc["doc"] = "preset (data)"
        doc["value"] = obj
        doc["arguments"] = []
        return doc
    doc["doc"] = inspect.getdoc(obj) or ""
    ctx = getattr(obj, "context_parameters", ()) or ()
    try:
        doc["arguments"] = describe_arguments(obj, ctx)
    except (TypeError, ValueError):
        doc["arguments"] = []
    return doc
