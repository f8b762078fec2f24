"""Import paths of modules that moved into core's sub-packages, kept working.

Plugins and scripts written against the flat layout (``from vlmkit.contracts import VisionEncoder``)
get the very module object at its new path, so classes, registries and ``isinstance`` checks are
shared, with a ``DeprecationWarning`` naming the new path and the release that removes the old one
(``REMOVED_IN``). Nothing is imported until asked for. Every path a released guide named is here; the test
``tests/test_plugin_api.py`` imports every ``vlmkit.*`` name that ``docs/`` ever showed.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: the vlmkit-core release that drops these old paths (they work, with a DeprecationWarning, until then)
REMOVED_IN = "0.3.0"

#: old dotted path -> new dotted path (``vlmkit.model`` and ``vlmkit.inference``, once modules, are packages now
#: whose ``__getattr__`` serves the names they held)
MOVED = {
    "vlmkit.arguments": "vlmkit.plugins.arguments",
    "vlmkit.hooks": "vlmkit.plugins.hooks",
    "vlmkit.registry": "vlmkit.plugins.registry",
    "vlmkit.presets": "vlmkit.plugins.presets",
    "vlmkit.contracts": "vlmkit.model.contracts",
    "vlmkit.constants": "vlmkit.model.constants",
    "vlmkit.config": "vlmkit.model.config",
    "vlmkit.assembly": "vlmkit.model.assembly",
    "vlmkit.splice": "vlmkit.model.splice",
    "vlmkit.llm": "vlmkit.model.llm",
    "vlmkit.lm_objective": "vlmkit.model.lm_objective",
    "vlmkit.parts": "vlmkit.model.selectors",
    "vlmkit.checkpoint": "vlmkit.model.checkpoint",
    "vlmkit.tiny_tokenizer": "vlmkit.model.tiny_tokenizer",
    "vlmkit.samples": "vlmkit.data.samples",
    "vlmkit.templates": "vlmkit.data.templates",
    "vlmkit.image_processing": "vlmkit.data.image_processing",
    "vlmkit.processing": "vlmkit.data.processing",
    "vlmkit.packing": "vlmkit.data.packing",
    "vlmkit.hf_llava": "vlmkit.interop.hf_llava",
    "vlmkit.llava_conversion": "vlmkit.interop.llava_conversion",
    "vlmkit.evaluation": "vlmkit.inference.evaluation",
    "vlmkit.training.recompute": "vlmkit.training.activation_checkpointing",
    # the 0.1 plugin guide: "when vlmkit.build_context.load_pretrained() is False, read no weight file"
    "vlmkit.build_context": "vlmkit.model.build_context",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and hands out the module at its new one."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there ({spec.name} is removed in vlmkit-core "
                      f"{REMOVED_IN})", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module at the new path is already executed."""


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
