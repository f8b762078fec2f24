"""vlmkit core: contracts, plugin registry, assembly, splicing, templates, checkpoints.

``import vlmkit`` is light: it imports neither torch nor any plugin. The heavier names below are
loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from vlmkit import moved_modules
from vlmkit.errors import VlmkitError
from vlmkit.plugins.registry import list_components, register, registry

__all__ = [
    "VlmkitError", "registry", "register", "list_components", "create_model", "load_model", "build_model",
    "save_checkpoint", "load_checkpoint", "ModelConfig", "ComponentConfig",
]

moved_modules.install()  # the flat layout's import paths (vlmkit.contracts, ...) keep working

_LAZY = {
    "build_model": "vlmkit.model.assembly",
    "save_checkpoint": "vlmkit.model.checkpoint",
    "load_checkpoint": "vlmkit.model.checkpoint",
    "ModelConfig": "vlmkit.model.config",
    "ComponentConfig": "vlmkit.model.config",
    "VisionLanguageModel": "vlmkit.model.vlm",
    "VisionEncoder": "vlmkit.model.contracts",
    "Connector": "vlmkit.model.contracts",
    "Objective": "vlmkit.model.contracts",
    "VisualFeatures": "vlmkit.model.contracts",
    "StreamSpec": "vlmkit.model.contracts",
    "ImageView": "vlmkit.model.contracts",
    "hookimpl": "vlmkit.plugins.hooks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlmkit' has no attribute '{name}'")


def create_model(encoder: str | list[str] | None = None, connector: str | None = None, llm: str = "tiny-llama",
                 fusion: list[str] | None = None, objectives: list[str] | None = None, meta: bool = False, *,
                 encoder_args: dict[str, Any] | list[dict[str, Any]] | None = None,
                 connector_args: dict[str, Any] | None = None, llm_args: dict[str, Any] | None = None,
                 fusion_args: list[dict[str, Any]] | None = None, objective_args: dict[str, dict[str, Any]] | None = None,
                 max_length: int | None = None):
    """timm-style shortcut: ``vlmkit.create_model("my-encoder", connector="my-projector", llm="path/to/vicuna")``.

    ``connector`` names the final projector; core has no default (it names no plugin), so leaving it out
    is a ConfigError that lists the installed connectors. Component arguments: ``encoder_args`` (a dict, or
    one per encoder), ``connector_args``, ``llm_args``, ``fusion_args`` (one per fusion module) and
    ``objective_args`` (by objective name); they are validated like a config's. Unknown keywords are a
    TypeError, as for any Python function.
    """
    from vlmkit.errors import ConfigError
    from vlmkit.model.assembly import build_model
    from vlmkit.model.config import ComponentConfig, ModelConfig

    def per_item(args: Any, n: int, what: str) -> list[dict[str, Any]]:
        if args is None:
            return [{} for _ in range(n)]
        if isinstance(args, dict):
            args = [args] * n if n == 1 else None
        if not isinstance(args, list) or len(args) != n:
            raise ConfigError(f"create_model: {what} needs one dict per component ({n})")
        return [dict(a) for a in args]

    encs = [encoder] if isinstance(encoder, str) else list(encoder or [])
    fus = list(fusion or [])
    objs = list(objectives or ["lm"])
    unknown = sorted(set(objective_args or {}) - set(objs))
    if unknown:
        raise ConfigError(f"create_model: objective_args names {', '.join(unknown)}, not among objectives {objs}")
    cfg = ModelConfig(
        encoders=[ComponentConfig(e, a) for e, a in zip(encs, per_item(encoder_args, len(encs), "encoder_args"))],
        fusion=[ComponentConfig(f, a) for f, a in zip(fus, per_item(fusion_args, len(fus), "fusion_args"))],
        connector=ComponentConfig(connector, dict(connector_args or {})) if connector else None,
        llm=ComponentConfig(llm, dict(llm_args or {})),
        objectives=[ComponentConfig(o, dict((objective_args or {}).get(o, {}))) for o in objs])
    if max_length is not None:
        from vlmkit.model.config import check_max_length

        cfg.max_length = check_max_length(max_length, "create_model: max_length")
    return build_model(cfg, meta=meta)


def load_model(directory: str, device: str = "cpu", trust_remote_code: bool = False):
    """A saved checkpoint. Its LLM's own Python code runs only with ``trust_remote_code=True`` (a checkpoint
    cannot turn it on)."""
    from vlmkit.model.checkpoint import load_checkpoint

    return load_checkpoint(directory, device=device, trust_remote_code=trust_remote_code)
