"""Assembly: a ``ModelConfig`` becomes a ``VisionLanguageModel`` through the registry.

Compatibility is checked here, at build time, never inside ``forward``: every connector receives the
specs of what feeds it and raises ``Incompatible``; the assembler adds both components' names. The
final stream must be one stream of the LLM's width.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any

import torch

from vlmkit.errors import (
    ComponentBuildError,
    ConfigError,
    Incompatible,
    IncompatibleComponentsError,
    MissingPluginError,
    UnknownComponentError,
    VlmkitError,
)
from vlmkit.model.build_context import legacy_pretrained_switch
from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.model.contracts import BuildOptions, Connector, Objective, ObjectiveContext, StreamSpec, VisionEncoder
from vlmkit.model.llm import LanguageModel, llm_from_reference
from vlmkit.model.memory_budget import check_fits
from vlmkit.model.tiling import Tiling
from vlmkit.model.vlm import VisionLanguageModel
from vlmkit.plugins.arguments import BUILD_PARAMETER, takes_build_options, validate_args
from vlmkit.plugins.hooks import get_plugin_manager
from vlmkit.plugins.registry import registry


def _label(kind: str, cfg: ComponentConfig) -> str:
    return f"{kind} '{cfg.name}'"


#: the distributions of the components being constructed, innermost first: a wrapper that builds another
#: component by name (a multi-scale encoder around "clip") gets its own distribution's component when that
#: name is ambiguous (provenance, see registry.resolve)
_BUILDING_FROM: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("vlmkit_building_from", default=())


def _construct(kind: str, cfg: ComponentConfig, context: dict[str, Any], installed_from: dict[str, str] | None = None,
               build: BuildOptions | None = None) -> Any:
    recorded = (installed_from or {}).get(cfg.name)
    prefer = ((recorded,) if recorded else ()) + _BUILDING_FROM.get()
    try:
        entry = registry.resolve(kind, cfg.name, prefer)
        factory = entry.load()
    except UnknownComponentError:
        if recorded:
            raise MissingPluginError(kind, cfg.name, recorded) from None
        raise
    validate_args(_label(kind, cfg), factory, cfg.args, context=getattr(factory, "context_parameters", ()) or tuple(context))
    build = build or BuildOptions()
    if takes_build_options(factory):
        context = {**context, BUILD_PARAMETER: build}
    token = _BUILDING_FROM.set((entry.distribution, *_BUILDING_FROM.get()))
    try:
        with legacy_pretrained_switch(build.pretrained):  # for plugins that still read load_pretrained()
            obj = factory(**context, **cfg.args)
    except (VlmkitError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's own failure, named with where it comes from
        raise ComponentBuildError(_label(kind, cfg), f"{entry.distribution} {entry.version}", exc) from exc
    finally:
        _BUILDING_FROM.reset(token)
    if hasattr(obj, "component_name"):
        obj.component_name = cfg.name
    return obj


def check_shared_views(config: ModelConfig, encoders: list[VisionEncoder]) -> None:
    """Encoders that name the same view share one preprocessed tensor, so they must agree on it exactly."""
    import dataclasses

    seen: dict[str, tuple[str, Any]] = {}
    for cfg, enc in zip(config.encoders, encoders):
        view = enc.view
        if view.name not in seen:
            seen[view.name] = (cfg.name, view)
            continue
        first_name, first = seen[view.name]
        diff = [f.name for f in dataclasses.fields(view) if getattr(view, f.name) != getattr(first, f.name)]
        if diff:
            f = diff[0]
            raise IncompatibleComponentsError(
                f"encoder '{cfg.name}'", f"encoder '{first_name}'",
                f"both read image view '{view.name}' but want different {f} ({getattr(view, f)!r} vs "
                f"{getattr(first, f)!r}); give one of them its own view name (its 'view' argument)")


def build_component(kind: str, spec: "str | dict[str, Any] | ComponentConfig", build: BuildOptions | None = None,
                    **context: Any) -> Any:
    """Build one registered component (for wrappers that nest another, e.g. a multi-scale encoder).

    ``spec`` is a name, ``{"name": ..., "args": {...}}`` or a ComponentConfig; ``build`` the wrapper's own
    build options (pass them on); ``context`` holds the build-time context parameters of that kind
    (``inputs``/``d_llm`` for connectors, ``context`` for objectives).
    """
    cfg = ComponentConfig.parse(spec, kind)
    return _construct(kind, cfg, context, build=build)


def build_llm(cfg: ComponentConfig, installed_from: dict[str, str] | None = None,
              build: BuildOptions | None = None) -> LanguageModel:
    name, extra = llm_from_reference(cfg.name)
    resolved = ComponentConfig(name, {**extra, **cfg.args})
    llm = _construct("llm", resolved, {}, installed_from, build)
    if not isinstance(llm, LanguageModel):
        raise ConfigError(f"llm '{cfg.name}' did not produce a vlmkit.model.llm.LanguageModel")
    llm.component_name = cfg.name
    return llm


def build_model(config: ModelConfig, *, meta: bool = False, pretrained: bool = True,
                installed_from: dict[str, str] | None = None) -> VisionLanguageModel:
    """Build a model. ``meta`` builds on the meta device (exact parameter counts, no memory);
    ``pretrained=False`` builds architectures from configs without reading weight files."""
    build = BuildOptions(pretrained=pretrained and not meta, meta=meta)
    if not meta:
        check_fits(lambda: build_model(config, meta=True, installed_from=installed_from), _named_parts)
    with torch.device("meta") if meta else contextlib.nullcontext():
        return _assemble(config, installed_from, build)


def _named_parts(model: VisionLanguageModel) -> dict[str, torch.nn.Module]:
    """The model's components by their config labels, for the memory estimate."""
    parts: dict[str, torch.nn.Module] = {}
    for cfg, enc in zip(model.config.encoders, model.encoders):
        parts[f"encoder '{cfg.name}'"] = enc
    for cfg, con in zip(model.config.fusion + [model.config.connector], model.connectors):
        parts[f"connector '{cfg.name}'"] = con
    parts[f"llm '{model.config.llm.name}'"] = model.llm
    for name, obj in model.objectives.items():
        parts[f"objective '{name}'"] = obj
    return parts


