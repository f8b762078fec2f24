"""Find and read the weights of a ConvNeXt trunk (e.g. LAION ``convnext_large_d_320``) for vlmkit's ConvNeXt
towers, which are made of timm's modules: a timm or open_clip file loads under its own names (its prefix
removed, nothing renamed); a transformers folder goes through ``transformers_convnext_layout``.

The forms LAION ConvNeXt towers come in (``WEIGHT_FORMS``), all accepted by ``path``:

* a transformers ConvNeXt folder (``config.json`` with ``model_type: convnext``), ConvLLaVA's included;
* open_clip's ``open_clip_pytorch_model.bin`` (what MG-LLaVA reads) or ``open_clip_model.safetensors``;
* timm's ``model.safetensors`` / ``pytorch_model.bin`` (a timm hub folder);
* a folder holding any of those files.

Pickled ``.bin``/``.pt``/``.pth`` files are read only with ``torch.load(weights_only=True)``. open_clip
stores the trunk under ``visual.trunk.``; a bare timm model has no prefix. Heads, the text tower and
``norm_pre`` are ignored. The architecture (widths, depths, stem patch, linear or 1x1-conv MLP, layer scale) is
read from tensor shapes (the safetensors header alone), so a model can be rebuilt without reading any weight.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from vlmkit.errors import ConfigError

_STEM_KEY = "stem.0.weight"


def trunk_prefix(keys: list[str], source: str) -> str:
    """The key prefix in front of the timm trunk (``visual.trunk.``, ``trunk.`` or nothing)."""
    stems = sorted((k for k in keys if k.endswith(_STEM_KEY)), key=len)
    if not stems:
        raise ConfigError(f"encoder 'convnext': {source} holds no ConvNeXt trunk (no key ending in '{_STEM_KEY}'); "
                          "expected a timm or open_clip ConvNeXt state dict")
    return stems[0][: -len(_STEM_KEY)]


def trunk_architecture(shapes: Mapping[str, tuple[int, ...]], source: str) -> dict[str, Any]:
    """The trunk's architecture in the tower's config keys, from tensor shapes alone."""
    prefix = trunk_prefix(list(shapes), source)
    rel = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
    if any(".mlp.grn." in k for k in rel):
        raise ConfigError(f"encoder 'convnext': {source} is a ConvNeXt-V2 trunk (GRN), which the LAION ConvNeXt "
                          "towers are not; the 'timm' encoder builds it (--set encoder.file=PATH)")
    depth: dict[int, int] = {}
    width: dict[int, int] = {}
    block = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.weight$")
    for key, shape in rel.items():
        m = block.match(key)
        if m:
            s, b = int(m.group(1)), int(m.group(2))
            depth[s] = max(depth.get(s, 0), b + 1)
            width[s] = int(shape[0])
    if not depth or sorted(depth) != list(range(len(depth))):
        raise ConfigError(f"encoder 'convnext': {source}: cannot read the stage layout of the trunk")
    stem = rel[_STEM_KEY]
    arch: dict[str, Any] = {"hidden_sizes": [width[s] for s in sorted(width)],
                            "depths": [depth[s] for s in sorted(depth)],
                            "num_channels": int(stem[1]), "patch_size": int(stem[-1])}
    if len(rel.get("stages.0.blocks.0.mlp.fc1.weight", ())) == 4:
        arch["conv_mlp"] = True  # timm's conv_mlp variant: the MLP is two 1x1 convolutions
    if "stages.0.blocks.0.gamma" not in rel:
        arch["layer_scale_init_value"] = 0.0
    return arch


#: one line for errors and ``vlmkit info convnext``
WEIGHT_FORMS = ("a transformers ConvNeXt folder (config.json model_type 'convnext'), an open_clip or timm "
                "weights file (open_clip_pytorch_model.bin, open_clip_model.safetensors, model.safetensors, "
                "pytorch_model.bin; .bin/.pt/.pth read with weights_only=True), or a folder holding one")
#: file names looked for in a folder that is not a transformers ConvNeXt, in this order
TRUNK_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


def resolve_weights(path: str | Path, source: str) -> tuple[str, Path]:
    """``("hf", folder)`` for a transformers ConvNeXt folder, else ``("trunk", file)`` for a timm/open_clip file."""
    import json

    p = Path(path)
    if p.is_file():
        if p.suffix == ".safetensors" or p.suffix in PICKLE_SUFFIXES:
            return "trunk", p
        raise ConfigError(f"{source}: {p} is not a weights file vlmkit reads; accepted: {WEIGHT_FORMS}")
    if p.is_dir():
        config = p / "config.json"
        if config.is_file():
            try:
                model_type = json.loads(config.read_text()).get("model_type")
            except (ValueError, AttributeError):
                model_type = None
            if model_type == "convnext":
                return "hf", p
        for name in TRUNK_FILES:
            if (p / name).is_file():
                return "trunk", p / name
        found = ", ".join(sorted(f.name for f in p.iterdir())[:8]) or "nothing"
        raise ConfigError(f"{source}: {p} holds no ConvNeXt weights vlmkit reads (found {found}); accepted: "
                          f"{WEIGHT_FORMS}")
    return "hf", p  # a hub id: transformers resolves it (from its cache when offline)


def _pickled(path: Path) -> dict[str, torch.Tensor]:
    from vlmkit.errors import CheckpointError
    from vlmkit.interop.weights import load_pickled_tensors

    try:
        return load_pickled_tensors(path)
    except CheckpointError as exc:
        raise ConfigError(f"encoder 'convnext': {exc}") from exc


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes: from a safetensors header (no weight is read), or a weight-only pickle."""
    from safetensors import safe_open

    if Path(path).suffix in PICKLE_SUFFIXES:
        return {k: tuple(v.shape) for k, v in _pickled(Path(path)).items()}
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise ConfigError(f"encoder 'convnext': cannot read {path}: {type(exc).__name__}: {exc}") from exc


def read_trunk(path: str | Path) -> dict[str, torch.Tensor]:
    """The trunk's tensors under timm's own names (the file's prefix removed); nothing else is read (an open_clip
    file also holds a text tower)."""
    from safetensors import safe_open

    if Path(path).suffix in PICKLE_SUFFIXES:
        state = _pickled(Path(path))
        prefix = trunk_prefix(list(state), str(path))
        return _trunk_only(state, prefix)
    try:
        with safe_open(str(path), framework="pt") as f:
            prefix = trunk_prefix(list(f.keys()), str(path))
            state = {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise ConfigError(f"encoder 'convnext': cannot read {path}: {type(exc).__name__}: {exc}") from exc
    return _trunk_only(state, prefix)


def _trunk_only(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The stem and stages under their timm names; heads, ``norm_pre`` and a text tower are left out."""
    out = {}
    for key, value in state.items():
        rel = key[len(prefix):]
        if key.startswith(prefix) and rel.startswith(("stem.", "stages.")):
            out[rel] = value
    return out
