"""Conversion between vlmkit checkpoints and transformers' ``LlavaForConditionalGeneration`` (LLaVA-1.5).

An HF Llava model is one vlmkit layout: one encoder (HF's vision tower), no fusion, one connector
(HF's multimodal projector), and a transformers causal LM, trained with the LM objective. ``import_hf``
reads such a folder (safetensors only, never pickles) into a vlmkit checkpoint; ``export_hf`` writes a
vlmkit checkpoint of that layout as an HF Llava folder, and refuses, naming the part, anything that HF
Llava cannot express.

This module knows no encoder and no connector. The vision tower and the projector are converted by the
plugins that own the matching components, found through the ``vlmkit_llava_converters`` hook (the
contract is ``vlmkit.interop.llava_conversion``); when none is installed for a part, the error names the part.
Core does the rest: safetensors, the language model, the image token, the order of the work, errors.

Weights are matched through one canonical naming (``vision.*`` and ``projector.*`` as the converters
name them, ``text.*``, ``lm_head.*``) so that every on-disk HF layout maps the same way: the 4.x hub
layout (``language_model.model.*``, ``vision_tower.vision_model.*``), the layout transformers 5 writes
(``language_model.model.*``, ``vision_tower.*``) and the in-memory one (``model.language_model.*``).

The image token. vlmkit marks an image by one ``IMAGE_PLACEHOLDER`` (-200) id that splicing expands;
HF Llava repeats ``image_token_index`` once per visual token and looks that id up in the embedding table
before overwriting it, so the id must lie inside the vocabulary. On export, an ``<image>`` token already
in the tokenizer is used as is. Otherwise ``<image>`` is added as a special token; if its id falls in
the padding rows of the embedding table (vocabularies padded to a multiple of 64) nothing else changes,
else the input and output embeddings grow by one row, set to zero: the input row is never used (image
positions are overwritten) and the output row gives the token a constant logit of 0, so the logits of
every other token are unchanged. The token is also put in ``generation_config.suppress_tokens`` so
``generate`` never emits it.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vlmkit.errors import CheckpointError, ConfigError
from vlmkit.interop.fill import Source, fill_model
from vlmkit.interop.formats import STORED_DTYPES, import_dtype
from vlmkit.interop.llava_conversion import LlavaConverters, LlavaProjectorConversion, LlavaVisionConversion, llava_converters
from vlmkit.interop.tokenizer_files import require_tokenizer
from vlmkit.interop.weights import WeightFiles
from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.model.tiling import Tiling
from vlmkit.output_folder import prepare_output_folder
from vlmkit.progress import ProgressCallback

if TYPE_CHECKING:
    import pluggy

    from vlmkit.model.vlm import VisionLanguageModel

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
#: config attributes with which a causal LM rescales its logits (HF Llava's lm_head cannot)
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
SAFETENSORS_DTYPES = STORED_DTYPES  # the name earlier releases exported


# -- weight names --------------------------------------------------------------------------------
#: the transformers Llava-shaped families: model_type -> (config class, model class, what it is)
FAMILIES = {
    "llava": ("LlavaConfig", "LlavaForConditionalGeneration", "LLaVA-1.5"),
    "vipllava": ("VipLlavaConfig", "VipLlavaForConditionalGeneration", "ViP-LLaVA"),
    "llava_next": ("LlavaNextConfig", "LlavaNextForConditionalGeneration", "LLaVA-NeXT"),
    "llava_onevision": ("LlavaOnevisionConfig", "LlavaOnevisionForConditionalGeneration", "LLaVA-OneVision"),
}
#: the families that tile images (AnyRes with spatial_unpad); the others see one crop per image
TILED_FAMILIES = ("llava_next", "llava_onevision")
#: where transformers keeps the image-newline embedding (4.x hub layout, then transformers 5's)
NEWLINE_KEYS = ("image_newline", "model.image_newline")
NEWLINE_VLMKIT = "tile_merge.image_newline"


def _family_classes(family: str) -> tuple[Any, Any]:
    import transformers

    cfg_name, model_name, _ = FAMILIES[family]
    return getattr(transformers, cfg_name), getattr(transformers, model_name)


def _strip(key: str, prefix: str) -> str | None:
    return key[len(prefix):] if key.startswith(prefix) else None


VISION_PREFIXES = ("model.vision_tower.", "vision_tower.")
PROJECTOR_PREFIXES = ("model.multi_modal_projector.", "multi_modal_projector.")


def _prefixed(head: str, rest: str | None) -> str | None:
    return None if rest is None else head + rest


class LlavaLayout:
    """The canonical naming of one Llava-shaped model: core's LM mapping plus the converters' parts."""

    def __init__(self, vision: LlavaVisionConversion, projector: LlavaProjectorConversion):
        self.vision, self.projector = vision, projector

    def hf_canonical(self, key: str, lm_base_prefix: str = "model") -> str | None:
        """The canonical name of an HF Llava weight (any of the known layouts), or None if foreign."""
        for head in ("lm_head.", "language_model.lm_head."):
            if (rest := _strip(key, head)) is not None:
                return "lm_head." + rest
        if (rest := _strip(key, "model.language_model.")) is not None:
            return "text." + rest
        if (rest := _strip(key, "language_model.")) is not None:  # the causal LM (with its base prefix) inside
            for base in dict.fromkeys((lm_base_prefix + ".", "model.")):
                if (inner := _strip(rest, base)) is not None:
                    return "text." + inner
            return None
        if key in NEWLINE_KEYS:
            return "newline"
        for prefix in VISION_PREFIXES:
            if (rest := _strip(key, prefix)) is not None:
                return _prefixed("vision.", self.vision.canonical_from_hf(rest))
        for prefix in PROJECTOR_PREFIXES:
            if (rest := _strip(key, prefix)) is not None:
                return _prefixed("projector.", self.projector.canonical_from_hf(rest))
        return None

    def vlmkit_canonical(self, key: str, lm_base: str, lm_head: str) -> str | None:
        """The canonical name of a vlmkit weight of a Llava-shaped model, or None if it has no HF place."""
        if key == NEWLINE_VLMKIT:
            return "newline"
        if (rest := _strip(key, "encoders.0.")) is not None:
            return _prefixed("vision.", self.vision.canonical_from_vlmkit(rest))
        if (rest := _strip(key, "connectors.0.")) is not None:  # no fusion: the projector is connector 0
            return _prefixed("projector.", self.projector.canonical_from_vlmkit(rest))
        if (rest := _strip(key, f"llm.model.{lm_base}.")) is not None:
            return "text." + rest
        if (rest := _strip(key, f"llm.model.{lm_head}.")) is not None:
            return "lm_head." + rest
        return None


def lm_layout(llm_model: nn.Module) -> tuple[str, str]:
    """(base model attribute, output-embedding attribute) of a transformers causal LM."""
    base = llm_model.base_model_prefix
    head = llm_model.get_output_embeddings()
    head_name = next((n for n, m in llm_model.named_modules() if m is head), None)
    if not base or not hasattr(llm_model, base) or head_name is None:
        raise ConfigError(f"llm '{type(llm_model).__name__}': not a base model + output head; "
                          "HF Llava needs a transformers causal LM of that shape")
    return base, head_name


# -- import --------------------------------------------------------------------------------------
#: vlmkit's format name for each family
FORMAT_NAMES = {"llava": "hf-llava", "vipllava": "hf-vip-llava", "llava_next": "hf-llava-next",
                "llava_onevision": "hf-llava-onevision"}


def _read_llava_config(src: Path, family: str = "llava") -> Any:
    config_cls, model_cls_name, what = FAMILIES[family][0], FAMILIES[family][1], FAMILIES[family][2]
    f = src / "config.json"
    if not f.is_file():
        raise CheckpointError(f"{src}: no config.json (is it an HF model folder?)")
    try:
        raw = json.loads(f.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{f}: not valid JSON: {exc}") from exc
    if raw.get("model_type") != family:
        raise ConfigError(f"{f}: model_type is '{raw.get('model_type')}'; this import converts only '{family}' "
                          f"({model_cls_name}, {what})")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for part in ("text_config", "vision_config"):
        sub_type = (raw.get(part) or {}).get("model_type") if isinstance(raw.get(part), dict) else None
        if sub_type is not None and sub_type not in CONFIG_MAPPING:
            raise ConfigError(f"{f}: {part}.model_type '{sub_type}' is not a model type that transformers "
                              "knows (a newer transformers, or a typo?)")
    try:
        return _family_classes(family)[0].from_pretrained(str(src))
    except Exception as exc:  # noqa: BLE001 - transformers validates configs with several error types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{f}: not a valid {config_cls} config: {reason[:300]}") from exc


def _import_layout(hf: Any, converters: LlavaConverters) -> tuple[LlavaLayout, ComponentConfig, ComponentConfig]:
    """The converters for ``hf``'s vision tower and projector, and the components they map them to."""
    vision, encoder = converters.for_vision_config(hf)
    projector, connector = converters.for_projector_config(hf)
    return LlavaLayout(vision, projector), encoder, connector


