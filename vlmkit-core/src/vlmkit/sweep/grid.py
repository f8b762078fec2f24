"""The grid of a sweep: ``--vary KEY=V1,V2`` axes (any ``--set`` key), crossed (or zipped: the i-th values of
all axes together), times ``--seeds``.

A *group* is one combination of axis values (what the table has a row for); a *variant* is a group at one seed
(what trains). Values stay the text the user wrote, so a variant's overrides are exactly ``--set KEY=VALUE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import product

from vlmkit.errors import ConfigError
from vlmkit.model.config import parse_assignment

#: a grid larger than this is a typo more often than a plan (each variant is a training run)
MAX_VARIANTS = 10_000


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    """One combination of axis values: ``overrides`` as ``(key, value text)``, in axis order."""

    index: int
    overrides: tuple[tuple[str, str], ...]
    labels: tuple[str, ...] = field(default=(), compare=False)
    #: a name given with --names (else the overrides make it: "lr=1e-3 name=clip")
    given_name: str | None = None

    @property
    def name(self) -> str:
        if self.given_name:
            return self.given_name
        return " ".join(f"{label}={value}" for label, (_, value) in zip(self.labels, self.overrides)) or "recipe"

    def sets(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.overrides]


@dataclass(frozen=True)
class Variant:
    group: Group
    seed: int

    @property
    def name(self) -> str:
        return f"{self.group.name} seed={self.seed}"

    @property
    def folder(self) -> str:
        """A file-system-safe folder name, unique in the sweep (the group's number leads)."""
        slug = re.sub(r"[^A-Za-z0-9.=+-]+", "_", self.group.name)[:80].strip("_") or "recipe"
        return f"{self.group.index + 1:03d}-{slug}-seed{self.seed}"


def split_values(text: str) -> list[str]:
    """``1e-3,3e-3`` -> two values; commas inside ``[...]``, ``{...}`` or quotes do not split."""
    out, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def parse_axis(text: str) -> Axis:
    """``--vary KEY=V1,V2``; each value must be valid YAML (as for ``--set``)."""
    if "=" not in text:
        raise ConfigError(f"--vary '{text}': expected KEY=V1,V2 (e.g. stages.0.lr=1e-3,3e-3)")
    key, _, raw = text.partition("=")
    key = key.strip()
    values = split_values(raw)
    if not key or any(not v for v in values):
        raise ConfigError(f"--vary '{text}': a key and non-empty values are needed (KEY=V1,V2)")
    for v in values:
        parse_assignment(f"{key}={v}", "KEY=VALUE")  # YAML errors name the axis now, not at training time
    return Axis(key, tuple(values))


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in split_values(text))
    except ValueError:
        raise ConfigError(f"--seeds '{text}': expected integers separated by commas, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds '{text}': seeds must be distinct and not negative")
    return seeds


def axis_labels(axes: list[Axis]) -> list[str]:
    """The shortest distinct suffix of each key (``stages.0.lr`` -> ``lr``), for names and table headers."""
    labels = []
    for axis in axes:
        parts = axis.key.split(".")
        for n in range(1, len(parts) + 1):
            label = ".".join(parts[-n:])
            if all(other is axis or not f".{other.key}".endswith(f".{label}") for other in axes) or n == len(parts):
                break
        labels.append(label)
    return labels


def expand(axes: list[Axis], seeds: tuple[int, ...], zipped: bool = False,
           names: list[str] | None = None) -> tuple[list[Group], list[Variant]]:
    """Groups (axes crossed, or with ``zipped`` taken together: the i-th value of every axis) and variants.
    ``names`` names the groups in order (the table's rows), instead of their overrides."""
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--vary: a key is varied twice ({', '.join(k for k in keys if keys.count(k) > 1)})")
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    labels = tuple(axis_labels(axes))
    if zipped and len({len(a.values) for a in axes}) > 1:
        raise ConfigError("--zip takes the axes together, so each needs as many values: "
                          + ", ".join(f"{a.key} has {len(a.values)}" for a in axes))
    if zipped:  # a value may repeat along one axis (the groups differ on another); a whole group may not
        combos = list(zip(*(a.values for a in axes)))
        twice = [c for c in combos if combos.count(c) > 1]
        if twice:
            raise ConfigError("--zip: a group is listed twice (" + ", ".join(f"{k}={v}" for k, v in zip(keys, twice[0]))
                              + ")")
    else:
        for a in axes:
            if len(set(a.values)) != len(a.values):
                raise ConfigError(f"--vary {a.key}: a value is listed twice ({','.join(a.values)})")
        combos = list(product(*(a.values for a in axes)))
    groups = [Group(i, tuple(zip(keys, combo)), labels) for i, combo in enumerate(combos)]
    if names:
        if len(names) != len(groups) or len(set(names)) != len(names) or not all(names):
            raise ConfigError(f"--names: {len(names)} name(s) for {len(groups)} group(s); give one distinct name "
                              "per group, in order (see --dry-run)")
        groups = [Group(g.index, g.overrides, g.labels, n) for g, n in zip(groups, names)]
    variants = [Variant(g, s) for g in groups for s in seeds]
    if len(variants) > MAX_VARIANTS:
        raise ConfigError(f"the sweep has {len(variants):,} variants (groups x seeds), over {MAX_VARIANTS:,}; "
                          "vary fewer values")
    return groups, variants
