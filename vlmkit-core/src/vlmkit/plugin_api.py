"""What a plugin may import from vlmkit: the one list, kept stable within a minor version line.

``from vlmkit.plugin_api import VisionEncoder, hookimpl, ConfigError`` works for every name in ``STABLE``, and
so does importing the same name from the module this table names (the paths the guide shows). The kit for a
plugin's own tests is the module ``vlmkit.testing``. Anything else in vlmkit is internal: it may move without
notice. A stable name that moves keeps its old path working, with a ``DeprecationWarning``, until the release
written in ``vlmkit.moved_modules.REMOVED_IN``; ``tests/test_plugin_api.py`` imports every name here, every
``vlmkit.*`` name any version of ``docs/`` showed, and runs a plugin written against the 0.1 guide.

Nothing is imported until asked for, so ``import vlmkit.plugin_api`` stays as light as ``import vlmkit``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: the version line these names are stable for (a plugin declares ``vlmkit-core>=0.1,<0.2``)
API_VERSION = "0.1"

#: name -> the module that defines it (and from which the guide imports it)
STABLE: dict[str, str] = {
    # hooks and registration
    "hookimpl": "vlmkit.plugins.hooks",
    "register": "vlmkit.plugins.registry",
    "GROUPS": "vlmkit.plugins.registry",
    "PositiveInt": "vlmkit.plugins.arguments",
    # contracts
    "Component": "vlmkit.model.contracts",
    "VisionEncoder": "vlmkit.model.contracts",
    "Connector": "vlmkit.model.contracts",
    "Objective": "vlmkit.model.contracts",
    "VisualFeatures": "vlmkit.model.contracts",
    "VisualContext": "vlmkit.model.contracts",
    "ObjectiveContext": "vlmkit.model.contracts",
    "StreamSpec": "vlmkit.model.contracts",
    "ImageView": "vlmkit.model.contracts",
    "ImageSpan": "vlmkit.model.contracts",
    "ModelOutput": "vlmkit.model.contracts",
    "BuildOptions": "vlmkit.model.contracts",
    "single_stream": "vlmkit.model.contracts",
    "ComponentConfig": "vlmkit.model.config",
    "ModelConfig": "vlmkit.model.config",
    "LanguageModel": "vlmkit.model.llm",
    # data
    "Sample": "vlmkit.data.samples",
    "Transform": "vlmkit.data.samples",
    "VisionLanguageDataset": "vlmkit.data.samples",
    "ChatTemplate": "vlmkit.data.templates",
    "Turn": "vlmkit.data.templates",
    # errors
    "VlmkitError": "vlmkit.errors",
    "ConfigError": "vlmkit.errors",
    "DataError": "vlmkit.errors",
    "CheckpointError": "vlmkit.errors",
    "Incompatible": "vlmkit.errors",
    "IncompatibleComponentsError": "vlmkit.errors",
    # checkpoint formats and their part converters
    "CheckpointFormat": "vlmkit.interop.formats",
    "ImportOptions": "vlmkit.interop.formats",
    "WeightFiles": "vlmkit.interop.weights",
    "MemoryWeights": "vlmkit.interop.weights",
    "LlavaVisionConversion": "vlmkit.interop.llava_conversion",
    "LlavaProjectorConversion": "vlmkit.interop.llava_conversion",
    "RepoTowerConversion": "vlmkit.interop.llava_conversion",
    "RepoProjectorConversion": "vlmkit.interop.llava_conversion",
    "RepoModuleConversion": "vlmkit.interop.llava_conversion",
    # building and loading models (in a plugin's tests and commands)
    "build_model": "vlmkit.model.assembly",
    "build_component": "vlmkit.model.assembly",
    "load_checkpoint": "vlmkit.model.checkpoint",
    "save_checkpoint": "vlmkit.model.checkpoint",
    # long work shows progress
    "ProgressReporter": "vlmkit.progress",
}

__all__ = ["API_VERSION", "STABLE", *STABLE]


def __getattr__(name: str) -> Any:
    if name in STABLE:
        value = getattr(import_module(STABLE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"vlmkit.plugin_api has no '{name}'; the stable names are listed in vlmkit.plugin_api.STABLE")


def __dir__() -> list[str]:
    return sorted(__all__)