def _model_config(hf: Any, encoder: ComponentConfig, connector: ComponentConfig, tokenizer: str,
                  dtype: str | None) -> ModelConfig:
    text = hf.text_config
    text_args = {k: v for k, v in text.to_diff_dict().items() if k != "transformers_version"}
    text_args["model_type"] = text.model_type
    if getattr(hf, "tie_word_embeddings", False):  # Llava ties lm_head to the embeddings when either config says so
        text_args["tie_word_embeddings"] = True
    llm_args: dict[str, Any] = {"config": text_args, "tokenizer": tokenizer}
    if dtype is not None:
        llm_args["dtype"] = dtype
    max_len = min(2048, int(getattr(text, "max_position_embeddings", 2048) or 2048))
    cfg = ModelConfig(encoders=[encoder], connector=connector, llm=ComponentConfig("hf", llm_args),
                      objectives=[ComponentConfig("lm")], max_length=max_len)
    if hf.model_type in TILED_FAMILIES:
        cfg.tiling = hf_tiling(hf)
        cfg.max_length = min(int(getattr(text, "max_position_embeddings", 4096) or 4096), 4096)
    return cfg


def release_template(text_model_type: str, tokenizer: Any) -> str:
    """The conversation template a release implies: ChatML where the tokenizer has ``<|im_start|>`` (Qwen2 in
    OneVision, Yi in LLaVA-1.6-34B), ``mistral_instruct`` for a Mistral LLM (LLaVA-1.6-Mistral), else
    ``vicuna_v1`` (LLaVA-1.5, LLaVA-1.6-Vicuna)."""
    if "<|im_start|>" in tokenizer.get_vocab():
        return "chatml"
    if text_model_type == "mistral":
        return "mistral_instruct"
    return "vicuna_v1"


