"""Generate one conformance suite per registered component, at test collection time.

A distribution with many components (or vlmkit's own packages) covers all of them, including ones
added later, with a few lines in a test module::

    from vlmkit.testing import generate_suites

    generate_suites(globals(), "encoder", distributions={"my-plugins"})

Each component gets a ``Test<Kind>_<name>`` class built from its ``tiny_args``; ``setups`` adds class
attributes for the components that need more (upstream encoders, ``extra_args``, ``make_args``).
"""

from __future__ import annotations

import re
import types
from typing import Any, Iterable, Mapping

from vlmkit.plugins.registry import registry
from vlmkit.testing.connector import ConnectorConformance
from vlmkit.testing.dataset import DatasetConformance
from vlmkit.testing.encoder import EncoderConformance
from vlmkit.testing.objective import ObjectiveConformance

SUITES: dict[str, type] = {
    "encoder": EncoderConformance,
    "connector": ConnectorConformance,
    "objective": ObjectiveConformance,
    "dataset": DatasetConformance,
}


def suite_name(kind: str, name: str) -> str:
    return f"Test{kind.capitalize()}_{re.sub(r'[^0-9A-Za-z]', '_', name)}"


def registered_names(kind: str, distributions: Iterable[str] | None = None) -> list[str]:
    """Bare names of the registered components of ``kind`` (from these distributions only, if given)."""
    wanted = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions} if distributions is not None else None
    return sorted({e.name for e in registry.entries(kind) if wanted is None or e.distribution in wanted})


def generate_suites(namespace: dict[str, Any], kind: str, *, distributions: Iterable[str] | None = None,
                    setups: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Add a suite class per component of ``kind`` to ``namespace`` (a test module's ``globals()``).

    ``setups[name]`` holds class attributes for that component's suite; a function given as
    ``make_args`` becomes a staticmethod. Returns the names of the generated classes.
    """
    base = SUITES[kind]
    made = []
    for name in registered_names(kind, distributions):
        attrs: dict[str, Any] = {"component": name, "__module__": namespace.get("__name__", __name__)}
        for key, value in (setups or {}).get(name, {}).items():
            attrs[key] = staticmethod(value) if key == "make_args" and isinstance(value, types.FunctionType) else value
        cls_name = suite_name(kind, name)
        namespace[cls_name] = type(cls_name, (base,), attrs)
        made.append(cls_name)
    return made
