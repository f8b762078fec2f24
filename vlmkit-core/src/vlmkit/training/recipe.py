"""Recipes: a model config plus training stages. YAML in, dataclasses out, unknown keys refused.

Every stage value is checked against the field's declared type and range (a pydantic schema over the
dataclasses below) before anything runs: a wrong value is a ConfigError naming the file, the field, what
it expects (the allowed values for a choice) and what it got.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, Field, StrictBool, TypeAdapter, ValidationError

from vlmkit.errors import ConfigError
from vlmkit.model.config import ComponentConfig, ModelConfig, check_keys, load_yaml, parse_assignment
from vlmkit.plugins.arguments import BoundedInt, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from vlmkit.training.lora import LoraSpec, parse_lora

DEEPSPEED_PRESETS = ("zero2", "zero3")
#: ceilings on sizes (documented in the README's Errors section): far above any real run, low enough that a
#: mistyped value is refused with its field path instead of allocating for minutes
MAX_BATCH = 1 << 16
MAX_TOKENS = 1 << 20
MAX_WORKERS = 256


def _one_of(valid: list[str], value: str) -> str:
    if value not in valid:
        raise ValueError(f"input should be one of {', '.join(repr(v) for v in valid)}")
    return value


def schedule_name(value: str) -> str:
    """One of transformers' learning-rate schedules (``SchedulerType``), listed when the value is not."""
    from transformers import SchedulerType

    return _one_of([s.value for s in SchedulerType], value)


Schedule = Annotated[str, AfterValidator(schedule_name)]


def optimizer_name(value: str) -> str:
    """One of transformers' optimizers (``OptimizerNames``, the Trainer's ``optim``), listed when it is not."""
    from transformers.training_args import OptimizerNames

    return _one_of([o.value for o in OptimizerNames], value)


Optimizer = Annotated[str, AfterValidator(optimizer_name)]



@dataclass
class DataConfig:
    #: dataset component name (registry kind "dataset"), required: core names no dataset plugin (recipe
    #: presets and the CLI supply one); and its arguments
    dataset: str
    args: dict[str, Any] = field(default_factory=dict)
    template: Optional[Union[str, dict[str, Any]]] = None
    #: image preprocessing policy for fixed-size views: pad | square | resize (None: the encoder's default)
    resize: Optional[Literal["pad", "square", "resize"]] = None
    transforms: list[ComponentConfig] = field(default_factory=list)
    #: what to do with a sample that cannot be used (corrupt image, all labels masked...): error | skip
    on_bad_sample: Literal["error", "skip"] = "error"
    #: sampler component (registry kind "sampler"), e.g. modality-length; None: random order
    sampler: Optional[str] = None


@dataclass
class Stage:
    name: str
    data: DataConfig
    trainable: list[str] = field(default_factory=lambda: ["connector"])
    lr: PositiveFloat = 1e-3
    #: extra learning rates: selector -> lr (e.g. {"encoder.0:layers>=12": 2e-5})
    lr_groups: dict[str, PositiveFloat] = field(default_factory=dict)
    epochs: PositiveFloat = 1.0
    max_steps: Optional[PositiveInt] = None
    batch_size: BoundedInt(MAX_BATCH) = 8
    grad_accum: BoundedInt(MAX_BATCH) = 1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    schedule: Schedule = "cosine"
    warmup_ratio: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.03
    #: transformers' optimizer name (TrainingArguments.optim); adamw_torch is LLaVA's (non-fused AdamW)
    optimizer: Optimizer = "adamw_torch"
    #: applied to weights only: biases and norm weights never decay (the Trainer's decay-parameter rule)
    weight_decay: NonNegativeFloat = 0.0
    max_grad_norm: NonNegativeFloat = 1.0
    seed: Optional[NonNegativeInt] = None
    save_steps: PositiveInt = 500
    save_total_limit: Optional[PositiveInt] = 2
    logging_steps: PositiveInt = 10
    #: zero2, zero3 or a DeepSpeed JSON file; run the command under torchrun / deepspeed for several processes
    deepspeed: Optional[str] = None
    max_length: Optional[BoundedInt(MAX_TOKENS)] = None
    #: recompute activations in the backward pass: true (llm + trainable encoders) or a list of parts
    gradient_checkpointing: Union[StrictBool, list[str]] = False
    dataloader_workers: Annotated[int, Field(ge=0, le=MAX_WORKERS)] = 0
    #: LoRA/QLoRA adapters on one part, merged into the final checkpoint (see training/lora.py)
    lora: Optional[LoraSpec] = None
    #: several samples per row, no attention across them (see vlmkit/data/packing.py)
    packing: StrictBool = False
    #: the row length for packing, in tokens after splicing (default: the model's max_length)
    pack_max_tokens: Optional[BoundedInt(MAX_TOKENS)] = None


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


@dataclass
class RecipeSettings:
    """The recipe's own top-level values (besides model and stages)."""

    output_dir: str
    seed: NonNegativeInt
    init_from: Optional[str]