def hf_tiling(hf: Any) -> Tiling:
    """The tiling a LlavaNext / LlavaOnevision config implies: its pinpoints, spatial_unpad, and for OneVision
    the ``anyres_max_N`` cap and base-crop-only images when a sample has several."""
    where = "image_grid_pinpoints"
    pinpoints = getattr(hf, "image_grid_pinpoints", None)
    if not pinpoints:
        raise ConfigError(f"{where}: missing; a {hf.model_type} model tiles images on these resolutions")
    cap = None
    if hf.model_type == "llava_onevision":
        ratio = str(getattr(hf, "vision_aspect_ratio", "anyres_max_9"))
        if not ratio.startswith("anyres_max_") or not ratio.removeprefix("anyres_max_").isdigit():
            raise ConfigError(f"vision_aspect_ratio: '{ratio}' is not 'anyres_max_N'")
        cap = int(ratio.removeprefix("anyres_max_"))
    return Tiling.from_dict({"pinpoints": [list(p) for p in pinpoints], "merge": "spatial_unpad", "anyres_max": cap,
                             "tile_multi_images": hf.model_type != "llava_onevision"}, where)


def import_hf(src: str | Path, out: str | Path, progress: ProgressCallback | None = None, *,
              tokenizer: str | Path | None = None, dtype: str | None = None, sets: list[str] | None = None,
              family: str = "llava", plugin_manager: pluggy.PluginManager | None = None) -> Path:
    """Convert an HF ``LlavaForConditionalGeneration`` folder into a vlmkit checkpoint at ``out``.

    ``src`` holds ``config.json`` and safetensors weights (one file or shards with
    ``model.safetensors.index.json``); pickled weights are refused. The tokenizer comes from ``src``
    or from ``tokenizer`` (a folder or hub id). ``dtype`` sets the LLM's dtype (``float32``,
    ``bfloat16``, ``float16``); by default ``vlmkit.interop.formats.import_dtype`` decides. Every tensor must find
    its place and every weight must be filled, else ``CheckpointError``. ``progress(done, total)`` is
    called as tensors are copied. Returns ``out``.

    The vision tower and the projector are converted by the installed plugins' converters (the
    ``vlmkit_llava_converters`` hook of ``plugin_manager``, by default vlmkit's); a part that no plugin
    converts is a ConfigError naming it. The encoder keeps its converter's image policy (LLaVA-1.5 pads
    images to a square, HF's Llava processor resizes and centre-crops): set the encoder's ``resize``
    argument (``sets=["encoder.0.resize=square"]``, ``--set`` on the command line) for HF's pixels.
    """
    from vlmkit.model.assembly import build_model
    from vlmkit.model.checkpoint import save_checkpoint

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise CheckpointError(f"{src}: no such folder")
    if out.resolve() == src.resolve():
        raise ConfigError(f"import-hf: output folder {out} is the source folder; choose another")
    hf_cfg = _read_llava_config(src, family)
    if tokenizer is None:
        require_tokenizer(src, "a vlmkit checkpoint carries its tokenizer: pass tokenizer=<folder or hub id>")
        tokenizer = src
    # config errors before any weight is read
    layout, encoder, connector = _import_layout(hf_cfg, llava_converters(plugin_manager))
    cfg = _model_config(hf_cfg, encoder, connector, str(tokenizer), dtype)
    for assignment in sets or []:  # --set: changes to the vlmkit model built from the HF config
        cfg.set(assignment)
    weights = WeightFiles.in_folder(src)
    headers = weights.headers()
    if dtype is None:  # the stored dtype on a GPU machine, float32 on a CPU (vlmkit.interop.formats.import_dtype)
        stored = [h[2] for k, h in headers.items() if (layout.hf_canonical(k) or "").startswith("text.")]
        chosen = import_dtype(stored[0] if stored else None)
        if chosen is not None:
            cfg.llm.args["dtype"] = chosen
    model = build_model(cfg, pretrained=False)
    model.eval()
    if not any(a.split("=")[0].strip() in ("template", "model.template") for a in sets or []):
        model.config.template = ("chatml" if family == "llava_onevision"  # conv_template qwen_1_5, always
                                 else release_template(hf_cfg.text_config.model_type, model.tokenizer))
    lm_base, lm_head = lm_layout(model.llm.model)
    n_tokens = model.visual_spec.num_tokens
    if family not in TILED_FAMILIES and getattr(hf_cfg, "image_seq_length", n_tokens) != n_tokens:
        log.warning("image_seq_length %s in the HF config differs from the %s tokens the vision tower gives; "
                    "using the tower's count", hf_cfg.image_seq_length, n_tokens)

    state = model.persistent_state_dict()
    canon_to_key: dict[str, str] = {}
    for k in state:
        c = layout.vlmkit_canonical(k, lm_base, lm_head)
        if c is None:
            raise CheckpointError(f"import-hf: vlmkit weight '{k}' has no counterpart in HF Llava (unexpected model layout)")
        canon_to_key[c] = k

    def rename(key: str) -> str | None:
        c = layout.hf_canonical(key, lm_base)
        return canon_to_key.get(c) if c is not None else None

    fill_model(model, [Source(weights, rename)], origin=src, progress=progress, state=state)
    fmt = FORMAT_NAMES.get(family, family)
    return save_checkpoint(model, out, extra={"imported_from": {"format": fmt, "path": str(src)}})


