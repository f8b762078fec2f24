"""Recipes: a model config plus training stages. YAML in, dataclasses out, unknown keys refused."""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from ..config import ComponentConfig, ModelConfig, check_keys, load_yaml
from ..errors import ConfigError
from .lora import LoraSpec, parse_lora

DEEPSPEED_PRESETS = ("zero2", "zero3")


@dataclass
class DataConfig:
    #: dataset component name (registry kind "dataset"), required: core names no dataset plugin (recipe
    #: presets and the CLI supply one); and its arguments
    dataset: str
    args: dict[str, Any] = field(default_factory=dict)
    template: str | dict[str, Any] | None = None
    #: image preprocessing policy for fixed-size views: pad | square | resize (None: the encoder's default)
    resize: str | None = None
    transforms: list[ComponentConfig] = field(default_factory=list)
    #: what to do with a sample that cannot be used (corrupt image, all labels masked...): error | skip
    on_bad_sample: str = "error"
    #: sampler component (registry kind "sampler"), e.g. modality-length; None: random order
    sampler: str | None = None


@dataclass
class Stage:
    name: str
    data: DataConfig
    trainable: list[str] = field(default_factory=lambda: ["connector"])
    lr: float = 1e-3
    #: extra learning rates: selector -> lr (e.g. {"encoder.0:layers>=12": 2e-5})
    lr_groups: dict[str, float] = field(default_factory=dict)
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    precision: str = "fp32"
    schedule: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int | None = None
    save_steps: int = 500
    save_total_limit: int | None = 2
    logging_steps: int = 10
    #: zero2, zero3 or a DeepSpeed JSON file; run the command under torchrun / deepspeed for several processes
    deepspeed: str | None = None
    max_length: int | None = None
    #: recompute activations in the backward pass: true (llm + trainable encoders) or a list of parts
    gradient_checkpointing: bool | list[str] = False
    dataloader_workers: int = 0
    #: LoRA/QLoRA adapters on one part, merged into the final checkpoint (see training/lora.py)
    lora: LoraSpec | None = None
    #: several samples per row, no attention across them (see vlmkit/packing.py)
    packing: bool = False
    #: the row length for packing, in tokens after splicing (default: the model's max_length)
    pack_max_tokens: int | None = None


@dataclass
class Recipe:
    model: ModelConfig
    stages: list[Stage]
    output_dir: str = "runs/vlmkit"
    seed: int = 0
    #: a checkpoint to start stage 1 from, instead of building the model fresh
    init_from: str | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = {"model": self.model.to_dict(), "output_dir": self.output_dir, "seed": self.seed,
             "init_from": self.init_from, "stages": []}
        for st in self.stages:
            sd = asdict(st)
            sd["data"]["transforms"] = [t.to_dict() for t in st.data.transforms]
            d["stages"].append(sd)
        return d


STAGE_KEYS = {f for f in Stage.__dataclass_fields__}
DATA_KEYS = {f for f in DataConfig.__dataclass_fields__}


