"""ConvNeXt vision towers made of timm's ConvNeXt modules, computing what ConvLLaVA and MG-LLaVA compute.

``convnext``: the trunk of the LAION CLIP ConvNeXt family (``convnext_large_d_320`` layout: widths
192..1536, depths 3,3,27,3): stem + 4 stages, total stride 32. The tokens are the last stage's map,
raw (no final norm: transformers' ``ConvNextModel.layernorm`` only serves the pooled output and is not kept);
every stage's map is also returned as ``stage0``..``stage3`` (strides 4..32), e.g. for RoI pooling.
Its default view is MG-LLaVA's 768 px high-resolution view, named ``hires``.

``convnext5``: ConvLLaVA's tower, the trunk plus a fifth stage (LayerNorm + 2x2/2 conv to
``stage5_width``, then ``stage5_depth`` ConvNeXt blocks, layer scale 1e-6, no drop path), total
stride 64: 768/1024/1536 px give 144/256/576 tokens of 3072. Being fully convolutional it takes
any H x W and gives floor(H/64) x floor(W/64) tokens; ``resize="native"`` keeps the aspect ratio.

One mechanism per job: the modules are timm's (``timm.models.convnext``, assembled by ``convnext_parts``, whose
fifth stage is also the one the ``timm`` encoder's ``stage5`` adds), so a timm or open_clip weights file loads
under its own names, as the ``timm`` and ``open-clip`` encoders load it. A transformers ConvNeXt folder
(ConvLLaVA's release) is read by transformers and mapped by ``transformers_convnext_layout``, which also reads
vlmkit checkpoints made before 0.2, when these towers held transformers' modules.

Weights: ``path`` is a transformers ConvNeXt folder or hub id (4 stages, or ConvLLaVA's 5-stage tower saved
after stage 1), or a timm / open_clip weights file: LAION's ``open_clip_pytorch_model.bin`` (as MG-LLaVA
reads it; pickles only with ``weights_only=True``), ``open_clip_model.safetensors``, timm's
``model.safetensors`` / ``pytorch_model.bin``, or a folder holding one of them.
A new fifth stage gets PyTorch's default init, as in ConvLLaVA (it is created outside any model init).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from vlmkit.data.image_processing import RESIZE_POLICIES
from vlmkit.errors import ConfigError
from vlmkit.model.contracts import CLIP_MEAN, CLIP_STD, BuildOptions, ImageView, VisionEncoder, VisualFeatures

from . import convnext_parts, convnext_weights, transformers_convnext_layout
from .convnext_parts import STAGE5_DEPTH, fifth_stage
from .frozen_prefix import FrozenPrefixMixin, Stage, run_stages

CONVNEXT_CONFIGS: dict[str, dict[str, Any]] = {
    "large": dict(hidden_sizes=[192, 384, 768, 1536], depths=[3, 3, 27, 3]),  # convnext_large_d_320 trunk
    "base": dict(hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3]),
    "xxlarge": dict(hidden_sizes=[384, 768, 1536, 3072], depths=[3, 4, 30, 3]),
    "tiny": dict(hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 2, 1]),
}
#: the architecture keys a ``config`` mapping takes (transformers' ConvNextConfig names, and timm's conv_mlp)
ARCH_DEFAULTS: dict[str, Any] = {"hidden_act": "gelu", "layer_scale_init_value": 1e-6, "drop_path_rate": 0.0,
                                 "num_channels": 3, "patch_size": 4, "conv_mlp": False}
PAPER_IMAGE_SIZE = 768
TINY_IMAGE_SIZE = {"convnext": 64, "convnext5": 128}


def architecture(spec: dict[str, Any], source: str) -> dict[str, Any]:
    """A complete, checked architecture from a ``config`` mapping (named keys over ``ARCH_DEFAULTS``)."""
    unknown = sorted(set(spec) - set(ARCH_DEFAULTS) - {"hidden_sizes", "depths"})
    if unknown:
        raise ConfigError(f"{source}: config keys {unknown} are not ConvNeXt architecture keys; accepted: "
                          f"hidden_sizes, depths, {', '.join(ARCH_DEFAULTS)}")
    arch = {**ARCH_DEFAULTS, **copy.deepcopy(spec)}
    sizes, depths = arch.get("hidden_sizes"), arch.get("depths")
    if not sizes or not depths or len(sizes) != len(depths):
        raise ConfigError(f"{source}: config needs 'hidden_sizes' and 'depths' of equal length")
    return arch


def build_trunk(arch: dict[str, Any], source: str) -> tuple[nn.Module, nn.ModuleList]:
    """timm's ConvNeXt stem and stages for ``arch`` (no head, no final norm: a tower has neither)."""
    try:
        return convnext_parts.trunk(arch["hidden_sizes"], arch["depths"], in_channels=arch["num_channels"],
                                    patch=arch["patch_size"], conv_mlp=bool(arch["conv_mlp"]),
                                    ls_init_value=arch["layer_scale_init_value"] or None,
                                    drop_path_rate=arch["drop_path_rate"], act_layer=arch["hidden_act"])
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"{source}: bad ConvNeXt config: {exc}") from exc


