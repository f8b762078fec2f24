"""``open-clip``: any open_clip image tower, its features read through open_clip's own intermediate-feature API.

``model`` is what ``open_clip.create_model`` takes: a model name (``ViT-L-14``, ``convnext_large_d_320``), an
``hf-hub:`` id, or ``local-dir:FOLDER`` for a folder as open_clip saves one (``open_clip_config.json`` plus
``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``; pickles are read with ``weights_only=True``).
``pretrained`` is a pretrained tag (``laion2b_s32b_b82k``) or a weight file for a named model. Both tower kinds
work: open_clip's own ViTs and timm-trunk towers (the LAION ConvNeXts MG-LLaVA uses). Only the image tower is
kept. The tokens are one block's or stage's output from ``forward_intermediates`` (``layer``, negative from the
end), flattened into a grid; the class token is dropped unless ``keep_prefix``; ``norm`` applies open_clip's
``normalize_intermediates``. Size, mean and std come from the tower's ``preprocess_cfg``.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch

from vlmkit.errors import ConfigError
from vlmkit.model.contracts import BuildOptions, ImageView, VisionEncoder, VisualFeatures

#: a tiny open_clip ViT (for tests and the conformance kit): registered under this name when first asked for
TINY_NAME = "vlmkit-tiny-vit"
TINY_CONFIG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "head_width": 16,
                                              "patch_size": 8},
               "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}


def _register_tiny() -> None:
    from open_clip import factory

    factory._MODEL_CONFIGS.setdefault(TINY_NAME, TINY_CONFIG)


def create_open_clip_tower(model: str, pretrained: str | None, build: BuildOptions,
                           image_size: int | None) -> torch.nn.Module:
    import open_clip

    _register_tiny()
    local = model.startswith(("local-dir:", "hf-hub:"))
    if not local and model not in open_clip.list_models():
        close = difflib.get_close_matches(model, open_clip.list_models(), n=5, cutoff=0.5)
        raise ConfigError(f"encoder 'open-clip': unknown model '{model}'; close matches: {', '.join(close) or 'none'}; "
                          "`python -c 'import open_clip; print(open_clip.list_pretrained())'` lists names and tags")
    weights = build.pretrained and not build.meta
    kwargs: dict[str, Any] = {"force_image_size": image_size} if image_size else {}
    kwargs["device"] = "meta" if build.meta else "cpu"  # open_clip moves what it built: on the meta device, to it
    try:
        if local:
            net = open_clip.create_model(model, load_weights=weights, weights_only=True, **kwargs)
        else:
            net = open_clip.create_model(model, pretrained=pretrained if weights else None, weights_only=True, **kwargs)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(f"encoder 'open-clip': cannot build {model}: {str(exc).splitlines()[0][:240]}") from exc
    except OSError as exc:
        what = f"the weights of '{model}'" + (f" ({pretrained})" if pretrained else "")
        raise ConfigError(f"encoder 'open-clip': {what} are not available offline ({str(exc).splitlines()[0][:160]}); "
                          "put them in the Hugging Face cache, give a file (--set encoder.pretrained=PATH) or a saved "
                          "folder (--set encoder.model=local-dir:FOLDER)") from exc
    return net.visual


class OpenCLIPEncoder(VisionEncoder):
    """One block's or stage's output of an open_clip image tower, as a grid of tokens."""

    component_name = "open-clip"
    tiny_args = {"model": TINY_NAME}

    def __init__(self, model: str, pretrained: str | None = None, layer: int = -1, keep_prefix: bool = False,
                 norm: bool = False, image_size: int | None = None, resize: str = "pad", view: str = "base",
                 build: BuildOptions = BuildOptions()):
        super().__init__()
        self.visual = create_open_clip_tower(model, pretrained, build, image_size)
        trunk = getattr(self.visual, "trunk", None)  # a timm-trunk tower (TimmModel)
        if trunk is not None:
            info = trunk.feature_info
            blocks = len(info)
            dims = [int(f["num_chs"]) for f in info]
            strides = [int(f["reduction"]) for f in info]
            self.prefix_tokens = int(getattr(trunk, "num_prefix_tokens", 0) or 0)
        elif hasattr(self.visual, "transformer"):
            blocks = len(self.visual.transformer.resblocks)
            dims = [int(self.visual.transformer.width)] * blocks
            strides = [int(self.visual.patch_size[0])] * blocks
            self.prefix_tokens = 1 if getattr(self.visual, "class_embedding", None) is not None else 0
        else:
            raise ConfigError(f"encoder 'open-clip': {model}'s image tower ({type(self.visual).__name__}) has no "
                              "intermediate-feature API")
        if not -blocks <= layer < blocks:
            raise ConfigError(f"encoder 'open-clip': layer {layer} out of range for '{model}' ({blocks} blocks/stages: "
                              f"{-blocks}..{blocks - 1})")
        self.index = layer % blocks
        self.output_dim, self.reduction = dims[self.index], strides[self.index]
        self.keep_prefix = keep_prefix and self.prefix_tokens > 0
        self.norm = norm
        cfg = dict(getattr(self.visual, "preprocess_cfg", {}) or {})
        size = image_size or int(tuple(cfg.get("size", (224, 224)))[-1])
        mean = tuple(float(v) for v in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        std = tuple(float(v) for v in cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        self.view = ImageView(view, size, mean, std, resize, multiple=self.reduction)
        self.model_name = model

    def grid(self, height: int, width: int) -> tuple[int, int] | None:
        return None if self.keep_prefix else (height // self.reduction, width // self.reduction)

    def num_tokens(self, height: int, width: int) -> int:
        return (height // self.reduction) * (width // self.reduction) + (self.prefix_tokens if self.keep_prefix else 0)

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        x = pixel_values.to(next(self.visual.parameters()).dtype)
        out = self.visual.forward_intermediates(x, indices=[self.index], stop_early=True, intermediates_only=True,
                                                normalize_intermediates=self.norm,
                                                **({"output_extra_tokens": True} if self.keep_prefix else {}))
        feat = out["image_intermediates"][0]
        h, w = feat.shape[-2:]
        tokens = feat.flatten(2).transpose(1, 2)
        if self.keep_prefix:
            return VisualFeatures(torch.cat([out["image_intermediates_prefix"][0], tokens], dim=1), None)
        return VisualFeatures(tokens, (h, w))

    def checkpoint_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """The architecture rebuilds from the name; the weights come from the checkpoint."""
        return {k: v for k, v in args.items() if k != "pretrained"}