# -- export --------------------------------------------------------------------------------------
def _base_name(component: nn.Module) -> str:
    return (getattr(component, "component_name", "") or "").split(":")[-1]


def _export_layout(model: VisionLanguageModel, converters: LlavaConverters,
                   family: str = "llava") -> tuple[LlavaLayout | None, list[str]]:
    """The converters for ``model``'s encoder and connector, and why it cannot be HF Llava (empty: it can)."""
    problems: list[str] = []
    vision = projector = None
    encoders = list(model.encoders)
    if len(encoders) != 1:
        names = ", ".join(f"'{_base_name(e)}'" for e in encoders) or "none"
        problems.append(f"encoders: HF Llava has exactly one vision tower, this model has {len(encoders)} ({names})")
    else:
        name = _base_name(encoders[0])
        vision = converters.for_encoder(name, family)
        found = vision.problems(encoders[0]) if vision is not None else [converters.unclaimed_encoder(name, family)]
        problems += [f"encoder.0 '{name}': {p}" for p in found]
    fusion = list(model.connectors[:-1])
    if fusion:
        problems.append("fusion: HF Llava has no fusion module; this model has "
                        + ", ".join(f"'{_base_name(f)}'" for f in fusion))
    con = model.connectors[-1] if len(model.connectors) else None
    name = _base_name(con) if con is not None else "none"
    projector = converters.for_connector(name, family) if con is not None else None
    found = projector.problems(con) if projector is not None else [converters.unclaimed_connector(name, family)]
    problems += [f"connector '{name}': {p}" for p in found]
    problems += _llm_problems(model.llm.model)
    problems += _tiling_problems(getattr(model, "tiling", None), family)
    layout = LlavaLayout(vision, projector) if vision is not None and projector is not None else None
    return layout, problems


