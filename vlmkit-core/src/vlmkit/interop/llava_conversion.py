"""The conversion contracts between vlmkit components and the parts of a released LLaVA: transformers' HF
Llava (``Llava*Conversion``, below) and the LLaVA codebase's own format (``Repo*Conversion``, at the end).

``vlmkit.interop.hf_llava`` converts whole checkpoints (``import_hf`` / ``export_hf``). It owns everything that is
the same for every Llava: reading safetensors, the language model and its head, the image token, the
order of the work and the error reports. It knows no encoder and no connector. The two parts of an HF
Llava that are vision components are converted by the plugins that own the matching vlmkit component:

* HF Llava's ``vision_tower`` (chosen by ``vision_config.model_type``) <-> one vlmkit encoder:
  a ``LlavaVisionConversion``;
* HF Llava's ``multi_modal_projector`` <-> vlmkit's final connector: a ``LlavaProjectorConversion``.

A plugin returns instances from the ``vlmkit_llava_converters`` hook (``vlmkit.hooks``); core finds them
through pluggy, so nothing here names a plugin. Weights meet in a *canonical* naming per part: each
converter maps the tensor names of its HF part (relative to the part, in every HF layout it knows)
and the parameter names of its vlmkit component (relative to the component) to the same canonical
names; core adds the ``vision.`` / ``projector.`` prefix and pairs the two sides.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vlmkit.errors import ConfigError

if TYPE_CHECKING:
    import pluggy

    from vlmkit.model.config import ComponentConfig

__all__ = ["LlavaPartConversion", "LlavaVisionConversion", "LlavaProjectorConversion", "LlavaConverters",
           "llava_converters", "RepoTowerConversion", "RepoProjectorConversion", "RepoModuleConversion"]


class LlavaPartConversion(ABC):
    """Converts one part of an HF Llava to and from one vlmkit component.

    Messages returned or raised by a converter name the HF config field (on import) or the property of
    the built component (on export) that does not fit; core adds which part they concern.
    """

    #: bare registry names of the vlmkit components this converter reads and writes (export picks the
    #: converter whose ``components`` hold the built component's name)
    components: ClassVar[tuple[str, ...]] = ()
    #: one line on what the HF part must look like, used when no converter claims a component
    description: ClassVar[str] = ""
    #: the transformers model types (``llava``, ``vipllava``) whose part this converter reads and writes
    families: ClassVar[tuple[str, ...]] = ("llava",)

    @abstractmethod
    def component_config(self, hf_config: Any) -> "ComponentConfig":
        """The vlmkit component equal to this part of ``hf_config`` (a transformers ``LlavaConfig``).

        Raise ``ConfigError`` starting with the HF field that cannot be mapped, e.g.
        ``"vision_feature_layer: a list of layers ... is not supported"``.
        """

    @abstractmethod
    def canonical_from_hf(self, name: str) -> str | None:
        """The canonical name of an HF tensor of this part (``name`` is relative to the part, e.g. without
        ``vision_tower.``), or None when it is no tensor of this part."""

    @abstractmethod
    def canonical_from_vlmkit(self, name: str) -> str | None:
        """The canonical name of a persistent tensor of the vlmkit component (``name`` is relative to the
        component, e.g. without ``encoders.0.``), or None when it has no place in HF Llava."""

    def problems(self, component: Any) -> list[str]:
        """Why this built component cannot be written as the HF part (empty: it can)."""
        return []

    @abstractmethod
    def hf_config(self, component: Any) -> dict[str, Any]:
        """The ``LlavaConfig`` fields this part decides on export (only called when ``problems`` is empty)."""


class LlavaVisionConversion(LlavaPartConversion):
    """HF Llava's ``vision_tower`` (+ the feature layer and selection it reads) <-> a vlmkit encoder."""

    #: the ``vision_config.model_type`` values this converter imports
    model_types: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def image_processor(self, component: Any) -> Any:
        """A transformers image processor that prepares pixels for this encoder as HF expects them."""

    def processor_args(self, component: Any) -> dict[str, Any]:
        """Extra ``LlavaProcessor`` arguments (e.g. ``patch_size``, ``num_additional_image_tokens``)."""
        return {}


