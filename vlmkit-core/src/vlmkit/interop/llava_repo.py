"""Checkpoints saved by the LLaVA codebase (haotian-liu/LLaVA) and its forks, in and out.

LLaVA-1.5, LLaVA-1.6 (``anyres``), ViP-LLaVA, ConvLLaVA, LLaVA-S2 / DenseFusion and LLaVA-VL/LLaVA-NeXT's
OneVision (``LlavaQwenForCausalLM``, ``anyres_max_N``) all save a causal LM whose config carries
the multimodal fields (``mm_vision_tower``, ``mm_projector_type``, ``mm_hidden_size``, ...) and whose
state holds the projector under ``model.mm_projector.*``. The vision tower is named by
``mm_vision_tower`` (a hub id or a path) and loaded from its own folder at run time; a checkpoint may
also hold it under ``model.vision_tower.*`` (a tower tuned in training), which then wins.

Core converts the language model (Llama in ``LlavaLlamaForCausalLM``; the top-level config fields are
its config), the splice conventions, the order of the work and the errors. The tower and the
projector are converted by the plugins that own the matching vlmkit components, through the
``vlmkit_llava_converters`` hook: a ``RepoTowerConversion`` claims the configs whose tower it reads
(CLIP, ViP-LLaVA's ``clip_4layers_336``, S2, ConvNeXt ...), a ``RepoProjectorConversion`` the
``mm_projector_type`` it builds. Core names none of them.

What a release implies but does not record: the conversation template. LLaVA-1.5 and its forks
prompt a Llama/Vicuna LLM with ``vicuna_v1`` (``conv_mode llava_v1``), which the import sets (other LLMs,
such as Ross's Qwen2, get the tokenizer's own ``chat_template``);
``image_aspect_ratio`` (``pad`` / ``square`` / ``resize``) is recorded and becomes the encoder's
``resize`` policy. ``--set`` changes either.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vlmkit.errors import ConfigError
from vlmkit.interop.fill import Source, fill_model
from vlmkit.interop.formats import STORED_DTYPES, CheckpointFormat, ImportOptions, import_dtype, read_config
from vlmkit.interop.llava_conversion import (
    RepoModuleConversion,
    RepoProjectorConversion,
    RepoTowerConversion,
    hook_converters,
)
from vlmkit.interop.tokenizer_files import copy_tokenizer
from vlmkit.interop.weights import WeightFiles
from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.output_folder import prepare_output_folder

if TYPE_CHECKING:
    import pluggy

    from vlmkit.model.vlm import VisionLanguageModel

log = logging.getLogger(__name__)

__all__ = ["RepoTowerConversion", "RepoProjectorConversion", "RepoConverters", "repo_converters",
           "LlavaRepoFormat", "import_llava_repo", "export_llava_repo"]

TOWER_PREFIX = "model.vision_tower."
PROJECTOR_PREFIX = "model.mm_projector."
#: ``image_aspect_ratio`` -> the encoder's ``resize`` policy (LLaVA's default, no field, is ``square``)
RESIZE_FOR_ASPECT = {"pad": "pad", "square": "square", "resize": "resize", None: "square"}
ASPECT_FOR_RESIZE = {"pad": "pad", "square": "square", "resize": "resize"}
#: the LLM classes of the LLaVA codebase's checkpoints -> transformers model_type of the plain LM (a fork's
#: ``<fork>_<lm>``, e.g. ``llava_mistral``, maps to ``<lm>`` by rule)
LM_TYPES = {"llava": "llama", "llava_qwen": "qwen2"}
ARCHITECTURE = "LlavaLlamaForCausalLM"
MODEL_TYPE = "llava_llama"
#: LLaVA-VL/LLaVA-NeXT's class over Qwen2 (LLaVA-OneVision): what a Qwen2 model without a fork's module exports as
NEXT_QWEN = ("LlavaQwenForCausalLM", "llava_qwen")
#: the class a plain LLM (no fork's module) is exported as, by its transformers model_type: haotian-liu/LLaVA's
#: Llama (LLaVA-1.5, 1.6-Vicuna) and Mistral (1.6-Mistral), LLaVA-NeXT's Qwen2 (OneVision)
EXPORT_CLASSES = {"llama": (ARCHITECTURE, MODEL_TYPE), "mistral": ("LlavaMistralForCausalLM", "llava_mistral"),
                  "qwen2": NEXT_QWEN}
#: what LLaVA-NeXT's training records when the tower was tuned: its loader then builds the tower first, and the
#: tower weights inside the checkpoint replace the named tower's
NEXT_TUNABLE = "mm_vision_tower,mm_mlp_adapter,mm_language_model"
#: the forks prompt a Llama/Vicuna with conv_mode llava_v1 (vicuna_v1); other LLMs (Ross's Qwen2: qwen_2,
#: ChatML) with their tokenizer's own chat template
TEMPLATE, CHAT_TEMPLATE = "vicuna_v1", "chat_template"
TOWER_FOLDER = "vision_tower"
#: LLaVA-1.6's learned image-newline embedding (``mm_patch_merge_type: spatial_unpad``)
NEWLINE_KEY = "model.image_newline"
#: the merges of LLaVA-1.6's ``mm_patch_merge_type`` that vlmkit's tiling lays out alike
REPO_MERGES = ("flat", "spatial", "spatial_unpad")


def repo_anyres(config: dict[str, Any], where: Path) -> Any:
    """For ``image_aspect_ratio: anyres`` (LLaVA-1.6): a function of the tile size (the tower's input, px) that
    gives the model's ``Tiling``; None for a model that does not tile. Raises ConfigError naming the field.

    The LLaVA code reads each pinpoint as [width, height] (vlmkit's are [height, width]: swapped, order kept),
    takes them as a list or its Python literal or LLaVA-NeXT's range of tiles ``(1x1),...,(3x3)`` (expanded as its
    code does: first number outer, in tiles of the tower's size), and unpads with ``int(x)`` (``floor``)."""
    import ast
    import re

    from vlmkit.model.tiling import Tiling

    aspect = str(config.get("image_aspect_ratio") or "")
    merge = config.get("mm_patch_merge_type", "flat")
    if not aspect.startswith("anyres"):
        if merge != "flat":
            raise ConfigError(f"{where}: mm_patch_merge_type '{merge}' needs image_aspect_ratio 'anyres' "
                              f"(it is '{aspect or None}')")
        return None
    cap = None
    if aspect != "anyres":  # LLaVA-NeXT's anyres_max_N (OneVision)
        number = aspect.removeprefix("anyres_max_")
        if not aspect.startswith("anyres_max_") or not number.isdigit() or int(number) < 1:
            raise ConfigError(f"{where}: image_aspect_ratio '{aspect}' is not 'anyres' or 'anyres_max_N'")
        cap = int(number)
    if merge not in REPO_MERGES:
        raise ConfigError(f"{where}: mm_patch_merge_type '{merge}' is not one of {', '.join(REPO_MERGES)}")
    raw = config.get("image_grid_pinpoints")
    if raw is None:
        raise ConfigError(f"{where}: image_aspect_ratio 'anyres' without image_grid_pinpoints")
    ranged = isinstance(raw, str) and "..." in raw
    if isinstance(raw, str) and not ranged:
        try:
            raw = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as exc:
            raise ConfigError(f"{where}: image_grid_pinpoints {raw!r} is not a list of [width, height]: {exc}") from None

    def tiling(tile: int) -> Tiling:
        if ranged:
            found = re.findall(r"\((\d+)x(\d+)\)", raw)
            if len(found) < 2:
                raise ConfigError(f"{where}: image_grid_pinpoints {raw!r} is not a range like '(1x1),...,(6x6)'")
            (a, b), (c, d) = (tuple(map(int, found[0])), tuple(map(int, found[-1])))
            wh = [[i * tile, j * tile] for i in range(a, c + 1) for j in range(b, d + 1)]
        else:
            wh = raw
        try:
            pins = [[int(p[1]), int(p[0])] for p in wh]
        except (TypeError, ValueError, IndexError):
            raise ConfigError(f"{where}: image_grid_pinpoints {raw!r} is not a list of [width, height]") from None
        # OneVision (anyres_max): the images of a multi-image sample are padded, not tiled (LLaVA-NeXT's train.py)
        return Tiling.from_dict({"pinpoints": pins, "merge": merge, "unpad_rounding": "floor", "anyres_max": cap,
                                 "tile_multi_images": cap is None}, f"{where}: image_grid_pinpoints")

    return tiling


class RepoConverters:
    """The LLaVA-codebase part converters that installed plugins provide."""

    def __init__(self, towers: list[RepoTowerConversion], projectors: list[RepoProjectorConversion],
                 modules: list[RepoModuleConversion] | None = None):
        self.towers = sorted(towers, key=lambda c: -c.priority)
        self.projectors = sorted(projectors, key=lambda c: -c.priority)
        self.modules = list(modules or [])

    def module_for(self, prefix: str, config: dict[str, Any], where: Path) -> RepoModuleConversion:
        for conv in self.modules:
            if conv.prefix == prefix and conv.claims(config):
                return conv
        known = ", ".join(sorted({c.prefix for c in self.modules})) or "none"
        raise ConfigError(f"{where}: the checkpoint holds model.{prefix}.*, which no installed plugin converts "
                          f"(modules converted: {known}); install the vlmkit plugin that owns it "
                          "(e.g. vlmkit-objectives for Ross's mm_inv_projector)")

    def tower_for(self, config: dict[str, Any], where: Path,
                  tower_config: dict[str, Any] | None = None) -> RepoTowerConversion:
        for conv in self.towers:
            if conv.claims(config, tower_config):
                return conv
        rules = "; ".join(f"{c.variant}: {c.detection}" for c in self.towers) or "none installed"
        raise ConfigError(f"{where}: mm_vision_tower '{config.get('mm_vision_tower')}': no installed plugin converts "
                          f"this vision tower (installed tower converters: {rules}); install a vlmkit plugin that "
                          "provides one through the vlmkit_llava_converters hook, e.g. vlmkit-encoders")

    def projector_for(self, config: dict[str, Any], where: Path) -> RepoProjectorConversion:
        for conv in self.projectors:
            if conv.claims(config):
                return conv
        rules = "; ".join(f"{c.detection}" for c in self.projectors) or "none installed"
        kind = config.get("mm_projector_type")
        shown = f"'{kind}'" if kind is not None else "(absent: the codebase's default)"
        raise ConfigError(f"{where}: mm_projector_type {shown}: no installed "
                          f"plugin converts this projector (installed: {rules}); install a vlmkit plugin that "
                          "provides one through the vlmkit_llava_converters hook, e.g. vlmkit-fusion")

    def for_encoder(self, name: str, component: Any) -> tuple[RepoTowerConversion | None, list[str]]:
        return _first_claiming(self.towers, name, component, "encoder")

    def for_connector(self, name: str, component: Any) -> tuple[RepoProjectorConversion | None, list[str]]:
        return _first_claiming(self.projectors, name, component, "connector")


def _first_claiming(convs: list[Any], name: str, component: Any, kind: str) -> tuple[Any, list[str]]:
    candidates = [c for c in convs if name in c.components]
    if not candidates:
        names = sorted({n for c in convs for n in c.components})
        return None, [f"the LLaVA codebase format supports only the {', '.join(repr(n) for n in names) or 'no'} "
                      f"{kind}s (those the installed converters write)"]
    problems: list[str] = []
    for conv in candidates:
        found = conv.problems(component)
        if not found:
            return conv, []
        problems += found
    return None, list(dict.fromkeys(problems))


def repo_converters(plugin_manager: pluggy.PluginManager | None = None) -> RepoConverters:
    """The LLaVA-codebase part converters, from every ``vlmkit_llava_converters`` implementation (the hook
    also returns transformers-Llava converters, which this leaves out)."""
    convs = hook_converters(plugin_manager)
    return RepoConverters([c for c in convs if isinstance(c, RepoTowerConversion)],
                          [c for c in convs if isinstance(c, RepoProjectorConversion)],
                          [c for c in convs if isinstance(c, RepoModuleConversion)])


# -- import ---------------------------------------------------------------------------------------
def _lm_config(config: dict[str, Any], where: Path) -> dict[str, Any]:
    """The plain causal LM's config: the top-level fields that its transformers config class knows."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    lm_type = LM_TYPES.get(model_type, model_type)
    if lm_type not in CONFIG_MAPPING and "_" in str(lm_type):  # a fork's class over a plain LM: <fork>_<lm>
        lm_type = str(lm_type).split("_", 1)[1]
    if lm_type not in CONFIG_MAPPING:
        raise ConfigError(f"{where}: model_type '{model_type}': not an LLM type vlmkit can map to transformers "
                          f"(known: {', '.join(sorted(LM_TYPES))})")
    known = set(CONFIG_MAPPING[lm_type]().to_dict()) | {"rope_theta", "rope_scaling", "torch_dtype", "head_dim"}
    drop = {"architectures", "model_type", "transformers_version", "_name_or_path", "auto_map"}
    args = {k: v for k, v in config.items() if k in known and k not in drop}
    if args.get("rope_scaling", 0) is None:  # transformers 4.x wrote null for "no scaling"
        del args["rope_scaling"]
    args["model_type"] = lm_type
    return args


def _tower_folder(reference: str, src: Path, options: ImportOptions, folders: tuple[str, ...] = ()) -> Path | None:
    """The tower's local folder: ``--vision-tower``, ``reference`` as a path (as given, or inside ``src``), a
    tower folder beside the weights (``vision_tower/``, where the forks save a tuned tower, or one of
    ``folders``, where vlmkit's export puts it), or ``reference`` in the offline Hugging Face cache."""
    if options.vision_tower:
        path = Path(options.vision_tower)
        if not path.is_dir():
            raise ConfigError(f"--vision-tower {path}: no such folder")
        return path
    for candidate in (Path(reference), src / reference, *(src / f for f in dict.fromkeys((TOWER_FOLDER, *folders)))):
        if reference and (candidate / "config.json").is_file():
            return candidate
    try:  # a hub id already in the local cache (never downloaded here)
        from transformers.utils import cached_file

        found = cached_file(reference, "config.json", local_files_only=True, _raise_exceptions_for_missing_entries=False)
        return Path(found).parent if found else None
    except Exception:  # noqa: BLE001 - not cached (or not a hub id): the caller decides whether it matters
        return None


def _folder_config(folder: Path | None) -> dict[str, Any] | None:
    if folder is None or not (folder / "config.json").is_file():
        return None
    try:
        data = json.loads((folder / "config.json").read_text())
    except ValueError as exc:
        raise ConfigError(f"{folder / 'config.json'}: not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else None


#: the files of a tokenizer folder (what AutoTokenizer reads besides config.json)
def _tokenizer(src: Path, options: ImportOptions, scratch: Path) -> str:
    """The tokenizer to build with: ``--tokenizer``, or a copy of ``src``'s tokenizer files alone."""
    if options.tokenizer:
        return str(options.tokenizer)
    return str(copy_tokenizer(src, scratch))


def import_llava_repo(src: str | Path, out: str | Path, options: ImportOptions | None = None, *,
                      plugin_manager: pluggy.PluginManager | None = None) -> Path:
    """Convert a checkpoint saved by the LLaVA codebase (or a fork) into a vlmkit checkpoint at ``out``."""
    with tempfile.TemporaryDirectory(prefix="vlmkit-tokenizer-") as scratch:
        return _import_llava_repo(Path(src), Path(out), options or ImportOptions(), plugin_manager, Path(scratch))


def _import_llava_repo(src: Path, out: Path, options: ImportOptions, plugin_manager: Any, scratch: Path) -> Path:
    from vlmkit.interop.hf_llava import lm_layout, release_template
    from vlmkit.model.assembly import build_model
    from vlmkit.model.checkpoint import save_checkpoint

    where = src / "config.json"
    config = read_config(src)
    if "mm_vision_tower" not in config:
        raise ConfigError(f"{where}: no mm_vision_tower; not a checkpoint of the LLaVA codebase")
    convs = repo_converters(plugin_manager)
    tower = _tower_folder(str(config["mm_vision_tower"]), src, options, tuple(c.tower_folder for c in convs.towers))
    tower_conv = convs.tower_for(config, where, _folder_config(tower))
    proj_conv = convs.projector_for(config, where)
    if tower is None and tower_conv.tower_reference(config) != str(config["mm_vision_tower"]):
        tower = _tower_folder(tower_conv.tower_reference(config), src, options, (tower_conv.tower_folder,))
    aspect = config.get("image_aspect_ratio")
    anyres = repo_anyres(config, where)  # LLaVA-1.6: the tiling, checked before any weight is read
    if aspect not in RESIZE_FOR_ASPECT and anyres is None:
        raise ConfigError(f"{where}: image_aspect_ratio '{aspect}' is not supported (vlmkit maps "
                          f"{', '.join(str(k) for k in RESIZE_FOR_ASPECT if k)}, and anyres)")
    weights = WeightFiles.in_folder(src)
    headers = weights.headers()
    tower_in_checkpoint = any(k.startswith(TOWER_PREFIX) for k in headers)
    # modules a fork adds under model.<name>. (not the LLM's own layers, tower or projector)
    lm_modules = {"embed_tokens", "layers", "norm", "rotary_emb", "vision_tower", "mm_projector"}
    prefixes = sorted({k.split(".")[1] for k in headers if k.startswith("model.") and k.count(".") >= 2}
                      - lm_modules)
    # companions: modules saved beside a fork's module that its converter keeps as files (Ross's VAE teacher)
    owners = {c: conv for conv in convs.modules if conv.claims(config) for c in conv.companions}
    modules = {p: convs.module_for(p, config, where) for p in prefixes if p not in owners}
    companions = {c: owners[c] for c in prefixes if c in owners and owners[c] in modules.values()}
    modules.update({p: convs.module_for(p, config, where) for p in prefixes if p in owners and p not in companions})
    if tower is None and not tower_in_checkpoint:
        raise ConfigError(f"{where}: mm_vision_tower '{tower_conv.tower_reference(config)}' is not a local folder "
                          "and not in the offline Hugging Face cache, and the checkpoint holds no tower weights; "
                          "pass --vision-tower PATH (vision_tower=) with a folder of that tower")
    encoder = tower_conv.component_config(config, tower, RESIZE_FOR_ASPECT.get(aspect, "pad"))
    connector = proj_conv.component_config(config)
    llm_args: dict[str, Any] = {"config": _lm_config(config, where), "tokenizer": _tokenizer(src, options, scratch)}
    stored = [h[2] for k, h in headers.items() if k.startswith("model.layers.")]
    dtype = import_dtype(stored[0] if stored else None, options.dtype)
    if dtype is not None:
        llm_args["dtype"] = dtype
    max_len = int(config.get("tokenizer_model_max_length") or config.get("max_position_embeddings") or 2048)
    objectives = [ComponentConfig("lm")]
    portable: dict[int, dict[str, Any]] = {}  # objective index -> arguments as recorded ({checkpoint} kept)
    for p, conv in modules.items():
        shapes = {k[len(f"model.{p}."):]: h[1] for k, h in headers.items() if k.startswith(f"model.{p}.")}
        objective = conv.objective_config(config, src, shapes)
        for c in (c for c, owner in companions.items() if owner is conv):
            keys = [k for k in headers if k.startswith(f"model.{c}.")]
            tensors = {k[len(f"model.{c}."):]: t for k, t in weights.read(keys)}
            args = conv.place_companion(c, tensors, config, src, out / c)
            portable[len(objectives)] = args
            objective.args.update({k: v.replace("{checkpoint}", str(out)) if isinstance(v, str) else v
                                   for k, v in args.items()})
        objectives.append(objective)
    cfg = ModelConfig(encoders=[encoder], connector=connector, llm=ComponentConfig("hf", llm_args),
                      objectives=objectives, max_length=max_len,
                      padding_side=config.get("tokenizer_padding_side", "right"),
                      template=TEMPLATE if llm_args["config"]["model_type"] == "llama" else CHAT_TEMPLATE)
    if anyres is not None:  # pinpoints in px of the tower's input, known once the encoder is built
        tile = build_model(ModelConfig(encoders=[encoder], connector=connector, llm=cfg.llm), meta=True
                           ).encoders[0].view.size
        cfg.tiling = anyres(tile)
    for assignment in options.sets:
        cfg.set(assignment)
    model = build_model(cfg, pretrained=False)
    model.eval()
    lm_type = llm_args["config"]["model_type"]
    if any(a.split("=")[0].strip() in ("template", "model.template") for a in options.sets):
        pass  # --set template=... wins over what the release implies
    elif config.get("model_type") == NEXT_QWEN[1]:  # LLaVA-OneVision: conv_template qwen_1_5, ChatML
        model.config.template = "chatml"
    elif lm_type in ("llama", "mistral"):  # vicuna_v1, mistral_instruct, or chatml for Yi (LLaVA-1.6-34B)
        model.config.template = release_template(lm_type, model.tokenizer)
    for i, args in portable.items():  # recorded with {checkpoint}, so the checkpoint folder can move
        model.config.objectives[i].args.update(args)
    lm_base, lm_head = lm_layout(model.llm.model)
    names = list(model.objectives)
    objectives_index = {p: names[i + 1] for i, p in enumerate(modules)}  # after lm, in order

    def from_checkpoint(key: str) -> str | None:
        if key == NEWLINE_KEY and model.tiling is not None:
            return "tile_merge.image_newline"
        head = key.split(".")[1] if key.startswith("model.") and key.count(".") >= 2 else ""
        if head in modules:
            conv, rest = modules[head], key[len(f"model.{head}."):]
            name = conv.checkpoint_name(rest)
            return None if name is None else f"objectives.{objectives_index[head]}.{name}"
        if key.startswith(TOWER_PREFIX):
            rest = tower_conv.checkpoint_name(key[len(TOWER_PREFIX):])
            return None if rest is None else "encoders.0." + rest
        if key.startswith(PROJECTOR_PREFIX):
            rest = proj_conv.checkpoint_name(key[len(PROJECTOR_PREFIX):])
            return None if rest is None else "connectors.0." + rest
        if key.startswith("lm_head."):
            return f"llm.model.{lm_head}." + key[len("lm_head."):]
        if key.startswith("model."):
            return f"llm.model.{lm_base}." + key[len("model."):]
        return None

    def recomputed(key: str) -> bool:
        if key.startswith(TOWER_PREFIX):
            return tower_conv.unused(key[len(TOWER_PREFIX):])
        head = key.split(".")[1] if key.startswith("model.") and key.count(".") >= 2 else ""
        if head in companions:  # placed as files above
            return True
        return head in modules and modules[head].recomputed(key[len(f"model.{head}."):])

    def reshaped(key: str) -> bool:
        head = key.split(".")[1] if key.startswith("model.") and key.count(".") >= 2 else ""
        return head in modules and modules[head].reshaped(key[len(f"model.{head}."):])

    sources = [Source(weights, from_checkpoint, skip=recomputed, reshape=reshaped)]
    if tower is not None:
        def from_tower(key: str) -> str | None:
            rest = tower_conv.tower_name(key)
            return None if rest is None else "encoders.0." + rest

        sources.append(Source(WeightFiles.in_folder(tower, prefer=tower_conv.tower_files), from_tower, partial=True))
    fill_model(model, sources, origin=src, progress=options.progress)
    record = {"format": "llava", "path": str(src), "variant": f"{tower_conv.variant} tower, "
              f"{connector.name} projector",
              "vision_tower": str(tower) if tower is not None else "in the checkpoint",
              "stored_dtype": str(STORED_DTYPES.get(stored[0]) or "float32") if stored else "float32"}
    return save_checkpoint(model, out, extra={"imported_from": record})


# -- export ---------------------------------------------------------------------------------------
def _base(component: Any) -> str:
    return (getattr(component, "component_name", "") or "").split(":")[-1]


def export_problems(model: VisionLanguageModel, convs: RepoConverters) -> list[str]:
    problems: list[str] = []
    encoders = list(model.encoders)
    if len(encoders) != 1:
        problems.append(f"encoders: the LLaVA codebase has one vision tower, this model has {len(encoders)}")
    else:
        problems += [f"encoder.0 '{_base(encoders[0])}': {p}"
                     for p in convs.for_encoder(_base(encoders[0]), encoders[0])[1]]
    if len(model.connectors) > 1:
        problems.append("fusion: the LLaVA codebase has no fusion module; this model has "
                        + ", ".join(f"'{_base(c)}'" for c in list(model.connectors)[:-1]))
    if len(model.connectors):
        con = model.connectors[-1]
        problems += [f"connector '{_base(con)}': {p}" for p in convs.for_connector(_base(con), con)[1]]
    lm = model.llm.model
    lm_type = getattr(lm.config, "model_type", None)
    modules = _export_modules(model, convs)
    classes = {t: c for conv in modules.values() for t, c in conv.llm_classes.items()}
    if modules and lm_type not in classes:
        problems.append(f"llm: {', '.join(modules)} is saved with an LLM of type {', '.join(sorted(classes))}; "
                        f"this model's is '{lm_type}'")
    elif not modules and lm_type not in EXPORT_CLASSES:
        known = ", ".join(f"{c} ({t})" for t, (c, _) in EXPORT_CLASSES.items())
        problems.append(f"llm: the LLaVA codebases' classes are {known}; this model's LLM is '{lm_type}'")
    tiling = getattr(model, "tiling", None)
    if tiling is not None and lm_type in ("llama", "mistral"):  # haotian-liu/LLaVA's anyres
        if tiling.anyres_max is not None:
            problems.append(f"tiling.anyres_max: {tiling.anyres_max} is OneVision's cap (LLaVA-NeXT's code, a Qwen2 "
                            "LLM); haotian-liu/LLaVA's anyres has none")
        if not tiling.tile_multi_images:
            problems.append("tiling.tile_multi_images: false; haotian-liu/LLaVA tiles every image")
    if tiling is not None and lm_type == "qwen2" and not modules and tiling.tile_multi_images != (
            tiling.anyres_max is None):
        problems.append("tiling: LLaVA-NeXT's code pads the images of a multi-image sample exactly when it caps "
                        "the tiles (anyres_max_N): tile_multi_images must be the opposite of having anyres_max")
    rope = getattr(lm.config, "rope_parameters", None) or {}
    if isinstance(rope, dict) and rope.get("rope_type", "default") != "default":
        problems.append(f"llm: rope_type '{rope.get('rope_type')}' has no field in the LLaVA codebase's config")
    return problems


def _export_modules(model: VisionLanguageModel, convs: RepoConverters) -> dict[str, RepoModuleConversion]:
    """Objective name -> the converter that writes it as a module of the fork (objectives without one are
    training-only and left out)."""
    out = {}
    for name, objective in model.objectives.items():
        conv = next((c for c in convs.modules if _base(objective) in c.components and not c.problems(objective)), None)
        if conv is not None:
            out[name] = conv
    return out


#: transformers-5 config keys that transformers 4.x (the forks' pins) does not read, or must not
_NEWER_KEYS = {"rope_parameters", "dtype", "layer_types", "architectures", "model_type", "transformers_version",
               "_name_or_path", "auto_map", "output_attentions", "output_hidden_states", "return_dict"}


def _lm_fields(lm_config: Any) -> dict[str, Any]:
    """The LLM's config as transformers 4.x writes it: every field, rope as ``rope_theta``/``rope_scaling``."""
    out = {k: v for k, v in lm_config.to_dict().items() if k not in _NEWER_KEYS}
    rope = getattr(lm_config, "rope_parameters", None) or {}
    out["rope_theta"] = float(rope.get("rope_theta", getattr(lm_config, "rope_theta", 10000.0)))
    out["rope_scaling"] = None
    if getattr(lm_config, "model_type", None) == "llama":
        out["pretraining_tp"] = 1
    return out


def export_llava_repo(model_dir: str | Path, out: str | Path, *,
                      plugin_manager: pluggy.PluginManager | None = None) -> Path:
    """Write the vlmkit checkpoint ``model_dir`` as the LLaVA codebase saves a model: ``config.json``
    (``LlavaLlamaForCausalLM``), ``model.safetensors`` (LLM + ``model.mm_projector.*``), the tokenizer,
    and the tower in ``vision_tower/`` named by ``mm_vision_tower``."""
    from safetensors.torch import save_file

    from vlmkit.interop.hf_llava import lm_layout
    from vlmkit.model.checkpoint import load_checkpoint
    from vlmkit.model.tensor_state import storage_key

    convs = repo_converters(plugin_manager)
    problems = export_problems(load_checkpoint(model_dir, meta=True), convs)
    if problems:
        raise ConfigError(f"{model_dir}: cannot be written in the LLaVA codebase format: " + "; ".join(problems))
    model = load_checkpoint(model_dir)
    if model.tiling is not None and model.tiling.unpad_rounding != "floor":
        warnings.warn("export: this model unpads with transformers' rounding (tiling.unpad_rounding: round); the LLaVA "
                      "code floors, which keeps 2 rows fewer on about 1 image size in 20,000", UserWarning, stacklevel=2)
    modules = _export_modules(model, convs)
    extra = [name for name in model.objectives if name != "lm" and name not in modules]
    if extra:
        warnings.warn(f"export: objective(s) {', '.join(extra)} are training-only and have no place in the LLaVA "
                      "codebase format; they are left out (inference is unchanged)", UserWarning, stacklevel=2)
    enc, con, lm = model.encoders[0], model.connectors[-1], model.llm.model
    tiling = getattr(model, "tiling", None)
    tower_conv, _ = convs.for_encoder(_base(enc), enc)
    proj_conv, _ = convs.for_connector(_base(con), con)
    assert tower_conv is not None and proj_conv is not None
    lm_base, lm_head = lm_layout(lm)
    out = Path(out)
    prepare_output_folder(out, "export folder")
    state: dict[str, torch.Tensor] = {}
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for k, v in model.persistent_state_dict().items():
        obj_name = k.split(".")[1] if k.startswith("objectives.") else None
        if obj_name in modules:
            conv, obj = modules[obj_name], model.objectives[obj_name]
            rel = k[len(f"objectives.{obj_name}."):]
            name = conv.to_checkpoint_name(rel, obj)
            if name is not None:
                state[f"model.{conv.prefix}.{name}"] = conv.export_tensor(rel, v.detach(), obj).contiguous().clone()
            continue
        tower_inside = any(c.tower_in_checkpoint for c in modules.values()) or (
            not modules and lm.config.model_type == "qwen2")  # LLaVA-NeXT's releases keep the tuned tower inside
        if k.startswith("encoders.0.") and tower_inside:
            name = tower_conv.to_checkpoint_name(k[len("encoders.0."):], enc)
            if name is not None:
                state[TOWER_PREFIX + name] = v.detach().contiguous().clone()
            continue
        if k.startswith("objectives.") or k.startswith("encoders."):
            continue
        if k == "tile_merge.image_newline":
            state[NEWLINE_KEY] = v.detach().contiguous().clone()
            continue
        if k.startswith("connectors.0."):
            name = proj_conv.to_checkpoint_name(k[len("connectors.0."):], con)
            target = None if name is None else PROJECTOR_PREFIX + name
        elif k.startswith(f"llm.model.{lm_base}."):
            target = "model." + k[len(f"llm.model.{lm_base}."):]
        elif k.startswith(f"llm.model.{lm_head}."):
            target = "lm_head." + k[len(f"llm.model.{lm_head}."):]
        else:
            target = None
        if target is None:
            raise ConfigError(f"export: vlmkit weight '{k}' has no place in the LLaVA codebase format")
        key = storage_key(v)
        if key in seen and getattr(lm.config, "tie_word_embeddings", False):
            continue  # tied lm_head: saved once, as transformers does
        seen[key] = target
        state[target] = v.detach().contiguous().clone()
    tower_ref = tower_conv.save_tower(enc, out / tower_conv.tower_folder)
    view = getattr(enc, "view", None)
    for obj_name, conv in modules.items():
        for name, tensor in conv.recomputed_tensors(model.objectives[obj_name]).items():
            state[f"model.{conv.prefix}.{name}"] = tensor.contiguous()
    architecture, model_type = EXPORT_CLASSES.get(lm.config.model_type, (ARCHITECTURE, MODEL_TYPE))
    for conv in modules.values():
        architecture, model_type = conv.llm_classes[lm.config.model_type]
    next_code = not modules and lm.config.model_type == "qwen2"  # LLaVA-VL/LLaVA-NeXT's LlavaQwenForCausalLM
    if next_code:
        tower_ref = tower_conv.named_reference(enc) or tower_ref
    config = {
        "architectures": [architecture], "model_type": model_type, **_lm_fields(lm.config),
        "torch_dtype": str(next(iter(state.values())).dtype).removeprefix("torch."),
        **tower_conv.repo_config(enc), "mm_vision_tower": tower_ref, **proj_conv.repo_config(con),
        "mm_patch_merge_type": tiling.merge if tiling is not None else "flat",
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "image_aspect_ratio": _aspect(tiling, view),
        **({"image_grid_pinpoints": [[w, h] for h, w in tiling.pinpoints]} if tiling is not None else {}),
        **({"mm_tunable_parts": NEXT_TUNABLE} if next_code else {}),
        "tokenizer_model_max_length": model.config.max_length, "tokenizer_padding_side": model.config.padding_side,
        "use_mm_proj": True, "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False,
        "exported_by": "vlmkit",
    }
    for obj_name, conv in modules.items():
        config.update(conv.repo_config(model.objectives[obj_name]))
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = getattr(lm, "generation_config", None)
    if generation is not None:
        (out / "generation_config.json").write_text(json.dumps(
            {k: getattr(generation, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")
             if getattr(generation, k, None) is not None}, indent=2) + "\n")
    _write_tokenizer(model, Path(model_dir), out)
    return out


def _aspect(tiling: Any, view: Any) -> str:
    """``image_aspect_ratio``: ``anyres`` / ``anyres_max_N`` for a tiling model, else the view's resize policy."""
    if tiling is not None:
        return "anyres" if tiling.anyres_max is None else f"anyres_max_{tiling.anyres_max}"
    return ASPECT_FOR_RESIZE.get(getattr(view, "resize", "pad"), "pad")


def _write_tokenizer(model: VisionLanguageModel, model_dir: Path, out: Path) -> None:
    """The LLaVA codebase's loaders read the tokenizer with ``use_fast=False``: write the source's slow files
    (kept in ``llm/source-tokenizer/`` since the import), or, for a tokenizer that never had them, the fast
    files with a warning that the original loader cannot read them."""
    from vlmkit.model.source_tokenizer import source_tokenizer, tokenizer_files

    kept = source_tokenizer(model_dir / "llm")
    if kept is not None:
        for f in tokenizer_files(kept):
            shutil.copy(f, out / f.name)
        return
    model.tokenizer.save_pretrained(out)
    warnings.warn(f"export: {model_dir}'s tokenizer has no slow form (tokenizer.model, or vocab.json + merges.txt); "
                  "the LLaVA codebase's load_pretrained_model reads tokenizers with use_fast=False and will fail on "
                  "this folder (its model classes load it); copy the slow tokenizer files of the LLM the model was "
                  "built from into it", UserWarning, stacklevel=3)


# -- the format -----------------------------------------------------------------------------------
class LlavaRepoFormat(CheckpointFormat):
    name = "llava"
    description = ("the LLaVA codebase (haotian-liu/LLaVA) and its forks: LLaVA-1.5, LLaVA-1.6 (anyres), ViP-LLaVA, "
                   "ConvLLaVA, LLaVA-S2 / DenseFusion, LLaVA-NeXT's OneVision; towers and projectors converted by "
                   "the installed plugins")
    detection = "config.json has mm_vision_tower (LlavaLlamaForCausalLM, LlavaQwenForCausalLM and forks)"
    releases = ("liuhaotian/llava-v1.5-7b", "liuhaotian/llava-v1.5-13b", "liuhaotian/llava-v1.6-vicuna-7b",
                "lmms-lab/llava-onevision-qwen2-0.5b-ov")
    can_export = True

    config_fields = ("architectures", "model_type", "mm_vision_tower", "mm_projector_type")

    def identifying_fields(self) -> tuple[str, ...]:
        convs = repo_converters()
        extra = [f for c in [*convs.towers, *convs.projectors] for f in c.config_fields]
        return tuple(dict.fromkeys([*self.config_fields, *extra]))

    def detect(self, folder: Path, config: dict[str, Any]) -> bool:
        return "mm_vision_tower" in config

    def import_checkpoint(self, src: Path, out: Path, options: ImportOptions) -> Path:
        return import_llava_repo(src, out, options)

    def export_problems(self, model: Any) -> list[str]:
        return export_problems(model, repo_converters())

    def export_checkpoint(self, model_dir: Path, out: Path) -> Path:
        return export_llava_repo(model_dir, out)
