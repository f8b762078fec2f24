"""``vlmkit info``: a component's origin, docstring and arguments (also feeds the generated reference)."""

from __future__ import annotations

import inspect
from typing import Any


def describe_component(name: str, kind: str | None = None) -> dict[str, Any]:
    from vlmkit.arguments import describe_arguments
    from vlmkit.errors import AmbiguousComponentError, UnknownComponentError
    from vlmkit.registry import GROUPS, registry

    kinds = [kind] if kind else list(GROUPS)
    found = []
    for k in kinds:
        try:
            found.append(registry.resolve(k, name))
        except UnknownComponentError:
            continue
    if not found:
        raise UnknownComponentError(kind or "component", name, None, [e.name for e in registry.entries(kind)])
    if len(found) > 1:
        raise AmbiguousComponentError("component", name, [f"--kind {e.kind}" for e in found])
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
