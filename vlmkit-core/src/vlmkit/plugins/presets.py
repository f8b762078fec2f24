"""Presets and recipe presets: registered data, loaded in one place.

A preset names components by bare name. Once a third party ships a component with the same name, that
name is ambiguous; a preset must still mean what its authors meant. So when a preset is loaded, every
bare name it uses that is now provided by several distributions is qualified with the preset's own
distribution (``vlmkit-encoders:clip``), when that distribution provides it. Names that are not
ambiguous stay bare, so configs and checkpoints look as they always did.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

from vlmkit.plugins.registry import CORE_DISTRIBUTION, registry

#: model-config keys that name components, and their kinds
MODEL_PARTS = {"encoders": "encoder", "fusion": "connector", "connector": "connector", "llm": "llm",
               "objectives": "objective"}


def load_preset(kind: str, name: str, prefer: Iterable[str] = ()) -> dict[str, Any]:
    """The data of the ``kind`` (``preset`` or ``recipe``) called ``name``, a deep copy, with its ambiguous
    component names qualified by its own distribution. ``prefer`` decides an ambiguous ``name`` itself
    (the distribution of the recipe that names this preset)."""
    entry = registry.resolve(kind, name, prefer)
    obj = entry.load()
    data = copy.deepcopy(obj() if callable(obj) else obj)
    if not isinstance(data, dict):
        return data
    if kind == "recipe":
        return qualify_recipe(data, entry.distribution)
    return qualify_model(data, entry.distribution)


def qualify(kind: str, name: Any, dist: str) -> Any:
    """``dist:name`` when bare ``name`` is ambiguous and ``dist`` (else vlmkit-core, whose components every
    preset may use) provides it; otherwise ``name``."""
    if not isinstance(name, str) or ":" in name:
        return name
    providers = {e.distribution for e in registry.entries(kind, include_hooks=True) if e.name == name}
    if len(providers) < 2:
        return name
    owner = next((d for d in (dist, CORE_DISTRIBUTION) if d in providers), None)
    return f"{owner}:{name}" if owner else name


def _qualify_component(kind: str, spec: Any, dist: str) -> Any:
    if isinstance(spec, str):
        return qualify(kind, spec, dist)
    if isinstance(spec, dict) and "name" in spec:
        return {**spec, "name": qualify(kind, spec["name"], dist)}
    return spec


def qualify_model(data: dict[str, Any], dist: str) -> dict[str, Any]:
    out = dict(data)
    for key, kind in MODEL_PARTS.items():
        value = out.get(key)
        if isinstance(value, list):
            out[key] = [_qualify_component(kind, v, dist) for v in value]
        elif value is not None:
            out[key] = _qualify_component(kind, value, dist)
    if isinstance(out.get("template"), (str, dict)):
        out["template"] = _qualify_component("template", out["template"], dist)
    return out


def qualify_recipe(data: dict[str, Any], dist: str) -> dict[str, Any]:
    out = dict(data)
    model = out.get("model")
    if isinstance(model, str):
        out["model"] = {"preset": qualify("preset", model, dist)}
    elif isinstance(model, dict) and "preset" in model:
        out["model"] = {**model, "preset": qualify("preset", model["preset"], dist)}
    elif isinstance(model, dict):
        out["model"] = qualify_model(model, dist)
    stages = []
    for st in out.get("stages") or []:
        if isinstance(st, dict) and isinstance(st.get("data"), dict):
            d = dict(st["data"])
            d["dataset"] = qualify("dataset", d.get("dataset"), dist)
            d["sampler"] = qualify("sampler", d.get("sampler"), dist) if d.get("sampler") else d.get("sampler")
            if isinstance(d.get("transforms"), list):
                d["transforms"] = [_qualify_component("transform", t, dist) for t in d["transforms"]]
            if isinstance(d.get("template"), (str, dict)):
                d["template"] = _qualify_component("template", d["template"], dist)
            st = {**st, "data": d}
        stages.append(st)
    if "stages" in out:
        out["stages"] = stages
    return out
