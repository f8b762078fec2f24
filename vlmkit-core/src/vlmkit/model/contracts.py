"""Typed contracts between the parts of a vision-language model.

A plugin only sees the contracts on its own side: an encoder produces ``VisualFeatures`` and
declares a ``StreamSpec`` before any forward pass; a connector consumes specs and features and
produces specs and features; an objective consumes a ``ModelOutput`` and a batch. The assembler
(``vlmkit.model.assembly``) checks at build time that each spec fits the next part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import torch
import transformers.utils
from torch import nn

from vlmkit.errors import Incompatible
from vlmkit.model.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER  # noqa: F401 - re-exported for plugins

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageView:
    """How an encoder wants its pixels. Encoders reading the same view share one preprocessed tensor.

    ``resize``: ``pad`` (expand to a mean-colour square, then resize), ``square`` (resize the short
    side, centre-crop), ``resize`` (stretch to size) or ``native`` (keep the aspect ratio, scale so the
    long side is ``size``, and snap both sides down to a multiple of ``multiple``).
    """

    name: str = "base"
    size: int = 336
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resize: str = "pad"
    multiple: int = 1

    def pixel_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of an image of this size once preprocessed for the view: the square ``size`` for
        every policy but ``native`` (long side ``size``, both sides snapped down to ``multiple``)."""
        if self.resize != "native":
            return self.size, self.size
        m = max(1, self.multiple)
        scale = self.size / max(width, height)
        return max(m, int(round(width * scale)) // m * m), max(m, int(round(height * scale)) // m * m)


@dataclass(frozen=True)
class StreamSpec:
    """A feature stream as known at build time (per image, at the configured view size)."""

    source: str
    dim: int
    num_tokens: int
    grid: tuple[int, int] | None = None
    view: ImageView | None = None
    #: named feature maps a stream also carries, as (name, channels, stride in view pixels)
    maps: tuple[tuple[str, int, int], ...] = ()

    def require_grid(self, consumer: str) -> tuple[int, int]:
        if self.grid is None:
            raise Incompatible("token grid", "tokens that form a spatial grid", f"{self.num_tokens} tokens without a grid",
                               f"{consumer} needs an encoder whose tokens form a spatial grid (patch or "
                               "feature-map tokens, without a class token)")
        return self.grid


@dataclass
class VisualFeatures:
    """One stream of visual features for a group of images of the same size.

    ``tokens`` is (B, N, C). When the tokens form a spatial grid, ``grid`` is (h, w) with h*w == N
    in row-major order. ``maps`` holds optional named (B, C, H, W) maps (e.g. every ConvNeXt stage).
    """

    tokens: torch.Tensor
    grid: tuple[int, int] | None = None
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.tokens.shape[-1]

    def as_map(self) -> torch.Tensor:
        """(B, C, h, w) view of grid tokens."""
        if self.grid is None:
            raise ValueError("these features have no grid")
        b, n, c = self.tokens.shape
        h, w = self.grid
        return self.tokens.transpose(1, 2).reshape(b, c, h, w)


@dataclass
class VisualContext:
    """Per-forward information a connector may need besides the streams, plus a place for extra tokens.

    ``boxes[view]`` is a list (one per image in the group) of (n_i, 4) xyxy boxes in that view's pixel
    coordinates. Connectors that make extra token groups (object tokens) append one list per group,
    each holding one (n_i, D_llm) tensor per image; they are placed after the image's main tokens.
    """

    image_sizes: dict[str, tuple[int, int]]
    boxes: dict[str, list[torch.Tensor]] | None = None
    extra_groups: list[list[torch.Tensor]] = field(default_factory=list)


@dataclass
class ImageSpan:
    """Where one image's tokens landed in the spliced sequence.

    ``row``: the batch row (after packing: the packed row); ``start``: the position of its first token in
    that row; ``num_main``: its main (grid) tokens, then ``num_total - num_main`` extra tokens (object
    tokens); ``grid``: the main tokens' (height, width) grid, or None.
    """

    row: int
    start: int
    num_main: int
    num_total: int
    grid: tuple[int, int] | None


@dataclass
class ModelOutput(transformers.utils.ModelOutput):
    """What a forward returns. transformers' ``ModelOutput``, so the Trainer indexes it as it indexes its
    own models' outputs (``out["loss"]``, ``out[0]``, ``out.keys()``: the fields that are set)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    #: each objective's terms by name, unweighted (``loss`` is their weighted sum)
    losses: dict[str, torch.Tensor] | None = None
    hidden_states: torch.Tensor | None = None  # last LLM layer (after final norm): (B, L, D)
    attention_mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    image_spans: list[ImageSpan] | None = None
    #: each image's projected visual tokens (num_total, D_llm) as they entered the LLM, in image order: the
    #: same order as ``image_spans`` and as the placeholders of ``batch["input_ids"]`` (row by row)
    visual_tokens: list[torch.Tensor] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()  # first: it also rebuilds an output from a mapping (accelerate's fp32 cast)
        # containers are never None, so objectives and loggers iterate them without checks
        for name, empty in (("losses", dict), ("image_spans", list), ("visual_tokens", list)):
            if getattr(self, name) is None:
                self[name] = empty()


class Component:
    """Mixin shared by every pluggable module.

    * ``component_name`` is set by the assembler to the registry name it was built from; a class may give its
      bare name as the default, for the messages it raises while it is being constructed.
    * ``named_parts()`` maps part names to parameter-name prefixes (relative to the module), used by
      recipes to unfreeze "layers>=12" or "stages>=2" without knowing the module layout.
    * ``checkpoint_args()`` returns arguments that rebuild the architecture with no downloads (e.g. a
      config instead of a hub path); weights then come from the checkpoint.
    * ``non_persistent`` lists submodule prefixes never saved (frozen teachers rebuilt from a path).
    * ``legacy_state_name()`` maps a tensor name an older release of the component saved to today's name, so
      that checkpoints outlive a change of module layout (None: not an old name).
    """

    component_name: str = ""
    #: arguments that build a tiny instance (tests, conformance kit, `--set` examples); None: derive
    tiny_args: ClassVar[dict[str, Any] | None] = None
    #: build-time context parameters of __init__ that are not user arguments
    context_parameters: ClassVar[tuple[str, ...]] = ()
    non_persistent: ClassVar[tuple[str, ...]] = ()

    def named_parts(self) -> dict[str, list[str]]:
        return {}

    def checkpoint_args(self, args: dict[str, Any]) -> dict[str, Any]:
        return dict(args)

    def legacy_state_name(self, name: str) -> str | None:
        return None


def non_persistent_prefixes(model: nn.Module) -> list[str]:
    """Submodules that components declare ``non_persistent`` (frozen teachers), as prefixes within
    ``model``: never trainable, never saved."""
    out = []
    for prefix, module in model.named_modules():
        for np_prefix in getattr(module, "non_persistent", ()):
            out.append(f"{prefix}.{np_prefix}" if prefix else np_prefix)
    return out


class VisionEncoder(Component, nn.Module):
    """Pixels of one view -> ``VisualFeatures``. Subclasses set ``view`` and ``output_dim``."""

    view: ImageView
    output_dim: int

    def num_tokens(self, height: int, width: int) -> int:
        grid = self.grid(height, width)
        if grid is None:
            raise NotImplementedError
        return grid[0] * grid[1]

    def grid(self, height: int, width: int) -> tuple[int, int] | None:
        """Token grid for an input of this size, or None when the tokens are not a grid."""
        return None

    def feature_maps(self) -> tuple[tuple[str, int, int], ...]:
        return ()

    def spec(self) -> StreamSpec:
        g = self.grid(self.view.size, self.view.size)
        return StreamSpec(self.component_name or type(self).__name__, self.output_dim,
                          self.num_tokens(self.view.size, self.view.size), g, self.view, self.feature_maps())

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:  # pragma: no cover - interface
        raise NotImplementedError


class Connector(Component, nn.Module):
    """Streams -> streams. The last connector of a model must leave one stream of width ``d_llm``.

    Constructors receive ``inputs`` (the upstream ``StreamSpec`` list) and ``d_llm`` as context and
    raise ``Incompatible`` when the inputs do not fit. ``output_specs()`` describes what comes out.
    A fusion module is a connector that takes several streams and/or boxes; a projector takes one.
    """

    context_parameters = ("inputs", "d_llm")
    #: True when the module needs boxes from the dataset (e.g. RoI object tokens)
    needs_boxes: ClassVar[bool] = False

    def output_specs(self) -> list[StreamSpec]:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, streams: list[VisualFeatures], context: VisualContext) -> list[VisualFeatures]:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class BuildOptions:
    """How a model is being built, passed explicitly to every component whose constructor declares a
    ``build`` parameter (as timm passes ``pretrained=``).

    ``pretrained``: read the weight files that ``path``-like arguments name. False when a model is rebuilt
    from a checkpoint (its weights come from there) or on the meta device: build the architecture from
    the config alone. ``meta``: parameters are created on the meta device (exact counts, no memory), so
    no tensor value may be read while constructing.
    """

    pretrained: bool = True
    meta: bool = False


@dataclass(frozen=True)
class ObjectiveContext:
    """What an objective knows at build time: the LLM width, the spec of the visual stream fed to the LLM
    (its grid and view), and the specs of every encoder's output."""

    d_llm: int
    visual: StreamSpec | None  # the main visual stream fed to the LLM (its grid, view)
    encoders: tuple[StreamSpec, ...] = ()
    #: True for an AnyRes model: an image's main tokens are its base crop's grid, then its tiles (not one
    #: grid; ``ImageSpan.grid`` is None) and ``pixel_values`` holds each image's base crop
    tiled: bool = False


class Objective(Component, nn.Module):
    """Model output + batch -> named loss terms. May own trainable modules and frozen teachers.

    ``forward(output, batch)`` gets:

    * ``output``: a ``ModelOutput``: ``logits`` (B, L, V), ``hidden_states`` (B, L, D; only when
      ``needs_hidden_states``), ``attention_mask`` and ``labels`` (B, L) of the spliced sequence,
      ``image_spans`` (where each image landed) and ``visual_tokens`` (each image's projected tokens);
    * ``batch``: ``input_ids``, ``attention_mask``, ``labels`` (before splicing; images are the
      ``IMAGE_PLACEHOLDER`` ids, row by row, in the order of ``image_spans``), ``pixel_values`` (view name ->
      (N, 3, H, W) for the N images of the batch, same order; for a tiling model each image's base crop, see
      ``ObjectiveContext.tiled``), ``image_sizes`` (a tiling model's original (height, width) per image, else
      None), ``boxes`` (view -> one (n_i, 4) tensor per image, or None), ``num_items_in_batch``, and
      ``sample_ids`` during training.

    It returns ``{term: scalar}``; each term is logged as ``loss/<term>`` (the term's key, not the component's
    name) and their sum, times the objective's weight, is added to the loss. On a batch that gives it nothing
    to do (text only), return ``{term: self.zero_loss()}``.
    """

    context_parameters = ("context",)
    #: True when the objective needs the LLM's final hidden states
    needs_hidden_states: ClassVar[bool] = False

    def forward(self, output: ModelOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def zero_loss(self) -> torch.Tensor:
        """A 0 that every trainable parameter of this objective takes part in: distributed training (DDP,
        ZeRO) expects each of them to get a gradient every step, also when this batch had no image."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return torch.zeros(())
        return torch.stack([p.sum().float() for p in params]).sum() * 0.0


def single_stream(inputs: Sequence[StreamSpec], consumer: str) -> StreamSpec:
    """Helper for projectors: exactly one upstream stream."""
    if len(inputs) != 1:
        srcs = ", ".join(s.source for s in inputs)
        raise Incompatible("number of feature streams", 1, f"{len(inputs)} ({srcs})",
                           f"add a fusion module that merges the streams into one (--fusion NAME, a connector "
                           f"that takes several streams) before {consumer}")
    return inputs[0]
