"""``timm``: any timm model as a vision tower, its features read through timm's own intermediate-feature API.

``model`` is what ``timm.create_model`` takes: a name (``vit_large_patch14_dinov2.lvd142m``,
``convnext_large_mlp.clip_laion2b_soup_ft_in12k_in1k_320``), an ``hf-hub:`` id, or either with ``file=PATH``
naming local weights (a timm state dict: safetensors, or a pickle read with ``weights_only=True``). The tokens
are one block's or stage's output from ``forward_intermediates`` (``layer``, negative counts from the end),
flattened row by row into a grid; prefix tokens (class token, registers) are dropped unless ``keep_prefix``
(then the tokens are no grid). ``norm`` applies the model's final norm, as ``forward_features`` does. The
stage outputs up to the chosen one are also given as feature maps (``stage<i>``; for a ViT, whose blocks share one
stride, the chosen block's), for modules that pool maps (MG-LLaVA's RoI object tokens). Blocks
after the chosen one are pruned (timm's ``prune_intermediate_layers``): never computed, never trained
(``prune=False`` keeps their weights, still not computed, for checkpoints that hold them).

``stage5`` (``{"width": W, "depth": D}``; W defaults to twice the last stage's width, D to 6) adds ConvLLaVA's
fifth stage to a timm ConvNeXt: timm's own ``ConvNeXtStage`` (LayerNorm + 2x2 stride-2 conv, then D blocks of
the trunk's kind, layer scale 1e-6, no drop path), so the tokens have twice the trunk's stride (a 1536 px image
gives 24 x 24 tokens on a ConvNeXt-L). The view
(size, mean, std) comes from the model's pretrained config; ``image_size`` changes the size, for ViTs through
timm's own position-embedding resampling.

Nothing is re-implemented: the model, its weights, its features and its preprocessing constants are timm's.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch

from vlmkit.errors import ConfigError
from vlmkit.model.contracts import BuildOptions, ImageView, VisionEncoder, VisualFeatures

from .convnext_parts import STAGE5_DEPTH, fifth_stage

TINY_MODEL_ARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def close_matches(name: str) -> str:
    import timm

    base = name.split(".")[0]
    found = difflib.get_close_matches(base, timm.list_models(), n=5, cutoff=0.6)
    return (", ".join(found) if found else "none") + "; `vlmkit models timm PATTERN` searches timm's catalogue"


def read_weights(path: str) -> dict[str, torch.Tensor]:
    """A local weight file: safetensors, or a pickle read by core's restricted reader (``weights_only=True``)."""
    from vlmkit.errors import CheckpointError
    from vlmkit.interop.weights import load_pickled_tensors

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"encoder 'timm': weights file '{path}' not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    try:
        return load_pickled_tensors(p)
    except CheckpointError as exc:
        raise ConfigError(f"encoder 'timm': {path}: torch.load(weights_only=True) refused it ({exc}); vlmkit never "
                          "unpickles code: convert it to safetensors in a trusted environment") from exc


def create_timm_model(model: str, build: BuildOptions, model_args: dict[str, Any], file: str | None) -> torch.nn.Module:
    """``timm.create_model`` with vlmkit's errors: unknown names with close matches, offline weights named."""
    import timm

    hub = model.startswith("hf-hub:")
    if not hub and not timm.is_model(model.split(".")[0]):
        raise ConfigError(f"encoder 'timm': unknown model '{model}'; close matches: {close_matches(model)}")
    wants_hub_weights = build.pretrained and not build.meta and file is None
    try:
        net = timm.create_model(model, pretrained=wants_hub_weights, num_classes=0, **model_args)
    except TypeError as exc:
        raise ConfigError(f"encoder 'timm': model '{model}' refuses model_args {sorted(model_args)}: {exc}") from exc
    except (OSError, RuntimeError, ValueError) as exc:
        if wants_hub_weights:
            raise ConfigError(
                f"encoder 'timm': the weights of '{model}' are not available offline ({str(exc).splitlines()[0][:160]}); "
                "put them in the Hugging Face cache, give a local file (--set encoder.file=PATH), or build the "
                "architecture alone (--set encoder.pretrained=false)") from exc
        raise ConfigError(f"encoder 'timm': cannot build '{model}': {str(exc).splitlines()[0][:200]}") from exc
    if file is not None and build.pretrained and not build.meta:
        state = read_weights(file)
        result = net.load_state_dict(state, strict=False)
        unexpected = [k for k in result.unexpected_keys if not k.startswith(("head.", "fc.", "classifier."))]
        if result.missing_keys or unexpected:
            raise ConfigError(f"encoder 'timm': {file} does not fit '{model}' ({len(result.missing_keys)} missing, "
                              f"{len(unexpected)} unexpected, e.g. {(result.missing_keys + unexpected)[:3]})")
    return net


