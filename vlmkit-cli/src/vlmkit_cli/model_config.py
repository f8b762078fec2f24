"""Turn CLI flags (preset, config file, --encoder, --set ...) into a ModelConfig. Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

DEFAULT_PRESET = "tiny"
#: the connector of a CLI-built model that names none (core has no default: it names no plugin)
DEFAULT_CONNECTOR = "mlp2x_gelu"


def with_default_connector(cfg):
    """``cfg`` with the CLI's default connector when it has none (a config file or --encoder flags)."""
    from vlmkit.config import ComponentConfig

    if cfg.connector is None:
        cfg.connector = ComponentConfig(DEFAULT_CONNECTOR)
    return cfg


def load_preset(kind: str, name: str) -> dict[str, Any]:
    """Presets are registered data (a dict, or a callable returning one)."""
    import copy

    from vlmkit.registry import registry

    obj = registry.load(kind, name)
    data = obj() if callable(obj) else obj
    return copy.deepcopy(data)


def resolve_model_config(*, preset: str | None = None, config: Path | None = None,
                         encoders: Sequence[str] | None = None, fusion: Sequence[str] | None = None,
                         connector: str | None = None, llm: str | None = None,
                         objectives: Sequence[str] | None = None, sets: Sequence[str] | None = None):
    from vlmkit.config import ComponentConfig, ModelConfig, load_yaml
    from vlmkit.errors import ConfigError

    if preset and config:
        raise ConfigError("give --preset or --config, not both")
    if config is not None:
        data = load_yaml(config)
        if isinstance(data, dict) and "model" in data and "encoders" not in data:
            data = data["model"]  # a recipe file: use its model section
        cfg = ModelConfig.from_dict(data, where=str(config))
    elif preset is not None:
        cfg = ModelConfig.from_dict(load_preset("preset", preset), where=f"preset '{preset}'")
    elif encoders:
        cfg = ModelConfig()
    else:
        cfg = ModelConfig.from_dict(load_preset("preset", DEFAULT_PRESET), where=f"preset '{DEFAULT_PRESET}'")
    if encoders:
        cfg.encoders = [ComponentConfig(e) for e in encoders]
    if fusion:
        cfg.fusion = [ComponentConfig(f) for f in fusion]
    if connector:
        cfg.connector = ComponentConfig(connector)
    with_default_connector(cfg)
    if llm:
        cfg.llm = ComponentConfig(llm)
    if objectives:
        names = [o.name for o in cfg.objectives]
        for o in objectives:
            if o not in names:
                cfg.objectives.append(ComponentConfig(o))
                names.append(o)
    for s in sets or []:
        cfg.set(s)
    return cfg