STAGE_KEYS = {f for f in Stage.__dataclass_fields__}
DATA_KEYS = {f for f in DataConfig.__dataclass_fields__}


def _apply_override(doc: dict[str, Any], assignment: str) -> None:
    key, value = parse_assignment(assignment, "KEY=VALUE, e.g. stages.0.lr=1e-3")
    node: Any = doc
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"--set {key}: empty part in the key (expected dotted names, e.g. stages.0.lr)")
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        at = ".".join(parts[:i + 1])
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                raise ConfigError(f"--set {key}: '{at}' is not a list index here (the list has {len(node)} "
                                  f"item(s): {'.'.join(parts[:i])}.0 to .{len(node) - 1})" if node else
                                  f"--set {key}: '{'.'.join(parts[:i])}' is an empty list")
            if last:
                node[int(p)] = value
            else:
                node = node[int(p)]
        elif isinstance(node, dict):
            if last:
                node[p] = value
            else:
                if p not in node or node[p] is None:
                    node[p] = [] if parts[i + 1].isdigit() else {}
                node = node[p]
        else:
            raise ConfigError(f"--set {key}: '{'.'.join(parts[:i])}' is {type(node).__name__} {node!r}, not a "
                              "mapping or a list")


def parse_recipe(doc: dict[str, Any], where: str = "recipe") -> Recipe:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping")
    check_keys(doc, {"model", "stages", "output_dir", "seed", "init_from"}, where)
    model_doc = doc.get("model") or {}
    if isinstance(model_doc, str) or (isinstance(model_doc, dict) and "preset" in model_doc):
        name = model_doc if isinstance(model_doc, str) else model_doc["preset"]
        from vlmkit.plugins.presets import load_preset

        base = load_preset("preset", name)
        if isinstance(model_doc, dict):
            base.update({k: v for k, v in model_doc.items() if k != "preset"})
        model_doc = base
    model = ModelConfig.from_dict(model_doc, f"{where}.model")
    stages_doc = doc.get("stages")
    if not stages_doc:
        raise ConfigError(f"{where}: no stages")
    if not isinstance(stages_doc, list):
        raise ConfigError(f"{where}.stages: expected a list of stages, got {type(stages_doc).__name__} {stages_doc!r}")
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
            from vlmkit.plugins.registry import registry

            raise ConfigError(f"{w}.data.dataset: not set; name the dataset component that reads this stage's data "
                              f"({registry.installed_summary('dataset')})")
        if not isinstance(dd["dataset"], str):
            raise ConfigError(f"{w}.data.dataset: expected a dataset name, got {type(dd['dataset']).__name__}")
        dd = dict(dd)
        dd["transforms"] = [ComponentConfig.parse(t, f"{w}.data.transforms[{j}]")
                            for j, t in enumerate(dd.get("transforms") or [])]
        try:
            data = TypeAdapter(DataConfig).validate_python(dd)
        except ValidationError as exc:
            raise schema_error(exc, f"{w}.data") from None
        sd.setdefault("name", f"stage{i + 1}")
        sd["lora"] = parse_lora(sd.get("lora"), f"{w}.lora")
        for key in ("trainable", "gradient_checkpointing"):  # one name stands for a list of one
            if isinstance(sd.get(key), str):
                sd[key] = [sd[key]]
        try:
            st = TypeAdapter(Stage).validate_python({**sd, "data": data})
        except ValidationError as exc:
            raise schema_error(exc, w) from None
        if st.lora is not None and st.lora.quantize and st.deepspeed:
            raise ConfigError(f"{w}: QLoRA (lora.quantize) runs without DeepSpeed; drop one of the two")
        stages.append(st)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: stage names must be unique, got {names}")
    top = {"output_dir": doc.get("output_dir", "runs/vlmkit"), "seed": doc.get("seed", 0),
           "init_from": doc.get("init_from")}
    try:
        top = asdict(TypeAdapter(RecipeSettings).validate_python(top))
    except ValidationError as exc:
        raise schema_error(exc, where) from None
    return Recipe(model=model, stages=stages, source=where, **top)


def load_recipe(ref: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A YAML file, or the name of a registered recipe preset; ``overrides`` are KEY=VALUE strings."""
    if os.path.exists(ref) or ref.endswith((".yaml", ".yml")):
        doc = load_yaml(ref)
        where = ref
    else:
        from vlmkit.plugins.presets import load_preset

        doc = load_preset("recipe", ref)
        where = f"recipe preset '{ref}'"
    for o in overrides:
        _apply_override(doc, o)
    return parse_recipe(doc, where)


def schema_error(exc: ValidationError, where: str) -> ConfigError:
    """A pydantic error as one line: the field's dotted path, what it expects, what it got."""
    first = exc.errors()[0]
    loc = ".".join(str(x) for x in first["loc"] if not str(x).startswith(("function-", "lax-or-strict")))
    got = first.get("input")
    msg = first["msg"].removeprefix("Value error, ")  # a validator's own message reads as pydantic's do
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    return ConfigError(f"{where}.{loc}: {msg[0].lower()}{msg[1:]}, got {got!r}{more}")
