"""Turn CLI flags (preset, config file, --encoder, --set ...) into a ModelConfig. Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

#: the CLI's defaults, qualified by the distribution that ships each: a plugin reusing the name changes nothing
DEFAULT_PRESET = "vlmkit-encoders:tiny"
#: the connector of a CLI-built model that names none (core has no default: it names no plugin)
DEFAULT_CONNECTOR = "vlmkit-fusion:mlp2x_gelu"
#: the CLI's defaults, as (kind, name, the sibling distribution that ships it)
DEFAULT_PRESET_NEED = ("preset", DEFAULT_PRESET, "vlmkit-encoders")
DEFAULT_CONNECTOR_NEED = ("connector", DEFAULT_CONNECTOR, "vlmkit-fusion")


def with_default_connector(cfg):
    """``cfg`` with the CLI's default connector when it has none (a config file or --encoder flags)."""
    from vlmkit.model.config import ComponentConfig

    from .siblings import require_components

    if cfg.connector is None:
        require_components("a model without a connector", DEFAULT_CONNECTOR_NEED)
        cfg.connector = ComponentConfig(DEFAULT_CONNECTOR)
    return cfg


def resolve_model_config(*, preset: str | None = None, config: Path | None = None,
                         encoders: Sequence[str] | None = None, fusion: Sequence[str] | None = None,
                         connector: str | None = None, llm: str | None = None,
                         objectives: Sequence[str] | None = None, sets: Sequence[str] | None = None,
                         tiling: str | None = None):
    from vlmkit.errors import ConfigError
    from vlmkit.model.config import ComponentConfig, ModelConfig, load_yaml
    from vlmkit.plugins.presets import load_preset

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
        from .siblings import require_components

        require_components("the default model", DEFAULT_PRESET_NEED)
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
    if tiling:  # --tiling PINPOINTS: AnyRes with LLaVA-NeXT's merge; --set tiling.KEY=VALUE changes the rest
        from vlmkit.model.tiling import Tiling

        kept = cfg.tiling.to_dict() if cfg.tiling is not None else {}  # a preset's merge and cap stay
        cfg.tiling = Tiling.from_dict({**kept, "pinpoints": _pinpoints_option(tiling)}, "--tiling")
    for s in sets or []:
        cfg.set(s)
    return cfg


def _pinpoints_option(text: str):
    """``(1x1),...,(3x3)`` (tiles) as is, or ``336x672,672x336`` (height x width in px) as a list."""
    if "..." in text:
        return text
    from vlmkit.errors import ConfigError

    out = []
    for part in text.split(","):
        h, _, w = part.strip().partition("x")
        if not (h.isdigit() and w.isdigit()):
            raise ConfigError(f"--tiling: '{part.strip()}' is not HEIGHTxWIDTH in pixels (e.g. 336x672), and "
                              f"'{text}' is not a range of tiles like '(1x1),...,(3x3)'")
        out.append([int(h), int(w)])
    return out