def _transformers_architecture(hf: Any) -> dict[str, Any]:
    cfg = hf.to_dict() if hasattr(hf, "to_dict") else dict(hf)
    return {k: copy.deepcopy(cfg[k]) for k in ("hidden_sizes", "depths", *ARCH_DEFAULTS) if k in cfg}


def read_trunk(path: str | None, config: str | dict | None, source: str,
               pretrained: bool = True) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """(architecture, weights under vlmkit's names or None) from a named config, a file or a folder."""
    if path is None:
        if config is None or isinstance(config, str):
            name = config or "large"
            if name not in CONVNEXT_CONFIGS:
                raise ConfigError(f"{source}: unknown config '{name}'; built-in: {', '.join(CONVNEXT_CONFIGS)}")
            config = CONVNEXT_CONFIGS[name]
        return architecture(dict(config), source), None
    kind, where = convnext_weights.resolve_weights(path, source)
    if kind == "trunk":  # timm / open_clip: timm's own names, nothing renamed
        arch = architecture(convnext_weights.trunk_architecture(convnext_weights.read_shapes(where), str(where)),
                            source)
        return arch, (convnext_weights.read_trunk(where) if pretrained else None)
    from transformers import ConvNextConfig, ConvNextModel

    try:
        if not pretrained:
            return architecture(_transformers_architecture(ConvNextConfig.from_pretrained(path)), source), None
        model = ConvNextModel.from_pretrained(path)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot load '{path}': {str(exc).splitlines()[0]}") from exc
    state = transformers_convnext_layout.from_transformers_state(model.state_dict())
    return architecture(_transformers_architecture(model.config), source), state


class ConvNeXtTower(FrozenPrefixMixin, VisionEncoder):
    """Shared by both towers: ``stem`` + ``stages``, timm's ConvNeXt modules under timm's names."""

    component_name = "convnext"
    stem: nn.Module
    stages: nn.ModuleList

    def _build(self, arch: dict[str, Any]) -> None:
        self.arch = arch
        self.stem, self.stages = build_trunk(arch, f"encoder '{self.component_name}'")

    def _load(self, state: dict[str, torch.Tensor] | None, where: str | None, added: str | None = None) -> None:
        """``state`` into the tower; ``added`` names a module prefix created here, which the weights lack."""
        if state is None:
            return
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not (added and k.startswith(added))]
        if missing or result.unexpected_keys:
            raise ConfigError(f"encoder '{self.component_name}': {where} does not fit a ConvNeXt trunk: missing "
                              f"{missing[:3]}, unexpected {result.unexpected_keys[:3]}")

    def _finish(self, config: str | dict | None, image_size: int | None, resize: str, view: str,
                keep_maps: bool, extra_widths: tuple[int, ...] = ()) -> None:
        if resize not in RESIZE_POLICIES:
            raise ConfigError(f"encoder '{self.component_name}': resize must be one of {', '.join(RESIZE_POLICIES)}, "
                              f"got '{resize}'")
        if image_size is None:
            image_size = TINY_IMAGE_SIZE[self.component_name] if config == "tiny" else PAPER_IMAGE_SIZE
        self.widths = list(self.arch["hidden_sizes"]) + list(extra_widths)
        self.stride = self.arch["patch_size"] * 2 ** (len(self.stages) - 1)
        if image_size < self.stride:
            raise ConfigError(f"encoder '{self.component_name}': image_size {image_size} is smaller than the total "
                              f"stride {self.stride}")
        self.output_dim = self.widths[-1]
        self.keep_maps = keep_maps
        self.view = ImageView(view, image_size, CLIP_MEAN, CLIP_STD, resize, multiple=self.stride)

    # -- geometry ----------------------------------------------------------------------------
    def grid(self, height: int, width: int) -> tuple[int, int]:
        # every conv is unpadded floor division: k4/s4 stem, then k2/s2 per stage
        return height // self.stride, width // self.stride

    def feature_maps(self) -> tuple[tuple[str, int, int], ...]:
        if not self.keep_maps:
            return ()
        patch = self.arch["patch_size"]
        return tuple((f"stage{i}", w, patch * 2 ** i) for i, w in enumerate(self.widths))

    # -- parts -------------------------------------------------------------------------------
    def stage_modules(self) -> list[list[nn.Module]]:
        return [[self.stem]] + [[s] for s in self.stages]

    def named_parts(self) -> dict[str, list[str]]:
        """``stem`` (also named ``embeddings``, its name before 0.2) and ``stages.N`` (0-based, each with its
        downsampler)."""
        parts: dict[str, list[str]] = {}
        for n, _ in self.named_parameters():
            bits = n.split(".")
            key = f"stages.{bits[1]}" if bits[0] == "stages" else bits[0]
            parts.setdefault(key, []).append(n)
        parts["embeddings"] = list(parts.get("stem", []))
        return parts

    def architecture(self) -> dict[str, Any]:
        return copy.deepcopy(self.arch)

    def checkpoint_args(self, args: dict[str, Any]) -> dict[str, Any]:
        return {**self._args, "config": self.architecture()}

    def legacy_state_name(self, name: str) -> str | None:
        """Checkpoints made before 0.2 hold these towers under transformers' ConvNeXt names."""
        return transformers_convnext_layout.from_transformers(name)

    # -- compute -----------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        x = pixel_values.to(self.stem[0].weight.dtype)
        stages: list[Stage] = [(self.stem, [self.stem])] + [(s, [s]) for s in self.stages]
        maps = run_stages(stages, x)[1:]
        last = maps[-1]
        tokens = last.flatten(2).transpose(1, 2)  # (B, h*w, C), row-major like ConvLLaVA's permute+reshape
        named = {f"stage{i}": m for i, m in enumerate(maps)} if self.keep_maps else {}
        return VisualFeatures(tokens, (last.shape[-2], last.shape[-1]), named)


