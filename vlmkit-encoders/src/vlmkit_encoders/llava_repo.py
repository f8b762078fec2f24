"""The LLaVA codebase's vision towers <-> vlmkit encoders (``vlmkit.interop.llava_repo``).

Returned by this package's ``vlmkit_llava_converters`` hook, so that ``vlmkit import`` / ``export`` read and
write checkpoints of the LLaVA codebase and its forks without core knowing about encoders.

* LLaVA-1.5's ``CLIPVisionTower``: a ``CLIPVisionModel`` loaded from ``mm_vision_tower``, read at
  ``mm_vision_select_layer`` with (``cls_patch``) or without (``patch``) CLS: the ``clip`` encoder.
* ViP-LLaVA's ``clip_4layers_336``: CLIP-L/14-336 (always ``openai/clip-vit-large-patch14-336``, whatever
  the config says), layers ``[-2, -5, -8, -11, 6]`` concatenated: the ``clip-multilayer`` encoder.
* LLaVA-S2 / DenseFusion-S2's ``CLIPVisionTowerS2`` (``s2: true``, ``s2_scales``): the ``s2`` encoder over
  ``clip``. DenseFusion's stage 3 names the tower its stage 2 tuned by a path; the release usually keeps
  the tuned weights in the checkpoint too, and those win.
* ConvLLaVA's ``ConvNeXtCLIPVisionTower``: the ``convnext5`` encoder (see ``ConvNeXtRepoTower``).
* Ross's ``SiglipVisionTower``: the ``siglip`` encoder (see ``SigLIPRepoTower``).

Weights: a tower folder holds ``vision_model.*`` (a full ``CLIPModel`` folder also holds a text half,
which is skipped); a checkpoint that kept its tower holds ``model.vision_tower.vision_tower.vision_model.*``.
Both map to the encoder's ``vision.*`` (transformers 5 dropped the ``vision_model`` level).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmkit.errors import ConfigError
from vlmkit.interop.llava_conversion import RepoTowerConversion
from vlmkit.model.config import ComponentConfig

from . import transformers_convnext_layout
from .clip import _ARCH_KEYS, CLIP_CONFIGS, VIP_LAYERS

VIP_TOWER = "clip_4layers_336"
VIP_HUB_TOWER = "openai/clip-vit-large-patch14-336"
#: towers whose architecture is known without their folder (the checkpoint holds their weights)
KNOWN_TOWERS = {"openai/clip-vit-large-patch14-336": "large-336", "openai/clip-vit-large-patch14": "large-224"}
_SELECT = {"patch": "patch", "cls_patch": "cls_patch"}


def _vision_config(tower: Path | None, reference: str, where: str) -> dict[str, Any]:
    """The CLIP vision architecture: from the tower folder's config.json, or a known hub tower."""
    if tower is None:
        if reference in KNOWN_TOWERS:
            return dict(CLIP_CONFIGS[KNOWN_TOWERS[reference]])
        raise ConfigError(f"{where}: the architecture of tower '{reference}' is unknown without its folder; pass "
                          "--vision-tower PATH")
    from transformers import CLIPVisionConfig

    try:
        cfg = CLIPVisionConfig.from_pretrained(str(tower))
    except Exception as exc:  # noqa: BLE001 - transformers raises several types for a bad folder
        raise ConfigError(f"{tower}: not a CLIP vision tower folder ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
    return {k: v for k, v in cfg.to_dict().items() if k in _ARCH_KEYS}


def _vision_rel(name: str) -> str | None:
    rest = name.removeprefix("vision_model.")
    return None if rest == name else "vision." + rest


class CLIPRepoTower(RepoTowerConversion):
    components = ("clip",)
    variant = "LLaVA-1.5"
    detection = "mm_vision_tower is a CLIP tower (its folder's model_type, else 'clip' in the name), no s2"
    tower_folder = "clip-vit-tower"  # 'clip' (Ross), 'clip-vit' (ConvLLaVA) and a path (LLaVA) all pick CLIP

    def claims(self, config: dict[str, Any], tower_config: dict[str, Any] | None = None) -> bool:
        ref = str(config.get("mm_vision_tower", ""))
        if config.get("s2") or ref == VIP_TOWER:
            return False
        if tower_config is not None:  # the folder knows: CLIPModel or CLIPVisionModel
            return tower_config.get("model_type") in ("clip", "clip_vision_model")
        return "clip" in ref.lower()

    def component_config(self, config: dict[str, Any], tower: Path | None, resize: str) -> ComponentConfig:
        select = config.get("mm_vision_select_feature", "patch")
        if select not in _SELECT:
            raise ConfigError(f"mm_vision_select_feature: '{select}' is not 'patch' or 'cls_patch'")
        layer = config.get("mm_vision_select_layer", -1)
        return ComponentConfig("clip", {"config": _vision_config(tower, self.tower_reference(config), "mm_vision_tower"),
                                        "feature_layer": int(layer), "select": _SELECT[select], "resize": resize})

    def checkpoint_name(self, name: str) -> str | None:
        rest = name.removeprefix("vision_tower.")
        return _vision_rel(rest) if rest != name else None

    def tower_name(self, name: str) -> str | None:
        return _vision_rel(name)

    def to_checkpoint_name(self, name: str, component: Any) -> str | None:
        rest = name.removeprefix("vision.")
        return None if rest == name else "vision_tower.vision_model." + rest

    def problems(self, component: Any) -> list[str]:
        vision = getattr(component, "vision", None)
        if getattr(getattr(vision, "config", None), "model_type", None) != "clip_vision_model":
            return ["has no CLIP vision tower (attribute 'vision')"]
        layers = getattr(component, "feature_layers", None) or []
        if len(layers) != 1 or getattr(component, "select", None) not in _SELECT:
            return ["the LLaVA codebase's CLIP tower reads one layer, with select 'patch' or 'cls_patch'"]
        return []

    def repo_config(self, component: Any) -> dict[str, Any]:
        return {"mm_hidden_size": component.vision.config.hidden_size,
                "mm_vision_select_layer": component.feature_layers[0], "mm_vision_select_feature": component.select}

    def save_tower(self, component: Any, folder: Path) -> str:
        save_clip_tower(component, folder)
        return str(folder.resolve())


def save_vision_tower(component: Any, folder: Path, architecture: str, model_type: str, processor: Any) -> None:
    """A transformers vision-tower folder as transformers 4.x reads it (``vision_model.*`` names): weights,
    config and the image processor."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {"vision_model." + k: v.detach().contiguous().clone() for k, v in component.vision.state_dict().items()
             if not k.endswith("position_ids")}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    cfg = component.vision.config.to_dict()
    cfg.update(architectures=[architecture], model_type=model_type)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, default=str) + "\n")
    processor.save_pretrained(folder)


def save_clip_tower(component: Any, folder: Path) -> None:
    """A ``CLIPVisionModel`` folder, with its processor."""
    from transformers import CLIPImageProcessor

    view = component.view
    save_vision_tower(component, folder, "CLIPVisionModel", "clip_vision_model",
                      CLIPImageProcessor(size={"shortest_edge": view.size},
                                         crop_size={"height": view.size, "width": view.size},
                                         image_mean=list(view.mean), image_std=list(view.std)))


class CLIPMultiLayerRepoTower(CLIPRepoTower):
    components = ("clip-multilayer",)
    variant = "ViP-LLaVA"
    detection = f"mm_vision_tower '{VIP_TOWER}' (always {VIP_HUB_TOWER}, layers {list(VIP_LAYERS)})"
    priority = 10

    def claims(self, config: dict[str, Any], tower_config: dict[str, Any] | None = None) -> bool:
        return config.get("mm_vision_tower") == VIP_TOWER

    def tower_reference(self, config: dict[str, Any]) -> str:
        return VIP_HUB_TOWER  # the original ignores the config's name and loads this one

    def component_config(self, config: dict[str, Any], tower: Path | None, resize: str) -> ComponentConfig:
        return ComponentConfig("clip-multilayer", {"config": _vision_config(tower, VIP_HUB_TOWER, "mm_vision_tower"),
                                                   "layers": list(VIP_LAYERS), "resize": resize})

    def problems(self, component: Any) -> list[str]:
        vision = getattr(component, "vision", None)
        if getattr(getattr(vision, "config", None), "model_type", None) != "clip_vision_model":
            return ["has no CLIP vision tower (attribute 'vision')"]
        if list(getattr(component, "feature_layers", [])) != list(VIP_LAYERS):
            return [f"ViP-LLaVA's {VIP_TOWER} reads layers {list(VIP_LAYERS)} (the original code fixes them)"]
        return []

    def repo_config(self, component: Any) -> dict[str, Any]:
        n = len(component.feature_layers)
        return {"mm_hidden_size": component.vision.config.hidden_size * n, "mm_vision_select_layer": -2,
                "mm_vision_select_feature": "patch"}

    def save_tower(self, component: Any, folder: Path) -> str:
        # ViP-LLaVA's code loads openai/clip-vit-large-patch14-336 whatever the config names; the tower is
        # written beside the checkpoint for vlmkit and for anyone who points that name at it
        save_clip_tower(component, folder)
        return VIP_TOWER


class S2RepoTower(CLIPRepoTower):
    """LLaVA-S2 / DenseFusion-S2's ``CLIPVisionTowerS2``: ``s2: true`` and ``s2_scales`` over a CLIP tower
    (the smallest scale is the tile, the largest the input size): the ``s2`` encoder over ``clip``."""

    components = ("s2",)
    variant = "LLaVA-S2 / DenseFusion-S2"
    detection = "s2: true (scales from s2_scales, default '336,672,1008') over a CLIP mm_vision_tower"
    config_fields = ("s2", "s2_scales")
    priority = 10

    def claims(self, config: dict[str, Any], tower_config: dict[str, Any] | None = None) -> bool:
        return bool(config.get("s2"))

    def component_config(self, config: dict[str, Any], tower: Path | None, resize: str) -> ComponentConfig:
        raw = str(config.get("s2_scales", "336,672,1008"))
        try:
            scales = sorted(int(s) for s in raw.split(","))
        except ValueError as exc:
            raise ConfigError(f"s2_scales: '{raw}' is not a comma-separated list of sizes") from exc
        inner = super().component_config(config, tower, resize)
        return ComponentConfig("s2", {"encoder": {"name": "clip", "args": inner.args}, "scales": scales})

    def checkpoint_name(self, name: str) -> str | None:
        rest = super().checkpoint_name(name)
        return None if rest is None else "inner." + rest

    def tower_name(self, name: str) -> str | None:
        rest = _vision_rel(name)
        return None if rest is None else "inner." + rest

    def to_checkpoint_name(self, name: str, component: Any) -> str | None:
        rest = name.removeprefix("inner.")
        return None if rest == name else super().to_checkpoint_name(rest, component.inner)

    def problems(self, component: Any) -> list[str]:
        inner = getattr(component, "inner", None)
        if inner is None or (getattr(inner, "component_name", "") or "").split(":")[-1] != "clip":
            return ["the LLaVA codebase's S2 tower wraps a CLIP tower ('clip' inner encoder)"]
        if min(component.scales) != inner.view.size:
            return [f"the original splits at the smallest scale, so it must equal the tower's size {inner.view.size}"]
        return super().problems(inner)

    def repo_config(self, component: Any) -> dict[str, Any]:
        inner = super().repo_config(component.inner)
        return {**inner, "mm_hidden_size": inner["mm_hidden_size"] * len(component.scales), "s2": True,
                "s2_scales": ",".join(str(s) for s in component.scales)}

    def save_tower(self, component: Any, folder: Path) -> str:
        save_clip_tower(component.inner, folder)
        return str(folder.resolve())


def _tower_json(tower: Path, name: str) -> dict[str, Any]:
    f = tower / name
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
    except ValueError as exc:
        raise ConfigError(f"{f}: not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


class ConvNeXtRepoTower(RepoTowerConversion):
    """ConvLLaVA's ``ConvNeXtCLIPVisionTower``: a transformers ``ConvNextModel`` whose fifth stage was added in
    its stage 1 (``vision_add_five_stage``) and saved with it; its last stage's raw map is the feature.

    ConvLLaVA saves the tower beside the checkpoint (``vision_tower/``: config with 5 stages, processor,
    ``pytorch_model.bin`` without the unused ``layernorm.*``) and leaves it out of the checkpoint. The
    input size is ``mm_vision_resolution`` when above 256 (the code's ``set_crop_size``), else the tower
    processor's crop size."""

    components = ("convnext5",)
    variant = "ConvLLaVA"
    detection = ("mm_vision_tower is a transformers ConvNeXt (its folder's model_type, else 'convnext' in the name "
                 "or vision_add_five_stage / mm_vision_resolution in config)")
    priority = 5
    config_fields = ("vision_add_five_stage", "mm_vision_resolution")
    tower_folder = "convnext-tower"

    def claims(self, config: dict[str, Any], tower_config: dict[str, Any] | None = None) -> bool:
        if tower_config is not None:
            return tower_config.get("model_type") == "convnext"
        ref = str(config.get("mm_vision_tower", "")).lower()
        return "convnext" in ref or "vision_add_five_stage" in config or "mm_vision_resolution" in config

    def component_config(self, config: dict[str, Any], tower: Path | None, resize: str) -> ComponentConfig:
        if tower is None:
            raise ConfigError(f"mm_vision_tower '{self.tower_reference(config)}': ConvLLaVA's tower architecture is "
                              "in its folder (config.json); pass --vision-tower PATH")
        layer = config.get("mm_vision_select_layer", -1)
        if layer != -1:
            raise ConfigError(f"mm_vision_select_layer: {layer}; ConvLLaVA's code drops the last ConvNeXt block for -2 "
                              "and reads the last stage otherwise; vlmkit maps -1 (what every released script uses)")
        cfg = _tower_json(tower, "config.json")
        if cfg.get("model_type") != "convnext":
            raise ConfigError(f"{tower / 'config.json'}: model_type '{cfg.get('model_type')}' is not a transformers "
                              "ConvNeXt")
        depths = list(cfg.get("depths", []))
        add = int(config.get("vision_add_five_stage", 0) or 0)
        args: dict[str, Any] = {"config": {k: cfg[k] for k in ("hidden_sizes", "depths", "hidden_act",
                                                               "layer_scale_init_value", "num_channels", "patch_size")
                                           if k in cfg}, "resize": resize}
        if len(depths) == 4 and add:  # a tower from before ConvLLaVA's stage 1: the fifth stage is added
            args.update(stage5_depth=add, stage5_width=int(config.get("vision_five_stage_width", 1536)))
        elif len(depths) != 5:
            raise ConfigError(f"{tower / 'config.json'}: {len(depths)} stages and no vision_add_five_stage; "
                              "ConvLLaVA's tower has 5")
        resolution = int(config.get("mm_vision_resolution", 256) or 256)
        crop = (_tower_json(tower, "preprocessor_config.json").get("crop_size") or {}).get("height")
        args["image_size"] = resolution if resolution > 256 else int(crop or cfg.get("image_size", 224))
        return ComponentConfig("convnext5", args)

    def checkpoint_name(self, name: str) -> str | None:
        rest = name.removeprefix("vision_tower.")
        return self.tower_name(rest) if rest != name else None

    def tower_name(self, name: str) -> str | None:
        """transformers' ConvNeXt name -> the tower's (timm's); the final ``layernorm.*``, unused by ConvLLaVA, is
        skipped."""
        return transformers_convnext_layout.from_transformers(name)

    def to_checkpoint_name(self, name: str, component: Any) -> str | None:
        hf = transformers_convnext_layout.to_transformers(name)
        if hf is None:
            return None
        return "vision_tower." + (hf if hf.startswith("embeddings.") else "encoder." + hf)

    def problems(self, component: Any) -> list[str]:
        if len(getattr(component, "stages", [])) != 5:
            return ["ConvLLaVA's tower is a 5-stage ConvNeXt ('convnext5')"]
        if component.arch.get("conv_mlp"):
            return ["ConvLLaVA's tower is a transformers ConvNeXt, whose blocks have a linear MLP; this trunk's MLP is "
                    "1x1 convolutions (timm's conv_mlp)"]
        return []

    def repo_config(self, component: Any) -> dict[str, Any]:
        return {"mm_hidden_size": component.output_dim, "mm_vision_select_layer": -1,
                "mm_vision_select_feature": "patch", "mm_vision_resolution": component.view.size}

    def save_tower(self, component: Any, folder: Path) -> str:
        """As ConvLLaVA's train.py saves it: the 5-stage config, the processor, the weights (no layernorm)."""
        from safetensors.torch import save_file
        from transformers import CLIPImageProcessor, ConvNextConfig

        folder.mkdir(parents=True, exist_ok=True)
        arch = {k: v for k, v in component.architecture().items() if k != "conv_mlp"}
        arch.update(hidden_sizes=list(component.widths), depths=list(arch["depths"]) + [component.stage5_depth])
        cfg = ConvNextConfig(**arch).to_dict()
        cfg.update(num_stages=5, image_size=component.view.size, model_type="convnext",
                   architectures=["ConvNextModel"], stage_names=["stem"] + [f"stage{i}" for i in range(1, 6)],
                   out_features=["stage5"], out_indices=[5])
        (folder / "config.json").write_text(json.dumps(cfg, indent=2, default=str) + "\n")
        state = {}
        for k, v in component.state_dict().items():
            name = self.to_checkpoint_name(k, component)
            if name is not None:
                state[name.removeprefix("vision_tower.")] = v.detach().contiguous().clone()
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        view = component.view
        CLIPImageProcessor(size={"shortest_edge": view.size}, crop_size={"height": view.size, "width": view.size},
                           image_mean=list(view.mean), image_std=list(view.std)).save_pretrained(folder)
        return str(folder.resolve())


SIGLIP_HUB = {"google/siglip-so400m-patch14-384": "so400m-384"}


class SigLIPRepoTower(RepoTowerConversion):
    """Ross's ``SiglipVisionTower`` and LLaVA-NeXT's ``SigLipVisionTower`` (OneVision; Ross's is its copy): a
    ``SiglipVisionModel`` read at layer -2 (LLaVA-NeXT deletes the last layer and reads the last; both ignore
    ``mm_vision_select_layer``), all 729 tokens (SigLIP has no CLS): the ``siglip`` encoder. The pooling head,
    which a transformers 4.x checkpoint stores, is never used and is skipped."""

    components = ("siglip",)
    variant = "Ross, LLaVA-OneVision (SigLIP)"
    detection = "mm_vision_tower is a SigLIP tower (its folder's model_type, else 'siglip' in the name)"
    priority = 5
    tower_folder = "siglip-tower"  # Ross's builder picks SigLIP by 'siglip' in the name

    def claims(self, config: dict[str, Any], tower_config: dict[str, Any] | None = None) -> bool:
        if tower_config is not None:
            return tower_config.get("model_type") in ("siglip", "siglip_vision_model")
        return "siglip" in str(config.get("mm_vision_tower", "")).lower()

    def component_config(self, config: dict[str, Any], tower: Path | None, resize: str) -> ComponentConfig:
        from .siglip import _ARCH_KEYS as SIGLIP_KEYS
        from .siglip import SIGLIP_CONFIGS

        ref = self.tower_reference(config)
        if tower is None:
            if ref not in SIGLIP_HUB:
                raise ConfigError(f"mm_vision_tower '{ref}': the architecture of this SigLIP tower is unknown without "
                                  "its folder; pass --vision-tower PATH")
            arch = dict(SIGLIP_CONFIGS[SIGLIP_HUB[ref]])
        else:
            from transformers import SiglipVisionConfig

            try:
                cfg = SiglipVisionConfig.from_pretrained(str(tower))
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"{tower}: not a SigLIP vision tower folder ({type(exc).__name__})") from exc
            arch = {k: v for k, v in cfg.to_dict().items() if k in SIGLIP_KEYS}
        return ComponentConfig("siglip", {"config": arch, "feature_layer": -2, "resize": resize})

    def checkpoint_name(self, name: str) -> str | None:
        rest = name.removeprefix("vision_tower.")
        return self.tower_name(rest) if rest != name else None

    def tower_name(self, name: str) -> str | None:
        rest = _vision_rel(name)
        return None if rest is None or rest.startswith("vision.head.") else rest

    def unused(self, name: str) -> bool:
        return name.startswith("vision_tower.vision_model.head.")

    def to_checkpoint_name(self, name: str, component: Any) -> str | None:
        rest = name.removeprefix("vision.")
        return None if rest == name else "vision_tower.vision_model." + rest

    def problems(self, component: Any) -> list[str]:
        vision = getattr(component, "vision", None)
        if getattr(getattr(vision, "config", None), "model_type", None) not in ("siglip_vision_model", "siglip"):
            return ["has no SigLIP vision tower (attribute 'vision')"]
        if list(getattr(component, "feature_layers", [])) != [-2]:
            return ["Ross's SigLIP tower reads layer -2 (its code fixes it)"]
        return []

    def repo_config(self, component: Any) -> dict[str, Any]:
        return {"mm_hidden_size": component.vision.config.hidden_size, "mm_vision_select_layer": -2,
                "mm_vision_select_feature": "patch"}

    def named_reference(self, component: Any) -> str | None:
        # LLaVA-NeXT's build_vision_tower takes an existing path for CLIP and a SigLIP only by 'siglip' in a name
        # that is no path: OneVision's releases name the hub tower
        return "google/siglip-so400m-patch14-384"

    def save_tower(self, component: Any, folder: Path) -> str:
        from transformers import SiglipImageProcessor

        view = component.view
        save_vision_tower(component, folder, "SiglipVisionModel", "siglip_vision_model",
                          SiglipImageProcessor(size={"height": view.size, "width": view.size},
                                               image_mean=list(view.mean), image_std=list(view.std)))
        return str(folder.resolve())