def _tiling_problems(tiling: Tiling | None, family: str) -> list[str]:
    """Why the model's tiling (or its lack) cannot be the family's image layout (empty: it can)."""
    what = FAMILIES[family][1]
    if family not in TILED_FAMILIES:
        return [] if tiling is None else [f"tiling: {what} sees one crop per image; this model tiles (export it as "
                                          "hf-llava-next or hf-llava-onevision)"]
    if tiling is None:
        return [f"tiling: {what} tiles images (AnyRes); this model has no tiling"]
    out = []
    if tiling.merge != "spatial_unpad":
        out.append(f"tiling.merge: {what} lays tiles out as spatial_unpad, this model as {tiling.merge}")
    if family == "llava_next" and tiling.anyres_max is not None:
        out.append(f"tiling.anyres_max: {what} has no cap (OneVision's anyres_max_N); this model's is {tiling.anyres_max}")
    if family == "llava_onevision" and tiling.anyres_max is None:
        out.append(f"tiling.anyres_max: {what} caps the tiles (anyres_max_N); this model has no cap")
    if tiling.tile_multi_images != (family == "llava_next"):
        out.append(f"tiling.tile_multi_images: {what} {'tiles' if family == 'llava_next' else 'does not tile'} "
                   "the images of a sample with several")
    return out


