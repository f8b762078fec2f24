"""MG-LLaVA's released checkpoints (PhoenixZ810/MG-LLaVA, XTuner) -> vlmkit (format ``mg-llava``).

MG-LLaVA trains with XTuner and releases what XTuner's ``MultiFuseObjectLLaVAModel.state_dict`` keeps: the
trainable parts only. A checkpoint (``iter_N.pth``, an mmengine checkpoint whose ``state_dict`` holds them,
or a DeepSpeed folder whose ``mp_rank_00_model_states.pt`` holds them under ``module``) has:

==================================  =============================================================
MG-LLaVA                            vlmkit (the ``mg-llava`` preset's layout)
==================================  =============================================================
``projector.model.{0,2}.*``         the final ``mlp2x_gelu`` connector, ``proj.{0,2}.*``
``bbox_projector.model.{0,2}.*``    ``roi``'s object-token projector, ``projector.{0,2}.*``
``fuse_module.*``                   ``convgate`` (``slow_conv``, ``slow_proj``, ``fast_conv``, ``fast_proj``, ``gate``)
``llm.*`` (after SFT)               the LLM (``llm.model.*``, ``llm.lm_head.*``)
==================================  =============================================================

The frozen encoders are not in it: the CLIP-L/336 folder (``--vision-tower``), LAION's ConvNeXt in any form
``convnext`` reads (``--vision-tower-aux``: ``open_clip_pytorch_model.bin`` as MG-LLaVA reads it), and the
LLM's folder (``--llm``: its config and tokenizer, and its weights when the checkpoint has none, i.e. after
pretraining only). Pickles are read only with ``torch.load(weights_only=True)``. Variants that this layout
does not express (``use_multi_level``'s ``multi_level_linear``, the ``fuse_model=1..3`` modules) leave
tensors with no place, which is an error naming them.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

from vlmkit.errors import CheckpointError, ConfigError
from vlmkit.interop.fill import Source, fill_model
from vlmkit.interop.formats import CheckpointFormat, ImportOptions
from vlmkit.interop.tokenizer_files import copy_tokenizer
from vlmkit.interop.weights import MemoryWeights, WeightFiles
from vlmkit.model.config import ModelConfig

from .presets import MG_LLAVA

#: the parts every MG-LLaVA checkpoint holds
SIGNATURE = ("fuse_module.", "bbox_projector.", "projector.")
DEEPSPEED_FILE = "mp_rank_00_model_states.pt"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
#: MG-LLaVA's prompt templates by LLM (its configs); vicuna is vlmkit's vicuna_v1
TEMPLATES = {"llama": "vicuna_v1"}


def checkpoint_file(src: Path) -> Path:
    """The weights file of an MG-LLaVA release: the file itself, a DeepSpeed folder's model states, or the
    one checkpoint file in a folder."""
    if src.is_file():
        return src
    if (src / DEEPSPEED_FILE).is_file():
        return src / DEEPSPEED_FILE
    found = sorted(p for p in src.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    found += sorted(p / DEEPSPEED_FILE for p in src.iterdir() if (p / DEEPSPEED_FILE).is_file())
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ConfigError(f"{src}: an MG-LLaVA release folder should hold one checkpoint (iter_N.pth or a DeepSpeed "
                          f"folder); found {names}: pass the file itself")
    return found[0]


def _weights(file: Path) -> WeightFiles:
    if file.suffix == ".safetensors":
        return WeightFiles([file])
    from vlmkit.interop.weights import load_pickled_tensors

    try:
        return MemoryWeights(load_pickled_tensors(file), str(file))
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}. An mmengine checkpoint whose metadata the restricted unpickler refuses can be "
                              "reduced to its tensors in a trusted environment: python -c \"import torch, "
                              "safetensors.torch as s; s.save_file(torch.load('iter_N.pth')['state_dict'], "
                              "'mg_llava.safetensors')\"") from exc


def _looks_like(src: Path) -> bool:
    try:
        file = checkpoint_file(src)
    except (ConfigError, OSError):
        return False
    try:
        keys = WeightFiles([file]).headers().keys() if file.suffix == ".safetensors" else None
    except CheckpointError:
        return False
    if keys is None:  # a pickle: only its name and place can be looked at without unpickling
        return file.suffix in (".pth", ".pt") and (file.name.startswith("iter_") or file.name == DEEPSPEED_FILE)
    return all(any(k.startswith(p) for k in keys) for p in SIGNATURE)


class MGLLaVAFormat(CheckpointFormat):
    name = "mg-llava"
    description = ("MG-LLaVA (PhoenixZ810/MG-LLaVA, XTuner): the trainable parts (projector, box projector, "
                   "Conv-Gate, LLM after SFT) over separate CLIP, ConvNeXt and LLM folders")
    detection = ("no config.json; an XTuner checkpoint (iter_N.pth, a DeepSpeed folder, or a .safetensors holding "
                 "fuse_module.*, bbox_projector.*, projector.*)")
    releases = ("PhoenixZ/MG-LLaVA (Vicuna-7B/13B, Llama3-8B, Phi3-3.8B, Yi1.5-34B)",)
    config_fields = ()
    no_export_reason = ("MG-LLaVA's code builds its model from an XTuner Python config; vlmkit writes none "
                        "(its checkpoints leave through hf-llava-style formats only where they fit)")

    def detect(self, folder: Path, config: dict[str, Any]) -> bool:
        return not config and _looks_like(folder)

    def import_checkpoint(self, src: Path, out: Path, options: ImportOptions) -> Path:
        with tempfile.TemporaryDirectory(prefix="vlmkit-tokenizer-") as scratch:
            return _import(src, out, options, Path(scratch))


def _required(value: str | None, flag: str, what: str) -> Path:
    if not value:
        raise ConfigError(f"mg-llava: {what} is not in MG-LLaVA's checkpoint; pass {flag} PATH")
    path = Path(value)
    if not path.exists():
        raise ConfigError(f"{flag} {path}: no such file or folder")
    return path


def _model_config(clip: Path, convnext: Path, llm: Path, scratch: Path, options: ImportOptions,
                  shapes: dict[str, tuple[int, ...]] | None = None) -> ModelConfig:
    doc = copy.deepcopy(MG_LLAVA)
    doc["encoders"][0]["args"] = {**doc["encoders"][0]["args"], "path": str(clip)}
    doc["encoders"][0]["args"].pop("config", None)
    doc["encoders"][1]["args"] = {**doc["encoders"][1]["args"], "path": str(convnext), "resize": "pad"}
    doc["encoders"][0]["args"]["resize"] = "pad"  # pad_image_to_square=True
    llm_config = json.loads((llm / "config.json").read_text()) if (llm / "config.json").is_file() else None
    if llm_config is None:
        raise ConfigError(f"--llm {llm}: no config.json (the LLM's folder, e.g. lmsys/vicuna-7b-v1.5)")
    copy_tokenizer(llm, scratch, "--llm must be the LLM's folder with its tokenizer (e.g. lmsys/vicuna-7b-v1.5)")
    keep = {k: v for k, v in llm_config.items() if k not in ("architectures", "transformers_version", "auto_map",
                                                             "_name_or_path")}
    doc["llm"] = {"name": "hf", "args": {"config": keep, "tokenizer": str(options.tokenizer or scratch),
                                         **({"dtype": options.dtype} if options.dtype else {})}}
    doc["template"] = TEMPLATES.get(keep.get("model_type"), "chat_template")
    gate = (shapes or {}).get("fuse_module.gate.0.weight")
    if gate is not None:  # DualPathFuseModule's gate is low_res_dim // 2 wide (512 for CLIP-L)
        doc["fusion"][1]["args"] = {**doc["fusion"][1]["args"], "gate_hidden": int(gate[0])}
    cfg = ModelConfig.from_dict(doc, where="mg-llava import")
    for assignment in options.sets:
        cfg.set(assignment)
    return cfg


def _import(src: Path, out: Path, options: ImportOptions, scratch: Path) -> Path:
    from vlmkit.model.assembly import build_model
    from vlmkit.model.checkpoint import save_checkpoint

    file = checkpoint_file(src)
    clip = _required(options.vision_tower, "--vision-tower", "the CLIP tower (openai/clip-vit-large-patch14-336)")
    convnext = _required(options.aux_vision_tower, "--vision-tower-aux",
                         "the ConvNeXt tower (laion/CLIP-convnext_large_d_320...ft-soup)")
    llm = _required(options.llm, "--llm", "the LLM's config and tokenizer")
    weights = _weights(file)
    keys = weights.headers()
    cfg = _model_config(clip, convnext, llm, scratch, options, {k: h[1] for k, h in keys.items()})
    # the encoders load their own weights, in every form they read (the LLM is built from its config only);
    # everything else must come from the checkpoint or the LLM's folder
    model = build_model(cfg, pretrained=True)
    model.eval()
    names = [(getattr(c, "component_name", "") or "").split(":")[-1] for c in model.connectors]
    if names[-3:] != ["roi", "convgate", "mlp2x_gelu"]:
        raise ConfigError(f"mg-llava: the model's connectors are {names}; MG-LLaVA's are roi, convgate, mlp2x_gelu "
                          "(a --set changed them)")
    n = len(names)
    parts = {"projector.model.": f"connectors.{n - 1}.proj.", "bbox_projector.model.": f"connectors.{n - 3}.projector.",
             "fuse_module.": f"connectors.{n - 2}.", "llm.": "llm.model.",
             "visual_encoder.vision_model.": "encoders.0.vision."}
    tuned_tower = any(k.startswith("visual_encoder.") for k in keys)  # freeze_visual_encoder=False
    state = {k: v for k, v in model.persistent_state_dict().items()
             if not k.startswith("encoders.") or (tuned_tower and k.startswith("encoders.0."))}

    def from_checkpoint(key: str) -> str | None:
        for theirs, ours in parts.items():
            if key.startswith(theirs):
                return ours + key[len(theirs):]
        return None

    sources = [Source(weights, from_checkpoint)]
    llm_in_checkpoint = any(k.startswith("llm.") for k in keys)
    if not llm_in_checkpoint:  # a pretrain-stage checkpoint: the LLM was frozen, its weights are the folder's
        sources.append(Source(WeightFiles.in_folder(llm), lambda key: "llm.model." + key, partial=True))
    fill_model(model, sources, origin=file, progress=options.progress, state=state)
    record = {"format": "mg-llava", "path": str(src), "checkpoint": str(file), "vision_tower": str(clip),
              "aux_vision_tower": str(convnext), "llm": str(llm),
              "llm_from": "checkpoint" if llm_in_checkpoint else "--llm folder"}
    return save_checkpoint(model, out, extra={"imported_from": record})
