"""vlmkit core: contracts, plugin registry, assembly, splicing, templates, checkpoints.

``import vlmkit`` is light: it imports neither torch nor any plugin. The heavier names below are
loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import VlmkitError
from .registry import list_components, register, registry

__all__ = [
    "VlmkitError", "registry", "register", "list_components", "create_model", "load_model", "build_model",
    "save_checkpoint", "load_checkpoint", "ModelConfig", "ComponentConfig",
]

_LAZY = {
    "build_model": "vlmkit.assembly",
    "save_checkpoint": "vlmkit.checkpoint",
    "load_checkpoint": "vlmkit.checkpoint",
    "ModelConfig": "vlmkit.config",
    "ComponentConfig": "vlmkit.config",
    "VisionLanguageModel": "vlmkit.model",
    "VisionEncoder": "vlmkit.contracts",
    "Connector": "vlmkit.contracts",
    "Objective": "vlmkit.contracts",
    "VisualFeatures": "vlmkit.contracts",
    "StreamSpec": "vlmkit.contracts",
    "ImageView": "vlmkit.contracts",
    "hookimpl": "vlmkit.hooks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlmkit' has no attribute '{name}'")


def create_model(encoder: str | list[str] | None = None, connector: str | None = None, llm: str = "tiny-llama",
                 fusion: list[str] | None = None, objectives: list[str] | None = None, meta: bool = False, **_: Any):
    """timm-style shortcut: ``vlmkit.create_model("my-encoder", connector="my-projector", llm="path/to/vicuna")``.

    ``connector`` names the final projector; core has no default (it names no plugin), so leaving it out
    is a ConfigError that lists the installed connectors.
    """
    from .assembly import build_model
    from .config import ComponentConfig, ModelConfig

    encs = [encoder] if isinstance(encoder, str) else list(encoder or [])
    cfg = ModelConfig(encoders=[ComponentConfig(e) for e in encs], fusion=[ComponentConfig(f) for f in fusion or []],
                      connector=ComponentConfig(connector) if connector else None, llm=ComponentConfig(llm),
                      objectives=[ComponentConfig(o) for o in (objectives or ["lm"])])
    return build_model(cfg, meta=meta)


def load_model(directory: str, device: str = "cpu"):
    from .checkpoint import load_checkpoint

    return load_checkpoint(directory, device=device)
