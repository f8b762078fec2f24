"""ConvNeXt vision towers built from transformers' ConvNeXt modules, as ConvLLaVA runs them.

``convnext``: the trunk of the LAION CLIP ConvNeXt family (``convnext_large_d_320`` layout: widths
192..1536, depths 3,3,27,3): stem + 4 stages, total stride 32. The tokens are the last stage's map,
raw (no final norm: HF ``ConvNextModel.layernorm`` only serves the pooled output and is not kept);
every stage's map is also returned as ``stage0``..``stage3`` (strides 4..32), e.g. for RoI pooling.
Its default view is MG-LLaVA's 768 px high-resolution view, named ``hires``.

``convnext5``: ConvLLaVA's tower, the trunk plus a fifth stage (LayerNorm + 2x2/2 conv to
``stage5_width``, then ``stage5_depth`` ConvNeXt blocks, layer scale 1e-6, no drop path), total
stride 64: 768/1024/1536 px give 144/256/576 tokens of 3072. Being fully convolutional it takes
any H x W and gives floor(H/64) x floor(W/64) tokens; ``resize="native"`` keeps the aspect ratio.

Weights: ``path`` is a transformers ConvNeXt folder (4 stages, or ConvLLaVA's 5-stage tower saved
after stage 1), or a timm / open_clip weights file whose ConvNeXt trunk is converted: LAION's
``open_clip_pytorch_model.bin`` (as MG-LLaVA reads it; pickles only with ``weights_only=True``),
``open_clip_model.safetensors``, timm's ``model.safetensors`` / ``pytorch_model.bin``, or a folder
holding one of them.
A new fifth stage gets PyTorch's default init, as in ConvLLaVA (it is created outside HF init).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from vlmkit.data.image_processing import RESIZE_POLICIES
from vlmkit.errors import ConfigError
from vlmkit.model.contracts import CLIP_MEAN, CLIP_STD, BuildOptions, ImageView, VisionEncoder, VisualFeatures

from . import convnext_convert
from .frozen_prefix import FrozenPrefixMixin, Stage, run_stages

CONVNEXT_CONFIGS: dict[str, dict[str, Any]] = {
    "large": dict(hidden_sizes=[192, 384, 768, 1536], depths=[3, 3, 27, 3]),  # convnext_large_d_320 trunk
    "base": dict(hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3]),
    "xxlarge": dict(hidden_sizes=[384, 768, 1536, 3072], depths=[3, 4, 30, 3]),
    "tiny": dict(hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 2, 1]),
}
#: keys of a config mapping that rebuild the architecture
_ARCH_KEYS = ("hidden_sizes", "depths", "hidden_act", "layer_scale_init_value", "drop_path_rate", "num_channels",
              "patch_size")
PAPER_IMAGE_SIZE = 768
TINY_IMAGE_SIZE = {"convnext": 64, "convnext5": 128}
STAGE5_DEPTH = 6


def _hf_config(spec: dict[str, Any], source: str):
    from transformers import ConvNextConfig

    cfg = {"hidden_act": "gelu", "layer_scale_init_value": 1e-6, "drop_path_rate": 0.0, **spec}
    sizes, depths = cfg.get("hidden_sizes"), cfg.get("depths")
    if not sizes or not depths or len(sizes) != len(depths):
        raise ConfigError(f"{source}: config needs 'hidden_sizes' and 'depths' of equal length")
    cfg["num_stages"] = len(depths)
    try:
        return ConvNextConfig(**cfg)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: bad ConvNeXt config: {exc}") from exc


def load_trunk(path: str | None, config: str | dict | None, source: str,
               pretrained: bool = True) -> tuple[Any, nn.Module, nn.ModuleList]:
    """(HF config, embeddings, stages) from a folder, a timm/open_clip .safetensors file or a config."""
    from transformers import ConvNextConfig, ConvNextModel

    if path is None:
        if config is None or isinstance(config, str):
            name = config or "large"
            if name not in CONVNEXT_CONFIGS:
                raise ConfigError(f"{source}: unknown config '{name}'; built-in: {', '.join(CONVNEXT_CONFIGS)}")
            config = CONVNEXT_CONFIGS[name]
        model = ConvNextModel(_hf_config(dict(config), source))
    elif (form := convnext_convert.resolve_weights(path, source))[0] == "trunk":
        file = form[1]
        model = ConvNextModel(_hf_config(convnext_convert.trunk_architecture(convnext_convert.read_shapes(file),
                                                                             str(file)), source))
        if pretrained:
            holder = nn.Module()
            holder.embeddings, holder.stages = model.embeddings, model.encoder.stages
            result = holder.load_state_dict(convnext_convert.read_trunk(file), strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise ConfigError(f"{source}: {file} does not fit a ConvNeXt trunk: missing "
                                  f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}")
    elif pretrained:
        try:
            model = ConvNextModel.from_pretrained(path)
        except OSError as exc:
            raise ConfigError(f"{source}: cannot load '{path}': {str(exc).splitlines()[0]}") from exc
    else:
        model = ConvNextModel(ConvNextConfig.from_pretrained(path))
    return model.config, model.embeddings, model.encoder.stages


class ConvNeXtTower(FrozenPrefixMixin, VisionEncoder):
    """Shared by both towers: ``embeddings`` (stem) + ``stages`` (transformers ConvNeXt modules)."""

    component_name = "convnext"
    embeddings: nn.Module
    stages: nn.ModuleList

    def _finish(self, hf_config: Any, config: str | dict | None, image_size: int | None, resize: str, view: str,
                keep_maps: bool, extra_widths: tuple[int, ...] = ()) -> None:
        if resize not in RESIZE_POLICIES:
            raise ConfigError(f"encoder '{self.component_name}': resize must be one of {', '.join(RESIZE_POLICIES)}, "
                              f"got '{resize}'")
        if image_size is None:
            image_size = TINY_IMAGE_SIZE[self.component_name] if config == "tiny" else PAPER_IMAGE_SIZE
        self.hf_config = hf_config
        self.widths = list(hf_config.hidden_sizes) + list(extra_widths)
        self.stride = hf_config.patch_size * 2 ** (len(self.stages) - 1)
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
        patch = self.hf_config.patch_size
        return tuple((f"stage{i}", w, patch * 2 ** i) for i, w in enumerate(self.widths))

    # -- parts -------------------------------------------------------------------------------
    def stage_modules(self) -> list[list[nn.Module]]:
        return [[self.embeddings]] + [[s] for s in self.stages]

    def named_parts(self) -> dict[str, list[str]]:
        """``embeddings`` (stem) and ``stages.N`` (0-based, each with its downsampler)."""
        parts: dict[str, list[str]] = {}
        for n, _ in self.named_parameters():
            bits = n.split(".")
            key = f"stages.{bits[1]}" if bits[0] == "stages" else bits[0]
            parts.setdefault(key, []).append(n)
        return parts

    def architecture(self) -> dict[str, Any]:
        cfg = self.hf_config.to_dict()
        return {k: copy.deepcopy(cfg[k]) for k in _ARCH_KEYS if k in cfg}

    def checkpoint_args(self, args: dict[str, Any]) -> dict[str, Any]:
        return {**self._args, "config": self.architecture()}

    # -- compute -----------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        x = pixel_values.to(self.embeddings.patch_embeddings.weight.dtype)
        stages: list[Stage] = [(self.embeddings, [self.embeddings])] + [(s, [s]) for s in self.stages]
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
        hf_config, self.embeddings, self.stages = load_trunk(path, config, f"encoder '{self.component_name}'",
                                                             build.pretrained)
        self._finish(hf_config, config, image_size, resize, view, keep_maps)
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
        hf_config, self.embeddings, self.stages = load_trunk(path, config, source, build.pretrained)
        trunk_stages = len(hf_config.depths)
        if trunk_stages == 5:  # ConvLLaVA's tower saved after stage 1: the fifth stage is already there
            saved = (hf_config.hidden_sizes[4], hf_config.depths[4])
            for arg, value, have in (("stage5_width", stage5_width, saved[0]), ("stage5_depth", stage5_depth, saved[1])):
                if value is not None and value != have:
                    raise ConfigError(f"{source}: {arg}={value} but '{path}' already has a fifth stage with {have}")
            hf_config = _truncate_config(hf_config, 4)
            width, depth = saved
        elif trunk_stages == 4:
            width = stage5_width if stage5_width is not None else 2 * hf_config.hidden_sizes[-1]
            depth = stage5_depth if stage5_depth is not None else STAGE5_DEPTH
            if width < 1 or depth < 0:
                raise ConfigError(f"{source}: stage5_width must be >= 1 and stage5_depth >= 0, got {width}, {depth}")
            self.stages.append(self._new_stage(hf_config, width, depth))
        else:
            raise ConfigError(f"{source}: expected a 4-stage ConvNeXt trunk (or a 5-stage ConvLLaVA tower), "
                              f"got {trunk_stages} stages")
        self._finish(hf_config, config, image_size, resize, view, keep_maps, (width,))
        self.stage5_width, self.stage5_depth = width, depth
        self._args = dict(stage5_width=width, stage5_depth=depth, image_size=self.view.size, resize=resize,
                          view=view, keep_maps=keep_maps)

    @staticmethod
    def _new_stage(hf_config: Any, width: int, depth: int) -> nn.Module:
        """LN(channels_first, eps 1e-6) + Conv2d(k2, s2) to ``width``, then ``depth`` blocks (no drop path)."""
        from transformers.models.convnext.modeling_convnext import ConvNextStage

        return ConvNextStage(hf_config, hf_config.hidden_sizes[-1], width, kernel_size=2, stride=2, depth=depth,
                             drop_path_rates=[0.0] * depth)

    def named_parts(self) -> dict[str, list[str]]:
        """``embeddings``, ``stages.0``..``stages.4`` and ``stage5``, an alias of ``stages.4`` (the added stage)."""
        parts = super().named_parts()
        parts["stage5"] = list(parts.get("stages.4", []))
        return parts


def _truncate_config(hf_config: Any, n: int) -> Any:
    from transformers import ConvNextConfig

    cfg = hf_config.to_dict()
    spec = {k: cfg[k] for k in _ARCH_KEYS if k in cfg}
    spec["hidden_sizes"], spec["depths"] = list(cfg["hidden_sizes"][:n]), list(cfg["depths"][:n])
    return ConvNextConfig(**spec, num_stages=n)
