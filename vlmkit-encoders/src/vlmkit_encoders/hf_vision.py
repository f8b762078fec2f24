"""``hf-vision``: any transformers vision model that returns hidden states, as a vision tower.

``path`` is a local folder or a hub id in the offline cache (``facebook/dinov2-large``,
``google/siglip2-so400m-patch14-384``, ``openai/clip-vit-large-patch14-336``); ``config`` builds one from a
config mapping instead (``{"model_type": "dinov2", ...}``, tiny models for tests). A composite image-text model
(CLIP, SigLIP, SigLIP2) contributes its ``vision_model`` only. The tokens are ``hidden_states[layer]`` of the
model's own forward (transformers' numbering: 0 is the embeddings' output, negative counts from the end), with
prefix tokens (class token, registers) dropped unless ``keep_prefix``. The view's mean and std come from the
folder's image processor, the size from the model's config; another ``image_size`` uses the model's own
position-embedding interpolation where it has one. Remote code is never run.

SigLIP2 comes in two kinds. The fixed-resolution releases (``google/siglip2-so400m-patch14-384``) are SigLIP
models (``model_type: siglip``) and run as such. The NaFlex releases (``model_type: siglip2``,
``google/siglip2-so400m-patch16-naflex``) take their image as a sequence of patches with its grid shape: the
encoder cuts each image with transformers' own ``convert_image_to_patches`` and passes ``spatial_shapes`` and
an all-ones ``pixel_attention_mask``, so any H x W (multiples of the patch) gives an H/p x W/p grid, the
position table resized by the model itself. Its native size is the square of ``num_patches`` patches.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from vlmkit.errors import ConfigError
from vlmkit.model.contracts import BuildOptions, ImageView, VisionEncoder, VisualFeatures

#: model types whose vision transformer has no class token
NO_CLASS_TOKEN = {"siglip", "siglip_vision_model", "siglip2", "siglip2_vision_model"}
#: model types that take patch sequences with their grid shapes (NaFlex)
PATCH_SEQUENCE_INPUT = {"siglip2", "siglip2_vision_model"}
TINY_CONFIG = {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
               "intermediate_size": 64, "image_size": 28, "patch_size": 7}


def _vision_part(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "vision_model", None) or model


def _vision_config(config: Any) -> Any:
    return getattr(config, "vision_config", None) or config


def build_hf_vision(path: str | None, config: dict[str, Any] | None, build: BuildOptions) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel

    if (path is None) == (config is None):
        raise ConfigError("encoder 'hf-vision': give either path (a folder or cached hub id) or config (a mapping "
                          "with model_type)")
    if config is not None:
        fields = dict(config)
        model_type = fields.pop("model_type", None)
        if not model_type:
            raise ConfigError("encoder 'hf-vision': config needs a model_type (dinov2, siglip_vision_model, vit, ...)")
        try:
            cfg = AutoConfig.for_model(model_type, **fields)
        except ValueError as exc:
            raise ConfigError(f"encoder 'hf-vision': {exc}") from exc
        return _vision_part(AutoModel.from_config(cfg))
    try:
        cfg = AutoConfig.from_pretrained(path, trust_remote_code=False)
        if build.pretrained and not build.meta:
            return _vision_part(AutoModel.from_pretrained(path, config=cfg, trust_remote_code=False))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"encoder 'hf-vision': cannot load '{path}' ({str(exc).splitlines()[0][:200]}); give a "
                          "local folder, or a hub id already in the Hugging Face cache (downloads are not made)") from exc
    return _vision_part(AutoModel.from_config(cfg))


class HFVisionEncoder(VisionEncoder):
    """``hidden_states[layer]`` of a transformers vision model, prefix tokens dropped, as a grid."""

    component_name = "hf-vision"
    tiny_args = {"config": TINY_CONFIG}

    def __init__(self, path: str | None = None, config: dict[str, Any] | None = None, layer: int = -1,
                 keep_prefix: bool = False, image_size: int | None = None, image_mean: list[float] | None = None,
                 image_std: list[float] | None = None, resize: str = "pad", view: str = "base",
                 build: BuildOptions = BuildOptions()):
        super().__init__()
        self.net = build_hf_vision(path, config, build)
        cfg = _vision_config(self.net.config)
        n = getattr(cfg, "num_hidden_layers", None)
        patch = getattr(cfg, "patch_size", None)
        if n is None or patch is None:
            raise ConfigError(f"encoder 'hf-vision': {type(self.net).__name__} has no num_hidden_layers/patch_size; "
                              "it is not a patch-grid vision transformer")
        if not -(n + 1) <= layer <= n:
            raise ConfigError(f"encoder 'hf-vision': layer {layer} out of range for a {n}-layer model "
                              f"({-(n + 1)}..{n})")
        self.layer = layer
        self.patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch)
        self.prefix_tokens = (0 if cfg.model_type in NO_CLASS_TOKEN else 1) + int(getattr(cfg, "num_register_tokens", 0))
        self.keep_prefix = keep_prefix and self.prefix_tokens > 0
        self.output_dim = int(cfg.hidden_size)
        size = int(getattr(cfg, "image_size", 224) if not isinstance(getattr(cfg, "image_size", 224), (list, tuple))
                   else cfg.image_size[-1])
        self.patch_sequence = cfg.model_type in PATCH_SEQUENCE_INPUT
        if self.patch_sequence:  # NaFlex: every grid is native; the default is num_patches as a square
            size = int(round(int(getattr(cfg, "num_patches", 256)) ** 0.5)) * self.patch
        self.native_size = size
        interpolate = image_size is not None and image_size != size and not self.patch_sequence
        takes_flag = "interpolate_pos_encoding" in inspect.signature(self.net.forward).parameters
        #: what the forward passes the model (decided once, not per batch)
        self.forward_kwargs = {"interpolate_pos_encoding": True} if interpolate and takes_flag else {}
        if interpolate and not takes_flag:
            if cfg.model_type not in ("dinov2", "dinov2_with_registers"):  # those always interpolate
                raise ConfigError(f"encoder 'hf-vision': {cfg.model_type} has fixed position embeddings for "
                                  f"{size} px; image_size {image_size} needs a model that interpolates them")
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        if path is not None:
            mean, std = self._normalisation(path, mean, std)
        mean = tuple(float(v) for v in (image_mean or mean))  # given: a checkpoint's record, or the user's choice
        std = tuple(float(v) for v in (image_std or std))
        self.view = ImageView(view, image_size or size, mean, std, resize, multiple=self.patch)
        self.model_type = cfg.model_type

    @staticmethod
    def _normalisation(path: str, mean: tuple, std: tuple) -> tuple[tuple, tuple]:
        try:
            from transformers import AutoImageProcessor

            proc = AutoImageProcessor.from_pretrained(path, trust_remote_code=False)
            return tuple(proc.image_mean), tuple(proc.image_std)
        except (OSError, ValueError, AttributeError, TypeError):
            return mean, std

    def grid(self, height: int, width: int) -> tuple[int, int] | None:
        return None if self.keep_prefix else (height // self.patch, width // self.patch)

    def num_tokens(self, height: int, width: int) -> int:
        return (height // self.patch) * (width // self.patch) + (self.prefix_tokens if self.keep_prefix else 0)

    def named_parts(self) -> dict[str, list[str]]:
        parts: dict[str, list[str]] = {}
        for n, _ in self.named_parameters():
            bits = n.split(".")
            key = f"layers.{bits[bits.index('layer') + 1]}" if "layer" in bits else \
                f"layers.{bits[bits.index('layers') + 1]}" if "layers" in bits else bits[1]
            parts.setdefault(key, []).append(n)
        return parts

    def _patch_sequence(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """NaFlex inputs: each image cut into patches by transformers' own function, its grid, a full mask."""
        from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

        h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        x = x[..., :h * self.patch, :w * self.patch]  # what a patch conv would leave out
        patches = torch.stack([convert_image_to_patches(image, self.patch) for image in x])
        n = patches.shape[0]
        return {"pixel_values": patches, "spatial_shapes": torch.tensor([[h, w]] * n, device=x.device),
                "pixel_attention_mask": torch.ones(n, h * w, dtype=torch.long, device=x.device)}

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        x = pixel_values.to(next(self.net.parameters()).dtype)
        inputs = self._patch_sequence(x) if self.patch_sequence else {"pixel_values": x}
        out = self.net(**inputs, output_hidden_states=True, return_dict=True, **self.forward_kwargs)
        hidden = out.hidden_states[self.layer]
        h, w = pixel_values.shape[-2] // self.patch, pixel_values.shape[-1] // self.patch
        if hidden.shape[1] != h * w + self.prefix_tokens:
            raise ValueError(f"encoder 'hf-vision' ({self.model_type}): {hidden.shape[1]} tokens for a {h}x{w} grid "
                             f"and {self.prefix_tokens} prefix token(s)")
        if self.keep_prefix:
            return VisualFeatures(hidden, None)
        return VisualFeatures(hidden[:, self.prefix_tokens:], (h, w))

    def checkpoint_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """A rebuild needs the architecture (the config, as a mapping; weights come from the checkpoint) and the
        normalisation read from the folder's image processor, which a rebuild without the folder cannot read."""
        out = {k: v for k, v in args.items() if k != "path"}
        out["image_mean"], out["image_std"] = list(self.view.mean), list(self.view.std)
        cfg = self.net.config.to_dict()
        keep = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("architectures", "transformers_version",
                                                                                      "torch_dtype", "dtype")}
        out["config"] = keep
        return out