def _check_tiling(config: ModelConfig, encoders: list[VisionEncoder], connectors: list[Connector],
                  visual: StreamSpec | None) -> Tiling | None:
    """The model's tiling with pinpoints in px, or an error naming what cannot be tiled."""
    tiling = config.tiling
    if tiling is None:
        return None
    if not encoders or visual is None:
        raise ConfigError("model.tiling: a model without encoders has no images to tile")
    tile = encoders[0].view.size
    tiling = tiling.resolved(tile)
    tiling.check_tile(tile)
    for cfg, enc in zip(config.encoders, encoders):
        if enc.view.resize == "native":
            raise IncompatibleComponentsError("model.tiling", f"encoder '{cfg.name}'",
                                              "its view keeps each image's own size (resize: native); tiles are "
                                              "squares of the view's size: set its resize to pad, square or resize")
    for cfg, con in zip(config.fusion + [config.require_connector()], connectors):
        if getattr(con, "needs_boxes", False):
            raise IncompatibleComponentsError("model.tiling", f"connector '{cfg.name}'",
                                              "it reads boxes in one view's pixels, and a tiled image has many crops")
    if tiling.merge != "flat":
        try:
            visual.require_grid(f"model.tiling.merge '{tiling.merge}'")
        except Incompatible as exc:
            raise IncompatibleComponentsError("model.tiling", f"the output of '{visual.source}'", str(exc)) from None
    return tiling


def _assemble(config: ModelConfig, installed_from: dict[str, str] | None, build: BuildOptions) -> VisionLanguageModel:
    connector = config.require_connector()  # before anything is built: core has no default connector
    llm = build_llm(config.llm, installed_from, build)
    d_llm = llm.hidden_size

    encoders: list[VisionEncoder] = []
    for cfg in config.encoders:
        enc = _construct("encoder", cfg, {}, installed_from, build)
        if not isinstance(enc, VisionEncoder):
            raise ConfigError(f"encoder '{cfg.name}' is not a vlmkit VisionEncoder")
        encoders.append(enc)
    check_shared_views(config, encoders)
    specs: list[StreamSpec] = [e.spec() for e in encoders]
    encoder_specs = tuple(specs)

    connectors: list[Connector] = []
    chain = [("fusion", c) for c in config.fusion] + [("connector", connector)]
    for kind, cfg in chain:
        producers = " + ".join(f"'{s.source}'" for s in specs) or "no encoder"
        try:
            con = _construct("connector", cfg, {"inputs": list(specs), "d_llm": d_llm}, installed_from, build)
        except Incompatible as exc:
            raise IncompatibleComponentsError(f"{kind} '{cfg.name}'", f"the output of {producers}", str(exc)) from None
        connectors.append(con)
        specs = con.output_specs()

    if len(specs) != 1:
        raise IncompatibleComponentsError(f"connector '{connector.name}'", f"llm '{config.llm.name}'",
                                          f"number of streams: expected 1, got {len(specs)}")
    if specs[0].dim != d_llm:
        raise IncompatibleComponentsError(f"connector '{connector.name}'", f"llm '{config.llm.name}'",
                                          f"width: connector gives {specs[0].dim}, llm hidden size is {d_llm}")
    visual = specs[0] if encoders else None
    tiling = _check_tiling(config, encoders, connectors, visual)

    objectives: dict[str, Objective] = {}
    weights: dict[str, float] = {}
    context = ObjectiveContext(d_llm=d_llm, visual=visual, encoders=encoder_specs, tiled=tiling is not None)
    for cfg in config.objectives:
        key = cfg.name.split(":")[-1]
        if key in objectives:
            raise ConfigError(f"objective '{cfg.name}' is listed twice")
        try:
            obj = _construct("objective", cfg, {"context": context}, installed_from, build)
        except Incompatible as exc:
            src = " + ".join(f"'{s.source}'" for s in encoder_specs) or "no encoder"
            raise IncompatibleComponentsError(f"objective '{cfg.name}'", f"encoder {src}", str(exc)) from None
        objectives[key] = obj
        weights[key] = cfg.weight

    pm = get_plugin_manager()
    spec_map = {f"encoder:{e.component_name}": [e.spec()] for e in encoders}
    for c in connectors:
        spec_map[f"connector:{c.component_name}"] = c.output_specs()
    problems = [p for res in pm.hook.vlmkit_check_compatibility(config=config, specs=spec_map) if res for p in res]
    if problems:
        raise IncompatibleComponentsError("model config", "a compatibility check", "; ".join(problems))

    model = VisionLanguageModel(config, encoders, connectors, llm, objectives, weights, visual, tiling)
    pm.hook.vlmkit_model_built(model=model, config=config)
    return model
