"""Conversion between vlmkit checkpoints and transformers' ``LlavaForConditionalGeneration`` (LLaVA-1.5).

An HF Llava model is exactly one vlmkit layout: one ``clip`` encoder (one hidden layer, with or without
the CLS token), the ``mlp2x_gelu`` connector, and a transformers causal LM, trained with the LM
objective. ``import_hf`` reads such a folder (safetensors only, never pickles) into a vlmkit checkpoint;
``export_hf`` writes a vlmkit checkpoint of that layout as an HF Llava folder, and refuses, naming the
part, anything that HF Llava cannot express.

Weights are matched through one canonical naming (``vision.*``, ``projector.linear_{1,2}.*``,
``text.*``, ``lm_head.*``) so that every on-disk HF layout maps the same way: the 4.x hub layout
(``language_model.model.*``, ``vision_tower.vision_model.*``), the layout transformers 5 writes
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .config import ComponentConfig, ModelConfig
from .errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from .model import VisionLanguageModel

log = logging.getLogger(__name__)

#: ``progress(done, total)``: tensors copied so far out of all tensors to copy
Progress = Callable[[int, int], None]

IMAGE_TOKEN = "<image>"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")
#: buffers some older checkpoints stored although they are recomputed from the config
RECOMPUTED_BUFFERS = (".position_ids", "rotary_emb.inv_freq")
#: config attributes with which a causal LM rescales its logits (HF Llava's lm_head cannot)
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
_SAFETENSORS_DTYPES = {"F32": None, "BF16": "bfloat16", "F16": "float16"}


# -- weight names --------------------------------------------------------------------------------
def _strip(key: str, prefix: str) -> str | None:
    return key[len(prefix):] if key.startswith(prefix) else None


def _vision_rel(rel: str) -> str:
    # CLIPVisionModel nested its weights under ``vision_model.`` before transformers 5
    return rel.removeprefix("vision_model.")


def hf_canonical(key: str, lm_base_prefix: str = "model") -> str | None:
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
    for prefix in ("model.vision_tower.", "vision_tower."):
        if (rest := _strip(key, prefix)) is not None:
            return "vision." + _vision_rel(rest)
    for prefix in ("model.multi_modal_projector.", "multi_modal_projector."):
        if (rest := _strip(key, prefix)) is not None:
            return "projector." + rest
    return None


def _lm_layout(llm_model: nn.Module) -> tuple[str, str]:
    """(base model attribute, output-embedding attribute) of a transformers causal LM."""
    base = llm_model.base_model_prefix
    head = llm_model.get_output_embeddings()
    head_name = next((n for n, m in llm_model.named_modules() if m is head), None)
    if not base or not hasattr(llm_model, base) or head_name is None:
        raise ConfigError(f"llm '{type(llm_model).__name__}': not a base model + output head; "
                          "HF Llava needs a transformers causal LM of that shape")
    return base, head_name


def vlmkit_canonical(key: str, lm_base: str, lm_head: str) -> str | None:
    """The canonical name of a vlmkit weight of a Llava-shaped model, or None if it has no HF place."""
    if (rest := _strip(key, "encoders.0.vision.")) is not None:
        return "vision." + _vision_rel(rest)
    for idx, name in (("0", "linear_1"), ("2", "linear_2")):
        if (rest := _strip(key, f"connectors.0.proj.{idx}.")) is not None:
            return f"projector.{name}.{rest}"
    if (rest := _strip(key, f"llm.model.{lm_base}.")) is not None:
        return "text." + rest
    if (rest := _strip(key, f"llm.model.{lm_head}.")) is not None:
        return "lm_head." + rest
    return None


def _storage_groups(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Key -> group id; tied weights (one storage, several names) share a group."""
    ids: dict[tuple[int, int, tuple[int, ...]], int] = {}
    out = {}
    for k, v in state.items():
        sig = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        out[k] = ids.setdefault(sig, len(ids))
    return out