class LlavaProjectorConversion(LlavaPartConversion):
    """HF Llava's ``multi_modal_projector`` <-> the vlmkit model's final connector."""


#: the plugin packages of the vlmkit project that ship converters, named in errors as a way out
VISION_CONVERTER_PACKAGE = "vlmkit-encoders"
PROJECTOR_CONVERTER_PACKAGE = "vlmkit-fusion"


class LlavaConverters:
    """The converters that installed plugins provide, split by part."""

    def __init__(self, vision: list[LlavaVisionConversion], projector: list[LlavaProjectorConversion]):
        self.vision, self.projector = vision, projector

    # -- import: HF config -> converter ------------------------------------------------------------
    def for_vision_config(self, hf_config: Any) -> tuple[LlavaVisionConversion, "ComponentConfig"]:
        model_type = getattr(hf_config.vision_config, "model_type", None)
        family = getattr(hf_config, "model_type", "llava")
        candidates = [c for c in self.vision if model_type in c.model_types and family in c.families]
        if not candidates:
            known = sorted({t for c in self.vision for t in c.model_types})
            have = f"installed converters read {', '.join(repr(t) for t in known)}" if known else \
                "no vision converter is installed"
            raise ConfigError(f"vision_config.model_type '{model_type}': no installed plugin converts this HF vision "
                              f"tower to a vlmkit encoder ({have}); install a vlmkit plugin package that provides "
                              f"one through the vlmkit_llava_converters hook, e.g. {VISION_CONVERTER_PACKAGE}")
        return _first_that_maps(candidates, hf_config)

    def for_projector_config(self, hf_config: Any) -> tuple[LlavaProjectorConversion, "ComponentConfig"]:
        family = getattr(hf_config, "model_type", "llava")
        candidates = [c for c in self.projector if family in c.families]
        if not candidates:
            raise ConfigError(f"multi_modal_projector: no installed plugin converts {_owner(family)} projector to a vlmkit "
                              "connector; install a vlmkit plugin package that provides one through the "
                              f"vlmkit_llava_converters hook, e.g. {PROJECTOR_CONVERTER_PACKAGE}")
        return _first_that_maps(candidates, hf_config)

    # -- export: built component -> converter ------------------------------------------------------
    def for_encoder(self, name: str, family: str = "llava") -> LlavaVisionConversion | None:
        return next((c for c in self.vision if name in c.components and family in c.families), None)

    def for_connector(self, name: str, family: str = "llava") -> LlavaProjectorConversion | None:
        return next((c for c in self.projector if name in c.components and family in c.families), None)

    def unclaimed_encoder(self, name: str, family: str = "llava") -> str:
        names = [n for c in self.vision if family in c.families for n in c.components]
        if not names:
            return (f"no installed plugin converts an encoder to HF Llava's vision tower (install "
                    f"{VISION_CONVERTER_PACKAGE} or another plugin with a vision converter)")
        return f"HF Llava export supports only the {', '.join(repr(n) for n in names)} encoder{'s' * (len(names) > 1)}"

    def unclaimed_connector(self, name: str, family: str = "llava") -> str:
        candidates = [c for c in self.projector if family in c.families]
        if not candidates:
            return (f"no installed plugin converts a connector to {_owner(family)} projector (install "
                    f"{PROJECTOR_CONVERTER_PACKAGE} or another plugin with a projector converter)")
        return f"{_owner(family)} projector is " + " or ".join(c.description or "/".join(c.components) for c in candidates)


def _owner(family: str) -> str:
    return "HF Llava's" if family == "llava" else f"HF {family}'s"


def _first_that_maps(candidates: list[Any], hf_config: Any) -> tuple[Any, "ComponentConfig"]:
    """The first converter that maps ``hf_config``; when none does, its ConfigError (or all of them)."""
    errors: list[str] = []
    for conv in candidates:
        try:
            return conv, conv.component_config(hf_config)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError("; ".join(dict.fromkeys(errors)))