def _llm_problems(lm: nn.Module) -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        base, head = lm_layout(lm)
    except ConfigError as exc:
        return [str(exc)]
    out = []
    head_mod = lm.get_output_embeddings()
    if not isinstance(head_mod, nn.Linear) or head_mod.bias is not None:
        out.append(f"llm: output head '{head}' is not a bias-free Linear like HF Llava's lm_head")
    try:  # HF Llava builds its language model with AutoModel.from_config(text_config)
        base_cls = MODEL_MAPPING[type(lm.config)]
    except (KeyError, ValueError):
        base_cls = None
    if base_cls is None or not isinstance(getattr(lm, base), base_cls):
        out.append(f"llm: base model {type(getattr(lm, base)).__name__} is not what AutoModel builds for "
                   f"'{lm.config.model_type}', which HF Llava uses")
    for attr in LOGIT_TRANSFORMS:
        v = getattr(lm.config, attr, None)
        if v not in (None, 1, 1.0):
            out.append(f"llm: {attr}={v} rescales logits; HF Llava's lm_head does not")
    return out


def _image_token(tok: Any, lm: nn.Module) -> tuple[int, bool]:
    """The ``<image>`` id (added to ``tok`` if absent) and whether the embeddings had to grow."""
    vocab = tok.get_vocab()
    if IMAGE_TOKEN in vocab:
        idx = vocab[IMAGE_TOKEN]
    else:
        from tokenizers import AddedToken

        tok.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
        idx = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    rows = lm.get_input_embeddings().weight.shape[0]
    if idx < rows:
        return idx, False
    old = rows
    lm.resize_token_embeddings(idx + 1, mean_resizing=False)
    with torch.no_grad():  # see the module docstring: unused input row, constant-0 logit
        lm.get_input_embeddings().weight[old:].zero_()
        out = lm.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != lm.get_input_embeddings().weight.data_ptr():
            out.weight[old:].zero_()
    return idx, True


def export_hf(model_dir: str | Path, out: str | Path, *, family: str = "llava",
              plugin_manager: pluggy.PluginManager | None = None) -> Path:
    """Write the vlmkit checkpoint ``model_dir`` as an HF ``LlavaForConditionalGeneration`` folder at ``out``.

    Possible for one encoder and one connector that installed converters can write as HF Llava's vision
    tower and projector (the ``vlmkit_llava_converters`` hook of ``plugin_manager``, by default vlmkit's),
    no fusion, and a transformers causal LM; anything else raises ConfigError naming each part that HF
    Llava cannot express. Objectives other than ``lm`` are training-only and are left out with a warning.
    Writes config.json, model.safetensors, generation_config.json, the tokenizer (with an ``<image>``
    token, see the module docstring) and a LlavaProcessor with the vision converter's image processor.
    HF's processors resize and centre-crop; a vlmkit view with ``resize: pad`` pads to a square first, so
    feed HF pre-padded images for identical pixels. Returns ``out``.
    """
    from transformers import LlavaProcessor

    config_cls, model_cls = _family_classes(family)

    from vlmkit.model.checkpoint import load_checkpoint

    converters = llava_converters(plugin_manager)
    layout, problems = _export_layout(load_checkpoint(model_dir, meta=True), converters, family)  # before any weight is read
    if problems or layout is None:
        raise ConfigError(f"{model_dir}: cannot be expressed as {FAMILIES[family][1]}: " + "; ".join(problems))
    model = load_checkpoint(model_dir)
    extra = [name for name in model.objectives if name != "lm"]
    if extra:
        warnings.warn(f"export-hf: objective(s) {', '.join(extra)} are training-only and have no place in HF Llava; "
                      "they are left out (inference is unchanged)", UserWarning, stacklevel=2)

    enc, con, lm = model.encoders[0], model.connectors[-1], model.llm.model
    tok = model.tokenizer
    image_id, grew = _image_token(tok, lm)
    lm_base, lm_head = lm_layout(lm)

    text_cfg = lm.config
    tiled: dict[str, Any] = {}
    if family in TILED_FAMILIES:
        tiled["image_grid_pinpoints"] = [list(p) for p in model.tiling.pinpoints]
        if family == "llava_onevision":
            tiled["vision_aspect_ratio"] = f"anyres_max_{model.tiling.anyres_max}"
    else:
        tiled["image_seq_length"] = model.visual_spec.num_tokens
    hf_cfg = config_cls(
        text_config=text_cfg.to_dict(), image_token_index=image_id,
        tie_word_embeddings=bool(getattr(text_cfg, "tie_word_embeddings", False)),
        **layout.vision.hf_config(enc), **layout.projector.hf_config(con), **tiled,
    )
    with torch.device("meta"):  # architecture only: the weights come from the vlmkit model below
        hf = model_cls(hf_cfg)
    hf_keys = {}
    for k in hf.state_dict():
        c = layout.hf_canonical(k)
        if c is None:
            raise ConfigError(f"export-hf: HF Llava weight '{k}' has no canonical name (unsupported transformers layout)")
        hf_keys[c] = k
    state = {}
    for k, v in model.persistent_state_dict().items():
        c = layout.vlmkit_canonical(k, lm_base, lm_head)
        if c is None:
            if k.startswith("objectives."):
                continue
            raise ConfigError(f"export-hf: vlmkit weight '{k}' has no place in HF Llava")
        if c not in hf_keys:
            raise ConfigError(f"export-hf: vlmkit weight '{k}' ({c}) has no place in HF Llava")
        state[hf_keys[c]] = v
    result = hf.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not (hf_cfg.tie_word_embeddings and k.startswith("lm_head."))]
    if missing or result.unexpected_keys:
        raise ConfigError(f"export-hf: weights do not fit HF Llava: missing {missing[:3]}, "
                          f"unexpected {result.unexpected_keys[:3]}")
    if hf_cfg.tie_word_embeddings:
        hf.tie_weights()
    if getattr(lm, "generation_config", None) is not None:
        hf.generation_config = lm.generation_config
    if grew:
        hf.generation_config.suppress_tokens = sorted(set(hf.generation_config.suppress_tokens or []) | {image_id})

    out = Path(out)
    prepare_output_folder(out, "export folder")
    hf.save_pretrained(out)
    strategy = getattr(hf_cfg, "vision_feature_select_strategy", "default")
    if family in TILED_FAMILIES:
        processor = _tiled_processor(family, enc.view, hf_cfg, tok, layout.vision.processor_args(enc))
    else:
        processor = LlavaProcessor(image_processor=layout.vision.image_processor(enc), tokenizer=tok,
                                   vision_feature_select_strategy=strategy, image_token=IMAGE_TOKEN,
                                   **layout.vision.processor_args(enc))
    processor.save_pretrained(out)
    return out