# -- reading safetensors -------------------------------------------------------------------------
def safetensors_files(src: Path) -> list[Path]:
    """The weight files of an HF folder: the shards of the index, or every ``*.safetensors``."""
    index = src / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index (no valid 'weight_map'): {exc}") from exc
        files = [src / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index}: lists shard(s) that are missing: {', '.join(missing)}")
        return files
    files = sorted(src.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in src.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        hint = (f"; found {', '.join(pickles)}, which vlmkit never loads (pickle files can run code): "
                "convert them to safetensors in a trusted environment first") if pickles else ""
        raise CheckpointError(f"{src}: no *.safetensors weights{hint}")
    return files


def _open(path: Path) -> Any:
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt")
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({type(exc).__name__}: {exc})") from exc


def _headers(files: list[Path]) -> dict[str, tuple[Path, tuple[int, ...], str]]:
    """Key -> (file, shape, safetensors dtype), read from headers only (no tensor data)."""
    out: dict[str, tuple[Path, tuple[int, ...], str]] = {}
    for path in files:
        with _open(path) as f:
            for k in f.keys():
                if k in out:
                    raise CheckpointError(f"{path}: tensor '{k}' is also in {out[k][0].name}")
                sl = f.get_slice(k)
                out[k] = (path, tuple(sl.get_shape()), sl.get_dtype())
    return out


def _read(files: list[Path], keys: set[str]) -> Iterator[tuple[str, torch.Tensor]]:
    for path in files:
        with _open(path) as f:
            for k in f.keys():
                if k in keys:
                    try:
                        yield k, f.get_tensor(k)
                    except Exception as exc:  # noqa: BLE001
                        raise CheckpointError(f"{path}: cannot read tensor '{k}' (corrupt or truncated file: "
                                              f"{type(exc).__name__}: {exc})") from exc


# -- import --------------------------------------------------------------------------------------
def _read_llava_config(src: Path) -> Any:
    from transformers import LlavaConfig

    f = src / "config.json"
    if not f.is_file():
        raise CheckpointError(f"{src}: no config.json (is it an HF model folder?)")
    try:
        raw = json.loads(f.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{f}: not valid JSON: {exc}") from exc
    if raw.get("model_type") != "llava":
        raise ConfigError(f"{f}: model_type is '{raw.get('model_type')}'; import-hf converts only 'llava' "
                          "(LlavaForConditionalGeneration, LLaVA-1.5)")
    try:
        return LlavaConfig.from_pretrained(str(src))
    except Exception as exc:  # noqa: BLE001 - transformers validates configs with several error types
        raise ConfigError(f"{f}: not a valid Llava config: {exc}") from exc


def llava_model_config(hf: Any, tokenizer: str, dtype: str | None = None) -> ModelConfig:
    """The vlmkit ModelConfig equivalent to an HF ``LlavaConfig``; ConfigError names what cannot be mapped."""
    vision, text = hf.vision_config, hf.text_config
    if vision.model_type != "clip_vision_model":
        raise ConfigError(f"vision_config: model_type '{vision.model_type}' is not CLIP; import-hf maps only a "
                          "CLIP vision tower to vlmkit's 'clip' encoder")
    layer = hf.vision_feature_layer
    if not isinstance(layer, int):
        raise ConfigError(f"vision_feature_layer: a list of layers ({list(layer)}) is not supported by import-hf; "
                          "only a single layer maps to the 'clip' encoder")
    select = {"default": "patch", "full": "cls_patch"}.get(hf.vision_feature_select_strategy)
    if select is None:
        raise ConfigError(f"vision_feature_select_strategy: '{hf.vision_feature_select_strategy}' is not "
                          "'default' or 'full'")
    if hf.projector_hidden_act != "gelu":
        raise ConfigError(f"projector_hidden_act: '{hf.projector_hidden_act}' is not 'gelu'; vlmkit's "
                          "mlp2x_gelu connector uses exact GELU")
    if not hf.multimodal_projector_bias:
        raise ConfigError("multimodal_projector_bias: false; vlmkit's mlp2x_gelu connector has biases")
    n_tokens = (vision.image_size // vision.patch_size) ** 2 + (select == "cls_patch")
    if getattr(hf, "image_seq_length", n_tokens) != n_tokens:
        log.warning("image_seq_length %s in the HF config differs from the %s tokens the vision tower gives; "
                    "using the tower's count", hf.image_seq_length, n_tokens)

    vision_args = {k: v for k, v in vision.to_diff_dict().items() if k not in ("transformers_version", "model_type")}
    text_args = {k: v for k, v in text.to_diff_dict().items() if k != "transformers_version"}
    text_args["model_type"] = text.model_type
    if getattr(hf, "tie_word_embeddings", False):  # Llava ties lm_head to the embeddings when either config says so
        text_args["tie_word_embeddings"] = True
    llm_args: dict[str, Any] = {"config": text_args, "tokenizer": tokenizer}
    if dtype is not None:
        llm_args["dtype"] = dtype
    max_len = min(2048, int(getattr(text, "max_position_embeddings", 2048) or 2048))
    return ModelConfig(
        encoders=[ComponentConfig("clip", {"config": vision_args, "feature_layer": layer, "select": select})],
        connector=ComponentConfig("mlp2x_gelu"),
        llm=ComponentConfig("hf", llm_args),
        objectives=[ComponentConfig("lm")],
        max_length=max_len,
    )


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def import_hf(src: str | Path, out: str | Path, progress: Progress | None = None, *,
              tokenizer: str | Path | None = None, dtype: str | None = None) -> Path:
    """Convert an HF ``LlavaForConditionalGeneration`` folder into a vlmkit checkpoint at ``out``.

    ``src`` holds ``config.json`` and safetensors weights (one file or shards with
    ``model.safetensors.index.json``); pickled weights are refused. The tokenizer comes from ``src``
    or from ``tokenizer`` (a folder or hub id). ``dtype`` sets the LLM's dtype (``float32``,
    ``bfloat16``, ``float16``); by default the dtype its weights are stored in. Every tensor must find
    its place and every weight must be filled, else ``CheckpointError``. ``progress(done, total)`` is
    called as tensors are copied. Returns ``out``.

    The encoder keeps vlmkit's default ``resize: pad`` (LLaVA-1.5 pads images to a square); HF's Llava
    processor resizes and centre-crops instead. Use ``--set encoder.clip.resize=square`` for HF's pixels.
    """
    from .assembly import build_model
    from .checkpoint import save_checkpoint

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise CheckpointError(f"{src}: no such folder")
    if out.resolve() == src.resolve():
        raise ConfigError(f"import-hf: output folder {out} is the source folder; choose another")
    hf_cfg = _read_llava_config(src)
    if tokenizer is None:
        if not _has_tokenizer(src):
            raise ConfigError(f"{src}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); a vlmkit checkpoint "
                              "carries its tokenizer: pass tokenizer=<folder or hub id>")
        tokenizer = src
    cfg = llava_model_config(hf_cfg, str(tokenizer), dtype)  # config errors before any weight is read
    files = safetensors_files(src)
    headers = _headers(files)
    if dtype is None:  # keep the dtype the LLM's weights are stored in
        stored = [h[2] for k, h in headers.items() if (hf_canonical(k) or "").startswith("text.")]
        if stored and _SAFETENSORS_DTYPES.get(stored[0]):
            cfg.llm.args["dtype"] = _SAFETENSORS_DTYPES[stored[0]]
    model = build_model(cfg, pretrained=False)
    model.eval()
    lm_base, lm_head = _lm_layout(model.llm.model)

    state = model.persistent_state_dict()
    canon_to_key: dict[str, str] = {}
    for k in state:
        c = vlmkit_canonical(k, lm_base, lm_head)
        if c is None:
            raise CheckpointError(f"import-hf: vlmkit weight '{k}' has no counterpart in HF Llava (unexpected model layout)")
        canon_to_key[c] = k

    plan: dict[str, str] = {}  # hf key -> vlmkit key
    unexpected: list[str] = []
    for k, (path, shape, _) in headers.items():
        c = hf_canonical(k, lm_base)
        target = canon_to_key.get(c) if c is not None else None
        if target is None:
            if k.endswith(RECOMPUTED_BUFFERS):
                continue
            unexpected.append(k)
            continue
        if tuple(state[target].shape) != shape:
            raise CheckpointError(f"{path}: tensor '{k}' has shape {list(shape)}, but the model built from "
                                  f"config.json needs {list(state[target].shape)} for it")
        plan[k] = target
    groups = _storage_groups(state)
    filled = {groups[v] for v in plan.values()}
    missing = sorted(k for k in state if groups[k] not in filled)
    if missing or unexpected:
        msg = []
        if missing:
            msg.append(f"missing {len(missing)} weight(s) for vlmkit's {', '.join(missing[:3])}")
        if unexpected:
            msg.append(f"{len(unexpected)} tensor(s) with no place in the model, e.g. {', '.join(sorted(unexpected)[:3])}")
        raise CheckpointError(f"{src}: weights do not match config.json: " + "; ".join(msg))

    total, done = len(plan), 0
    with torch.no_grad():
        for k, tensor in _read(files, set(plan)):
            state[plan[k]].copy_(tensor)
            done += 1
            if progress is not None:
                progress(done, total)
    return save_checkpoint(model, out, extra={"imported_from": {"format": "hf-llava", "path": str(src)}})


# -- export --------------------------------------------------------------------------------------
def _base_name(component: nn.Module) -> str:
    return (getattr(component, "component_name", "") or "").split(":")[-1]


def _feature_layer(enc: nn.Module) -> int | None:
    """The encoder's single feature layer, or None when it reads several."""
    layers = getattr(enc, "feature_layers", None)
    if layers is None:
        layers = [getattr(enc, "feature_layer", None)]
    return layers[0] if len(layers) == 1 and isinstance(layers[0], int) else None


def llava_problems(model: VisionLanguageModel) -> list[str]:
    """Why ``model`` cannot be written as HF Llava, one line per part (empty: it can)."""
    problems: list[str] = []
    encoders = list(model.encoders)
    if len(encoders) != 1:
        names = ", ".join(f"'{_base_name(e)}'" for e in encoders) or "none"
        problems.append(f"encoders: HF Llava has exactly one vision tower, this model has {len(encoders)} ({names})")
    elif _base_name(encoders[0]) != "clip" or not hasattr(encoders[0], "vision"):
        problems.append(f"encoder.0 '{_base_name(encoders[0])}': HF Llava export supports only the 'clip' encoder")
    else:
        enc = encoders[0]
        if getattr(enc.vision.config, "model_type", None) != "clip_vision_model":
            problems.append(f"encoder.0 'clip': vision tower is {type(enc.vision).__name__}, not CLIPVisionModel")
        if _feature_layer(enc) is None or getattr(enc, "select", None) not in ("patch", "cls_patch"):
            problems.append("encoder.0 'clip': export-hf needs exactly one feature layer and select 'patch' or "
                            "'cls_patch'")
    fusion = list(model.connectors[:-1])
    if fusion:
        problems.append("fusion: HF Llava has no fusion module; this model has "
                        + ", ".join(f"'{_base_name(f)}'" for f in fusion))
    con = model.connectors[-1] if len(model.connectors) else None
    proj = getattr(con, "proj", None)
    ok = (isinstance(proj, nn.Sequential) and len(proj) == 3 and isinstance(proj[0], nn.Linear)
          and isinstance(proj[1], nn.GELU) and proj[1].approximate == "none" and isinstance(proj[2], nn.Linear)
          and proj[0].bias is not None and proj[2].bias is not None)
    if not ok:
        problems.append(f"connector '{_base_name(con) if con is not None else 'none'}': HF Llava's projector is "
                        "mlp2x_gelu (Linear, exact GELU, Linear, with biases)")
    problems += _llm_problems(model.llm.model)
    return problems


def _llm_problems(lm: nn.Module) -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        base, head = _lm_layout(lm)
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


def _image_processor(model: VisionLanguageModel) -> Any:
    from transformers import CLIPImageProcessor

    view = model.encoders[0].view
    return CLIPImageProcessor(size={"shortest_edge": view.size}, crop_size={"height": view.size, "width": view.size},
                              image_mean=list(view.mean), image_std=list(view.std))


def export_hf(model_dir: str | Path, out: str | Path) -> Path:
    """Write the vlmkit checkpoint ``model_dir`` as an HF ``LlavaForConditionalGeneration`` folder at ``out``.

    Possible for one ``clip`` encoder, no fusion, the ``mlp2x_gelu`` connector and a transformers causal LM;
    anything else raises ConfigError naming each part that HF Llava cannot express. Objectives other than
    ``lm`` are training-only and are left out with a warning. Writes config.json, model.safetensors,
    generation_config.json, the tokenizer (with an ``<image>`` token, see the module docstring) and a
    LlavaProcessor with a CLIP image processor. The processor resizes and centre-crops; a vlmkit view
    with ``resize: pad`` pads to a square first, so feed HF pre-padded images for identical pixels.
    Returns ``out``.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from .checkpoint import load_checkpoint

    problems = llava_problems(load_checkpoint(model_dir, meta=True))  # refuse before reading any weight
    if problems:
        raise ConfigError(f"{model_dir}: cannot be expressed as HF Llava: " + "; ".join(problems))
    model = load_checkpoint(model_dir)
    extra = [name for name in model.objectives if name != "lm"]
    if extra:
        warnings.warn(f"export-hf: objective(s) {', '.join(extra)} are training-only and have no place in HF Llava; "
                      "they are left out (inference is unchanged)", UserWarning, stacklevel=2)

    enc, lm = model.encoders[0], model.llm.model
    tok = model.tokenizer
    image_id, grew = _image_token(tok, lm)
    lm_base, lm_head = _lm_layout(lm)

    text_cfg = lm.config
    hf_cfg = LlavaConfig(
        vision_config=enc.vision.config.to_dict(), text_config=text_cfg.to_dict(), image_token_index=image_id,
        image_seq_length=model.visual_spec.num_tokens, vision_feature_layer=_feature_layer(enc),
        vision_feature_select_strategy="default" if enc.select == "patch" else "full",
        projector_hidden_act="gelu", multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(text_cfg, "tie_word_embeddings", False)),
    )
    with torch.device("meta"):  # architecture only: the weights come from the vlmkit model below
        hf = LlavaForConditionalGeneration(hf_cfg)
    hf_keys = {}
    for k in hf.state_dict():
        c = hf_canonical(k)
        if c is None:
            raise ConfigError(f"export-hf: HF Llava weight '{k}' has no canonical name (unsupported transformers layout)")
        hf_keys[c] = k
    state = {}
    for k, v in model.persistent_state_dict().items():
        c = vlmkit_canonical(k, lm_base, lm_head)
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
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    processor = LlavaProcessor(image_processor=_image_processor(model), tokenizer=tok, patch_size=enc.patch,
                               vision_feature_select_strategy=hf_cfg.vision_feature_select_strategy,
                               image_token=IMAGE_TOKEN, num_additional_image_tokens=1)
    processor.save_pretrained(out)
    return out