def hook_converters(plugin_manager: "pluggy.PluginManager | None" = None) -> list[Any]:
    """Every part converter that the ``vlmkit_llava_converters`` hook implementations return, of both
    formats; anything else is a TypeError naming its class.

    ``plugin_manager`` defaults to vlmkit's (entry-point hooks plus run-time registrations).
    """
    from vlmkit.plugins.hooks import get_plugin_manager

    pm = plugin_manager if plugin_manager is not None else get_plugin_manager()
    kinds = (LlavaVisionConversion, LlavaProjectorConversion, RepoTowerConversion, RepoProjectorConversion,
             RepoModuleConversion)
    out = []
    for result in pm.hook.vlmkit_llava_converters():
        for conv in result or []:
            if not isinstance(conv, kinds):
                raise TypeError(f"a vlmkit_llava_converters hook returned {type(conv).__module__}."
                                f"{type(conv).__qualname__}, not a {', '.join(k.__name__ for k in kinds)}")
            out.append(conv)
    return out


def llava_converters(plugin_manager: "pluggy.PluginManager | None" = None) -> LlavaConverters:
    """The converters of transformers' Llava parts, from every ``vlmkit_llava_converters`` implementation."""
    convs = hook_converters(plugin_manager)
    return LlavaConverters([c for c in convs if isinstance(c, LlavaVisionConversion)],
                           [c for c in convs if isinstance(c, LlavaProjectorConversion)])


# -- the LLaVA codebase's part contracts (vlmkit.interop.llava_repo) ----------------------------------------
class _RepoPart(ABC):
    #: bare registry names of the vlmkit components this converter writes on export
    components: ClassVar[tuple[str, ...]] = ()
    #: the config.json fields this converter reads (shown when a folder's format cannot be told)
    config_fields: ClassVar[tuple[str, ...]] = ()
    #: the seed system(s) whose checkpoints use this part, e.g. "LLaVA-1.5"
    variant: ClassVar[str] = ""
    #: one line: which configs ``claims`` accepts (shown by ``vlmkit formats``)
    detection: ClassVar[str] = ""
    #: converters are asked in decreasing priority, so a narrow rule (``s2: true``) beats a broad one
    priority: ClassVar[int] = 0

    @abstractmethod
    def claims(self, config: dict[str, Any]) -> bool:
        """Whether this converter reads the part of a checkpoint with this ``config.json``."""

    @abstractmethod
    def checkpoint_name(self, name: str) -> str | None:
        """The vlmkit name (relative to the component) of a checkpoint tensor, given relative to the
        part's prefix (``model.vision_tower.`` or ``model.mm_projector.``); None when it is not one."""

    @abstractmethod
    def to_checkpoint_name(self, name: str, component: Any) -> str | None:
        """The inverse of ``checkpoint_name`` for export (``name`` relative to ``component``); None when the
        tensor has no place."""

    def problems(self, component: Any) -> list[str]:
        """Why this built component cannot be written in the LLaVA codebase's format (empty: it can)."""
        return []


class RepoTowerConversion(_RepoPart):
    """``mm_vision_tower`` (+ its select layer, S2 scales ...) and its weights <-> one vlmkit encoder."""

    @abstractmethod
    def claims(self, config: dict[str, Any], tower_config: dict[str, Any] | None = None) -> bool:
        """Whether this converter reads the tower of a checkpoint with this ``config.json``; ``tower_config``
        is the tower folder's ``config.json`` when the folder was found (ConvLLaVA names its tower by a
        bare path, so only the folder tells a ConvNeXt from a CLIP)."""

    #: file names in a tower folder to read first (e.g. an open_clip file beside an HF one)
    tower_files: ClassVar[tuple[str, ...]] = ()
    #: the folder export writes the tower to, inside OUT; named so that the forks' builders, which choose
    #: the tower class by substrings of ``mm_vision_tower`` ('clip', 'clip-vit', 'convnext'), pick this one
    tower_folder: ClassVar[str] = "vision_tower"

    def tower_reference(self, config: dict[str, Any]) -> str:
        """The hub id or path the original code loads the tower from."""
        return str(config.get("mm_vision_tower"))

    @abstractmethod
    def component_config(self, config: dict[str, Any], tower: Path | None, resize: str) -> ComponentConfig:
        """The vlmkit encoder for this config. ``tower`` is the tower's local folder (None when none was
        found: raise ConfigError if the architecture cannot be known without it)."""

    def tower_name(self, name: str) -> str | None:
        """The vlmkit name of a tensor in the tower folder's own weights; None when it is not one."""
        return None

    def unused(self, name: str) -> bool:
        """Whether a stored tower tensor (relative to ``model.vision_tower.``) is one the encoder never uses
        and does not hold (SigLIP's pooling head): skipped, neither copied nor an error."""
        return False

    @abstractmethod
    def repo_config(self, component: Any) -> dict[str, Any]:
        """The config fields this tower decides on export (``mm_hidden_size``, select layer ...)."""

    @abstractmethod
    def save_tower(self, component: Any, folder: Path) -> str:
        """Write the tower as the original loads it (config, weights, image processor) into ``folder``;
        return the ``mm_vision_tower`` value that makes the original load it."""

    def named_reference(self, component: Any) -> str | None:
        """The ``mm_vision_tower`` name for a loader that picks the tower class by name and takes every existing
        path for CLIP (LLaVA-NeXT's builder): a hub id of this tower's kind, whose architecture the loader builds
        before the checkpoint's own tower weights replace its weights. None: a path does (the default)."""
        return None


