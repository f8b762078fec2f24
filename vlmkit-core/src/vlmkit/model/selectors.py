"""Selectors: one way to name parts of a model, for every use that names them (which parameters train in
a stage, learning-rate groups, LoRA targets, activation checkpointing).

Selectors (any number, combined by union):

* ``llm``, ``connector``, ``fusion``, ``encoders``, ``objectives``: whole groups (``connector`` includes a tiling
  model's ``tile_merge``, its image-newline embedding, also selectable alone);
* ``encoder.0`` / ``encoder.clip``, ``fusion.convgate``, ``objective.ross``: one component;
* ``encoder.clip:layers>=12``, ``encoder.0:stages>=2``, ``encoder.convnext5:stage5``: a named part
  of a component (from its ``named_parts()``), with an optional numeric comparison on the index;
* ``re:<regex>``: parameter names matching a regular expression (escape hatch).

``select_parameters`` resolves them to parameter names; ``select_components`` to whole components, for
uses that act on a module (LoRA, activation checkpointing), which accept only some groups.
"""

from __future__ import annotations

import operator
import re
from typing import Iterable

from torch import nn

from vlmkit.errors import ConfigError
from vlmkit.model.contracts import non_persistent_prefixes

#: a group of several components -> the selector prefix of one of them (``encoders`` -> ``encoder.0``)
GROUP_MEMBERS = {"encoders": "encoder", "fusion": "fusion", "objectives": "objective"}
_CMP = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_PART = re.compile(r"^(?P<base>[A-Za-z_][\w\-]*)(?P<op>>=|<=|==|>|<)(?P<num>\d+)$")


def component_aliases(model: nn.Module) -> dict[str, str]:
    """Selector -> parameter-name prefix for every addressable component of a VisionLanguageModel."""
    out: dict[str, str] = {}
    comps = model.named_components()
    module_to_prefix = {id(m): p for p, m in model.named_modules()}
    for key, module in comps.items():
        prefix = module_to_prefix[id(module)]
        out[key] = prefix
        group = key.split(".")[0]
        cname = getattr(module, "component_name", "")
        if cname and group in ("encoder", "fusion", "objective"):
            out.setdefault(f"{group}.{cname.split(':')[-1]}", prefix)
    return out


def _group_prefixes(model: nn.Module) -> dict[str, list[str]]:
    aliases = component_aliases(model)
    groups: dict[str, list[str]] = {"encoders": [], "fusion": [], "objectives": [], "connector": [], "llm": []}
    for key, prefix in aliases.items():
        g = key.split(".")[0]
        if g == "encoder" and key.split(".")[1].isdigit():
            groups["encoders"].append(prefix)
        elif g == "fusion" and key.split(".")[1].isdigit():
            groups["fusion"].append(prefix)
        elif g == "objective" and key.count(".") == 1 and prefix not in groups["objectives"]:
            groups["objectives"].append(prefix)
        elif key in ("connector", "llm"):
            groups[key].append(prefix)
        elif key == "tile_merge":  # the image-newline embedding trains with the connector (AnyRes models)
            groups["connector"].append(prefix)
    return groups


def select_components(model: nn.Module, selectors: Iterable[str], groups: Iterable[str], what: str) -> dict[str, nn.Module]:
    """Whole components by selector, keyed by their canonical name (``llm``, ``encoder.0``): a group name
    (``encoders``) gives each member, ``encoder.0`` / ``encoder.<name>`` the one it names. ``groups`` are the
    group names this use accepts (LoRA targets and activation checkpointing: ``llm`` and ``encoders``); a
    selector outside them is an error naming ``what`` and listing the valid ones."""
    aliases = component_aliases(model)
    by_group = _group_prefixes(model)
    allowed = list(groups)
    singles = {GROUP_MEMBERS[g] for g in allowed if g in GROUP_MEMBERS}  # encoders -> encoder.N / encoder.<name>
    canonical: dict[str, str] = {}
    for key, prefix in aliases.items():  # the index form names a component canonically
        if key in by_group or key.split(".")[-1].isdigit():
            canonical.setdefault(prefix, key)
    out: dict[str, nn.Module] = {}
    for sel in selectors:
        if sel in allowed:
            prefixes = by_group.get(sel, [])
        elif sel.split(".")[0] in singles and sel in aliases:
            prefixes = [aliases[sel]]
        else:
            valid = allowed + sorted(k for k in aliases if k.split(".")[0] in singles)
            raise ConfigError(f"{what}: unknown part '{sel}'; valid: {', '.join(valid)}")
        for prefix in prefixes:
            out[canonical.get(prefix, prefix)] = model.get_submodule(prefix)
    return out


def select_parameters(model: nn.Module, selectors: Iterable[str]) -> set[str]:
    names = [n for n, _ in model.named_parameters()]
    aliases = component_aliases(model)
    groups = _group_prefixes(model)
    chosen: set[str] = set()

    def under(prefix: str) -> set[str]:
        return {n for n in names if n.startswith(prefix + ".")}

    for sel in selectors:
        sel = sel.strip()
        if sel.startswith("re:"):
            pattern = re.compile(sel[3:])
            matched = {n for n in names if pattern.search(n)}
            if not matched:
                raise ConfigError(f"trainable selector '{sel}' matches no parameter")
            chosen |= matched
            continue
        comp, _, part = sel.partition(":")
        if comp in groups:
            prefixes = groups[comp]
        elif comp in aliases:
            prefixes = [aliases[comp]]
        else:
            valid = sorted(set(groups) | set(aliases))
            raise ConfigError(f"trainable selector '{sel}': unknown part '{comp}'; valid: {', '.join(valid)}")
        if not part:
            for p in prefixes:
                chosen |= under(p)
            continue
        if len(prefixes) != 1:
            raise ConfigError(f"trainable selector '{sel}': name one component to select its part '{part}'")
        module = model.get_submodule(prefixes[0])
        named = module.named_parts() if hasattr(module, "named_parts") else {}
        m = _PART.match(part)
        if m:
            base, op, num = m.group("base"), _CMP[m.group("op")], int(m.group("num"))
            keys = [k for k in named if k.startswith(base + ".") and k[len(base) + 1:].isdigit()
                    and op(int(k[len(base) + 1:]), num)]
            if not any(k.startswith(base + ".") for k in named):
                raise ConfigError(f"trainable selector '{sel}': {comp} has no indexed part '{base}'; parts: "
                                  f"{', '.join(sorted(_part_bases(named))) or '(none)'}")
        else:
            keys = [k for k in named if k == part]
            if not keys:
                raise ConfigError(f"trainable selector '{sel}': {comp} has no part '{part}'; parts: "
                                  f"{', '.join(sorted(_part_bases(named))) or '(none)'}")
        for k in keys:  # named_parts() gives parameter-name prefixes: a module path selects its parameters
            for rel in named[k]:
                chosen |= under(f"{prefixes[0]}.{rel}") | ({f"{prefixes[0]}.{rel}"} & set(names))
    teachers = non_persistent_prefixes(model)
    return {n for n in chosen if not any(n.startswith(t + ".") for t in teachers)}


def _part_bases(named: dict[str, list[str]]) -> set[str]:
    out = set()
    for k in named:
        base, _, idx = k.rpartition(".")
        out.add(f"{base}.N" if idx.isdigit() else k)
    return out


def set_trainable(model: nn.Module, selectors: Iterable[str]) -> set[str]:
    """Freeze everything, then unfreeze the selected parameters. Returns the trainable names."""
    chosen = select_parameters(model, selectors)
    for n, p in model.named_parameters():
        p.requires_grad_(n in chosen)
    return chosen