class ConvNeXtEncoder(ConvNeXtTower):
    """A ConvNeXt trunk: every stage of the loaded model (4 for the CLIP ConvNeXt family).

    ``path`` accepts every form LAION ConvNeXt towers come in: a transformers ConvNeXt folder; open_clip's
    ``open_clip_pytorch_model.bin`` (read with ``weights_only=True``) or ``open_clip_model.safetensors``;
    timm's ``model.safetensors`` / ``pytorch_model.bin``; or a folder holding one of those files.
    """

    component_name = "convnext"

    def __init__(self, path: str | None = None, config: str | dict | None = None, image_size: int | None = None,
                 resize: str = "pad", view: str = "hires", keep_maps: bool = True, build: BuildOptions = BuildOptions()):
        super().__init__()
        config = config if path is None else None  # a path wins over a named architecture
        arch, state = read_trunk(path, config, f"encoder '{self.component_name}'", build.pretrained)
        self._build(arch)
        self._load(state, path)
        self._finish(config, image_size, resize, view, keep_maps)
        self._args: dict[str, Any] = dict(image_size=self.view.size, resize=resize, view=view, keep_maps=keep_maps)


class ConvNeXtStage5Encoder(ConvNeXtTower):
    """ConvLLaVA: the ConvNeXt trunk plus a fifth stage that halves the grid again (stride 64).

    ``path`` takes the forms ``convnext`` takes (a transformers folder, open_clip/timm ``.bin`` or
    ``.safetensors``, a folder holding one), and ConvLLaVA's 5-stage tower folder.

    ``stage5_width``/``stage5_depth`` default to twice the last trunk width and 6 blocks (3072 and 6
    for ConvNeXt-L: 472,934,400 parameters, as in ConvLLaVA's released recipe).
    """

    component_name = "convnext5"

    def __init__(self, path: str | None = None, config: str | dict | None = None,
                 stage5_width: int | None = None, stage5_depth: int | None = None, image_size: int | None = None,
                 resize: str = "pad", view: str = "base", keep_maps: bool = True, build: BuildOptions = BuildOptions()):
        super().__init__()
        source = f"encoder '{self.component_name}'"
        config = config if path is None else None  # a path wins over a named architecture
        arch, state = read_trunk(path, config, source, build.pretrained)
        trunk_stages = len(arch["depths"])
        if trunk_stages == 5:  # ConvLLaVA's tower saved after stage 1: the fifth stage is already there
            saved = (arch["hidden_sizes"][4], arch["depths"][4])
            for name, value, have in (("stage5_width", stage5_width, saved[0]), ("stage5_depth", stage5_depth, saved[1])):
                if value is not None and value != have:
                    raise ConfigError(f"{source}: {name}={value} but '{path}' already has a fifth stage with {have}")
            arch = {**arch, "hidden_sizes": arch["hidden_sizes"][:4], "depths": arch["depths"][:4]}
            width, depth = saved
        elif trunk_stages == 4:
            width = stage5_width if stage5_width is not None else 2 * arch["hidden_sizes"][-1]
            depth = stage5_depth if stage5_depth is not None else STAGE5_DEPTH
            if width < 1 or depth < 0:
                raise ConfigError(f"{source}: stage5_width must be >= 1 and stage5_depth >= 0, got {width}, {depth}")
        else:
            raise ConfigError(f"{source}: expected a 4-stage ConvNeXt trunk (or a 5-stage ConvLLaVA tower), "
                              f"got {trunk_stages} stages")
        self._build(arch)
        self.stages.append(fifth_stage(arch["hidden_sizes"][-1], width, depth, conv_mlp=bool(arch["conv_mlp"])))
        self._load(state, path, added=None if trunk_stages == 5 else "stages.4.")
        self._finish(config, image_size, resize, view, keep_maps, (width,))
        self.stage5_width, self.stage5_depth = width, depth
        self._args = dict(stage5_width=width, stage5_depth=depth, image_size=self.view.size, resize=resize,
                          view=view, keep_maps=keep_maps)

    def named_parts(self) -> dict[str, list[str]]:
        """``stem`` (``embeddings``), ``stages.0``..``stages.4`` and ``stage5``, an alias of ``stages.4`` (the added
        stage)."""
        parts = super().named_parts()
        parts["stage5"] = list(parts.get("stages.4", []))
        return parts