class TimmEncoder(VisionEncoder):
    """One block's or stage's output of a timm model, as a grid of tokens."""

    component_name = "timm"
    tiny_args = {"model": "vit_tiny_patch16_224", "model_args": TINY_MODEL_ARGS, "pretrained": False}

    def __init__(self, model: str, layer: int = -1, keep_prefix: bool = False, norm: bool = False,
                 image_size: int | None = None, file: str | None = None, model_args: dict[str, Any] | None = None,
                 pretrained: bool = True, prune: bool = True, stage5: dict[str, int] | None = None, resize: str = "pad",
                 view: str = "base", build: BuildOptions = BuildOptions()):
        super().__init__()
        if not pretrained:  # the architecture alone, randomly initialised (timm's pretrained=False)
            build = BuildOptions(pretrained=False, meta=build.meta)
        args = dict(model_args or {})
        if image_size is not None and "img_size" not in args:
            args["img_size"] = image_size  # ViTs take it (and resample their position table); others ignore it
        try:
            self.net = create_timm_model(model, build, args, file)
        except ConfigError as exc:
            if "img_size" in args and "img_size" not in (model_args or {}) and "refuses model_args" in str(exc):
                args.pop("img_size")
                self.net = create_timm_model(model, build, args, file)
            else:
                raise
        if not hasattr(self.net, "forward_intermediates") or not getattr(self.net, "feature_info", None):
            raise ConfigError(f"encoder 'timm': '{model}' has no intermediate-feature API (forward_intermediates); "
                              "vlmkit reads features only through it")
        blocks = len(self.net.feature_info)
        if not -blocks <= layer < blocks:
            raise ConfigError(f"encoder 'timm': layer {layer} out of range for '{model}' ({blocks} blocks/stages: "
                              f"{-blocks}..{blocks - 1})")
        self.index = layer % blocks
        info = self.net.feature_info[self.index]
        self.output_dim = int(info["num_chs"])
        self.reduction = int(info["reduction"])
        self.prefix_tokens = int(getattr(self.net, "num_prefix_tokens", 0) or 0)
        self.keep_prefix = keep_prefix and self.prefix_tokens > 0
        self.norm = norm
        # feature maps: every stage up to the chosen one for a hierarchical model; the chosen block for a flat one
        strides = [int(f["reduction"]) for f in self.net.feature_info[:self.index + 1]]
        self.map_indices = list(range(self.index + 1)) if len(set(strides)) > 1 else [self.index]
        # blocks past the chosen one are never run nor trained; prune=False keeps them (and the head), so that a
        # checkpoint made with the whole model (Prismatic's) has a place for every tensor: they are still not run
        if prune and hasattr(self.net, "prune_intermediate_layers"):
            self.net.prune_intermediate_layers([self.index], prune_norm=not norm, prune_head=True)
        self.stop_early = not prune
        self.stage5 = None
        if stage5 is not None:
            self.stage5 = self._stage5(model, stage5, blocks)
            self.output_dim = int(self.stage5.downsample[1].out_channels)
            self.reduction *= 2
        cfg = getattr(self.net, "pretrained_cfg", {}) or {}
        built = getattr(getattr(self.net, "patch_embed", None), "img_size", None)  # what a ViT was built for
        size = image_size or (int(built[-1]) if built else int((cfg.get("input_size") or (3, 224, 224))[-1]))
        mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
        std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
        self.view = ImageView(view, size, mean, std, resize, multiple=self.reduction)
        self.model_name = model

    def _stage5(self, model: str, spec: dict[str, int], blocks: int) -> torch.nn.Module:
        """ConvLLaVA's fifth stage, made of timm's ConvNeXt modules in the trunk's own kind (conv or linear MLP, GRN)."""
        from timm.models.convnext import ConvNeXt

        if not isinstance(self.net, ConvNeXt):
            raise ConfigError(f"encoder 'timm': stage5 adds a ConvNeXt stage and needs a timm ConvNeXt; '{model}' is a "
                              f"{type(self.net).__name__}")
        if self.index != blocks - 1:
            raise ConfigError("encoder 'timm': stage5 follows the last stage; leave layer at -1")
        unknown = set(spec) - {"width", "depth"}
        if unknown:
            raise ConfigError(f"encoder 'timm': stage5 takes width and depth, not {sorted(unknown)}")
        last = int(self.net.feature_info[-1]["num_chs"])
        width, depth = int(spec.get("width", 2 * last)), int(spec.get("depth", STAGE5_DEPTH))
        if width < 1 or depth < 0:
            raise ConfigError(f"encoder 'timm': stage5 width must be >= 1 and depth >= 0, got {width}, {depth}")
        block = self.net.stages[-1].blocks[-1]
        return fifth_stage(last, width, depth, conv_mlp=bool(getattr(block, "use_conv_mlp", False)),
                           use_grn=hasattr(block.mlp, "grn"))

    def grid(self, height: int, width: int) -> tuple[int, int] | None:
        if self.keep_prefix:
            return None
        return height // self.reduction, width // self.reduction

    def num_tokens(self, height: int, width: int) -> int:
        g = (height // self.reduction) * (width // self.reduction)
        return g + (self.prefix_tokens if self.keep_prefix else 0)

    def feature_maps(self) -> tuple[tuple[str, int, int], ...]:
        info = self.net.feature_info
        maps = tuple((f"stage{i}", int(info[i]["num_chs"]), int(info[i]["reduction"])) for i in self.map_indices)
        if self.stage5 is not None:
            maps += ((f"stage{len(info)}", self.output_dim, self.reduction),)
        return maps

    def named_parts(self) -> dict[str, list[str]]:
        """``blocks.N`` / ``stages.N`` as timm names them, and the rest by top-level module."""
        parts: dict[str, list[str]] = {}
        for n, _ in self.named_parameters():
            bits = n.split(".")[1:]
            key = ".".join(bits[:2]) if len(bits) > 2 and bits[0] in ("blocks", "stages", "layers") and \
                bits[1].isdigit() else bits[0]
            parts.setdefault(key, []).append(n)
        return parts

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        x = pixel_values.to(next(self.net.parameters()).dtype)
        extra = {"return_prefix_tokens": True} if self.keep_prefix else {}
        if self.stop_early:
            extra["stop_early"] = True
        out = self.net.forward_intermediates(x, indices=self.map_indices, norm=self.norm, intermediates_only=True,
                                             **extra)
        maps = {f"stage{i}": (o[0] if isinstance(o, tuple) else o) for i, o in zip(self.map_indices, out)}
        feat = out[-1]
        prefix = None
        if isinstance(feat, tuple):
            feat, prefix = feat
        if self.stage5 is not None:
            feat = self.stage5(feat)
            maps[f"stage{len(self.net.feature_info)}"] = feat
        h, w = feat.shape[-2:]
        expected = self.grid(*pixel_values.shape[-2:]) or (pixel_values.shape[-2] // self.reduction,
                                                           pixel_values.shape[-1] // self.reduction)
        if (h, w) != expected:
            raise ValueError(f"encoder 'timm' ({self.model_name}): a {tuple(pixel_values.shape[-2:])} input gave a "
                             f"{h}x{w} grid, not the {expected[0]}x{expected[1]} its reduction {self.reduction} "
                             "implies; use a size divisible by it")
        tokens = feat.flatten(2).transpose(1, 2)
        if prefix is not None:
            return VisualFeatures(torch.cat([prefix, tokens], dim=1), None, maps)
        return VisualFeatures(tokens, (h, w), maps)

    def checkpoint_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """The architecture rebuilds from the name and its arguments; the weights come from the checkpoint."""
        return {k: v for k, v in args.items() if k != "file"}