def _tiled_processor(family: str, view: Any, hf_cfg: Any, tok: Any, vision_args: dict[str, Any]) -> Any:
    """transformers' processor for a LlavaNext / LlavaOnevision export: its image processor tiles on the
    model's pinpoints at the view's size, mean and std, as vlmkit's tiled view does."""
    import transformers

    common = dict(image_mean=list(view.mean), image_std=list(view.std),
                  image_grid_pinpoints=[list(p) for p in hf_cfg.image_grid_pinpoints])
    strategy = hf_cfg.vision_feature_select_strategy
    if family == "llava_next":
        images = transformers.LlavaNextImageProcessor(size={"shortest_edge": view.size},
                                                      crop_size={"height": view.size, "width": view.size}, **common)
        return transformers.LlavaNextProcessor(image_processor=images, tokenizer=tok, image_token=IMAGE_TOKEN,
                                               vision_feature_select_strategy=strategy, **vision_args)
    images = transformers.LlavaOnevisionImageProcessor(size={"height": view.size, "width": view.size}, **common)
    patch = vision_args.get("patch_size") or 1
    videos = transformers.LlavaOnevisionVideoProcessor(size={"height": view.size, "width": view.size},
                                                       image_mean=list(view.mean), image_std=list(view.std))
    return transformers.LlavaOnevisionProcessor(image_processor=images, tokenizer=tok, video_processor=videos,
                                                image_token=IMAGE_TOKEN,
                                                num_image_tokens=(view.size // patch) ** 2,
                                                vision_feature_select_strategy=strategy,
                                                vision_aspect_ratio=hf_cfg.vision_aspect_ratio)