class RepoProjectorConversion(_RepoPart):
    """``mm_projector_type`` and ``model.mm_projector.*`` <-> the vlmkit model's connector."""

    @abstractmethod
    def component_config(self, config: dict[str, Any]) -> ComponentConfig:
        """The vlmkit connector for this config."""

    @abstractmethod
    def repo_config(self, component: Any) -> dict[str, Any]:
        """The config fields this projector decides on export (``mm_projector_type``)."""


class RepoModuleConversion(_RepoPart):
    """A module a fork adds under ``model.<prefix>.*`` (Ross's ``mm_inv_projector`` denoiser) <-> a vlmkit
    objective, whose trainable part it becomes. ``components`` names the objectives it writes back."""

    #: the attribute under ``model.`` that holds the module, e.g. ``mm_inv_projector``
    prefix: ClassVar[str]
    #: other attributes under ``model.`` that the fork saves beside the module and that belong to the same
    #: objective as files rather than trained weights (Ross's ZeRO-3 save also writes its frozen VAE teacher,
    #: ``model.pixel_decoder.*``); ``place_companion`` turns each into files of the vlmkit checkpoint
    companions: ClassVar[tuple[str, ...]] = ()
    #: the fork's loader takes the tower's weights from the checkpoint (Ross builds its model on the meta
    #: device and never reloads the tower's folder), so exports write them inside too
    tower_in_checkpoint: ClassVar[bool] = False
    #: LLM model_type -> (``architectures`` entry, ``model_type``) that the fork saves a model with it as
    llm_classes: ClassVar[dict[str, tuple[str, str]]] = {}

    @abstractmethod
    def objective_config(self, config: dict[str, Any], src: Path, shapes: dict[str, tuple[int, ...]]) -> ComponentConfig:
        """The vlmkit objective for this config; ``shapes`` are the module's tensors (names relative to the
        prefix), for sizes the config does not record."""

    def recomputed(self, name: str) -> bool:
        """Whether a stored tensor of the module is recomputed by the vlmkit objective (a fixed table)."""
        return False

    def reshaped(self, name: str) -> bool:
        """Whether a stored tensor may be reshaped to the vlmkit weight of equal size (a 1x1 conv as a Linear)."""
        return False

    @abstractmethod
    def repo_config(self, component: Any) -> dict[str, Any]:
        """The config fields this module decides on export."""

    def export_tensor(self, name: str, tensor: Any, component: Any) -> Any:
        """The stored form of a vlmkit weight (``name`` relative to the objective); the inverse of reshaping."""
        return tensor

    def recomputed_tensors(self, component: Any) -> dict[str, Any]:
        """Tensors the fork stores but vlmkit recomputes (names relative to the prefix), written on export."""
        return {}

    def place_companion(self, companion: str, tensors: dict[str, Any], config: dict[str, Any], src: Path,
                        folder: Path) -> dict[str, Any]:
        """Write the companion module's ``tensors`` (names relative to ``model.<companion>.``) as files into
        ``folder``, which will sit inside the vlmkit checkpoint, and return the objective arguments that
        make the objective use them. ``{checkpoint}`` in a returned string stands for the checkpoint's
        folder (so the checkpoint can move). Only called for names listed in ``companions``."""
        raise NotImplementedError(f"{type(self).__name__} lists companions but does not place them")