def _apply_override(doc: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set '{assignment}': expected KEY=VALUE, e.g. stages.0.lr=1e-3")
    key, _, raw = assignment.partition("=")
    value = yaml.safe_load(raw) if raw.strip() else ""
    node: Any = doc
    parts = key.strip().split(".")
    for i, p in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                raise ConfigError(f"--set {key}: no list index '{p}'")
            node = node[int(p)]
        else:
            if p not in node or node[p] is None:
                node[p] = [] if nxt.isdigit() else {}
            node = node[p]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def parse_recipe(doc: dict[str, Any], where: str = "recipe") -> Recipe:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping")
    check_keys(doc, {"model", "stages", "output_dir", "seed", "init_from"}, where)
    model_doc = doc.get("model") or {}
    if isinstance(model_doc, str) or (isinstance(model_doc, dict) and "preset" in model_doc):
        name = model_doc if isinstance(model_doc, str) else model_doc["preset"]
        from ..registry import registry

        preset = registry.load("preset", name)
        base = copy.deepcopy(preset() if callable(preset) else preset)
        if isinstance(model_doc, dict):
            base.update({k: v for k, v in model_doc.items() if k != "preset"})
        model_doc = base
    model = ModelConfig.from_dict(model_doc, f"{where}.model")
    stages_doc = doc.get("stages")
    if not stages_doc:
        raise ConfigError(f"{where}: no stages")
    stages = []
    for i, sd in enumerate(stages_doc):
        w = f"{where}.stages[{i}]"
        if not isinstance(sd, dict):
            raise ConfigError(f"{w}: expected a mapping")
        check_keys(sd, STAGE_KEYS, w)
        sd = dict(sd)
        dd = sd.pop("data", None)
        if not isinstance(dd, dict):
            raise ConfigError(f"{w}: missing 'data' mapping")
        check_keys(dd, DATA_KEYS, f"{w}.data")
        if not dd.get("dataset"):
            from ..registry import registry

            raise ConfigError(f"{w}.data.dataset: not set; name the dataset component that reads this stage's data "
                              f"({registry.installed_summary('dataset')})")
        if not isinstance(dd["dataset"], str):
            raise ConfigError(f"{w}.data.dataset: expected a dataset name, got {type(dd['dataset']).__name__}")
        dd = dict(dd)
        dd["transforms"] = [ComponentConfig.parse(t, f"{w}.data.transforms[{j}]")
                            for j, t in enumerate(dd.get("transforms") or [])]
        data = DataConfig(**dd)
        if data.on_bad_sample not in ("error", "skip"):
            raise ConfigError(f"{w}.data.on_bad_sample: expected 'error' or 'skip', got '{data.on_bad_sample}'")
        sd.setdefault("name", f"stage{i + 1}")
        sd["lora"] = parse_lora(sd.get("lora"), f"{w}.lora")
        try:
            st = Stage(data=data, **sd)
        except TypeError as exc:
            raise ConfigError(f"{w}: {exc}") from exc
        for key, typ in (("lr", float), ("epochs", float), ("warmup_ratio", float), ("weight_decay", float)):
            try:
                setattr(st, key, typ(getattr(st, key)))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{w}.{key}: expected a number, got {getattr(st, key)!r}") from exc
        if st.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"{w}.precision: expected fp32, bf16 or fp16, got '{st.precision}'")
        if isinstance(st.trainable, str):
            st.trainable = [st.trainable]
        _check_scaling_keys(st, w)
        stages.append(st)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: stage names must be unique, got {names}")
    return Recipe(model=model, stages=stages, output_dir=str(doc.get("output_dir", "runs/vlmkit")),
                  seed=int(doc.get("seed", 0)), init_from=doc.get("init_from"), source=where)


def _check_scaling_keys(st: Stage, where: str) -> None:
    gc = st.gradient_checkpointing
    if isinstance(gc, str):
        st.gradient_checkpointing = gc = [gc]
    if not isinstance(gc, bool) and not (isinstance(gc, list) and all(isinstance(x, str) for x in gc)):
        raise ConfigError(f"{where}.gradient_checkpointing: expected true/false or a list of parts "
                          f"(llm, encoders, encoder.0), got {gc!r}")
    if not isinstance(st.packing, bool):
        raise ConfigError(f"{where}.packing: expected true or false, got {st.packing!r}")
    if st.pack_max_tokens is not None and (not isinstance(st.pack_max_tokens, int) or st.pack_max_tokens < 1):
        raise ConfigError(f"{where}.pack_max_tokens: expected a positive number of tokens, got {st.pack_max_tokens!r}")
    if st.lora is not None and st.lora.quantize and st.deepspeed:
        raise ConfigError(f"{where}: QLoRA (lora.quantize) runs without DeepSpeed; drop one of the two")


def load_recipe(ref: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A YAML file, or the name of a registered recipe preset; ``overrides`` are KEY=VALUE strings."""
    if os.path.exists(ref) or ref.endswith((".yaml", ".yml")):
        doc = load_yaml(ref)
        where = ref
    else:
        from ..registry import registry

        obj = registry.load("recipe", ref)
        doc = copy.deepcopy(obj() if callable(obj) else obj)
        where = f"recipe preset '{ref}'"
    for o in overrides:
        _apply_override(doc, o)
    return parse_recipe(doc, where)
