"""Run a recipe: stage after stage, each starting from the previous stage's weights.

Output layout::

    OUTPUT/recipe.yaml
    OUTPUT/01-<stage>/checkpoint-<step>/    (periodic, resumable: weights + optimizer/scheduler/RNG state)
    OUTPUT/01-<stage>/final/                (a vlmkit checkpoint, loadable like `vlmkit build --out`)
    OUTPUT/01-<stage>/final/loss_curve.png, log_history.json, skipped.json
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import TrainerCallback

from vlmkit.cpu_threads import ThreadsFollower, apply_threads
from vlmkit.data.processing import MultimodalProcessor
from vlmkit.data.samples import BOXES, provides
from vlmkit.errors import ConfigError, IncompatibleComponentsError
from vlmkit.model.assembly import build_component, build_model
from vlmkit.model.checkpoint import load_checkpoint
from vlmkit.model.contracts import non_persistent_prefixes
from vlmkit.model.lm_objective import LanguageModelingObjective
from vlmkit.model.selectors import set_trainable
from vlmkit.model.vlm import VisionLanguageModel
from vlmkit.output_folder import prepare_output_folder
from vlmkit.plugins.hooks import get_plugin_manager
from vlmkit.plugins.registry import registry
from vlmkit.training.activation_checkpointing import enable_gradient_checkpointing
from vlmkit.training.data import SupervisedDataset, TrainingCollator
from vlmkit.training.distributed import full_state_dict, is_main_process, prepare_deepspeed_on_cpu, save_weights
from vlmkit.training.lora import apply_lora, lora_key_map, merge_lora_state_dict, target_modules
from vlmkit.training.plots import plot_loss_curve
from vlmkit.training.recipe import Recipe, Stage
from vlmkit.training.resume import find_resume_checkpoint

log = logging.getLogger(__name__)


def check_deepspeed(ref: str | None, where: str) -> None:
    """Before anything runs: the value names a preset or a file, and DeepSpeed is installed."""
    if ref is None:
        return
    if ref not in ("zero2", "zero3") and not Path(ref).is_file():
        raise ConfigError(f"{where}.deepspeed: '{ref}' is neither zero2, zero3 nor a DeepSpeed JSON file")
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"{where}.deepspeed: '{ref}' needs DeepSpeed, which is not installed: "
                          "pip install 'vlmkit-core[deepspeed]'")


def deepspeed_config(ref: str | None, stage: Stage) -> dict[str, Any] | str | None:
    if ref is None:
        return None
    if ref in ("zero2", "zero3"):
        cfg: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "zero_optimization": {"stage": int(ref[-1]), "overlap_comm": False, "contiguous_gradients": True},
            "bf16": {"enabled": "auto"},
            "fp16": {"enabled": "auto"},
        }
        if ref == "zero3":
            cfg["zero_optimization"].update({"stage3_gather_16bit_weights_on_model_save": True})
        return cfg
    if not Path(ref).is_file():
        raise ConfigError(f"deepspeed: '{ref}' is neither zero2, zero3 nor a file")
    try:
        doc = json.loads(Path(ref).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"deepspeed: {ref} is not valid JSON ({exc})") from exc
    zero = doc.get("zero_optimization") or {}
    if zero.get("stage") == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save"):
        raise ConfigError(f"deepspeed: {ref} shards the weights (ZeRO-3) without "
                          "'stage3_gather_16bit_weights_on_model_save': true; vlmkit checkpoints hold whole "
                          "weights, gathered at save time, so set it")
    return ref


def build_dataset(stage: Stage) -> Any:
    factory = registry.load("dataset", stage.data.dataset)
    from vlmkit.plugins.arguments import validate_args

    validate_args(f"dataset '{stage.data.dataset}'", factory, stage.data.args)
    dataset = factory(**stage.data.args)
    try:
        n = len(dataset)
    except TypeError:  # a streaming dataset: its length is not known up front
        return dataset
    if n == 0:
        source = next((f"{k} {v}" for k, v in stage.data.args.items() if k in ("path", "file", "root", "data")), "")
        raise ConfigError(f"stage '{stage.name}': dataset '{stage.data.dataset}' has no records"
                          + (f" ({source})" if source else "") + "; nothing to train on")
    return dataset


def check_data_compatibility(model: VisionLanguageModel, dataset: Any, stage: Stage) -> None:
    if model.needs_boxes and BOXES not in provides(dataset):
        users = ", ".join(f"'{c.component_name}'" for c in model.connectors if getattr(c, "needs_boxes", False))
        raise IncompatibleComponentsError(
            f"connector {users}", f"dataset '{stage.data.dataset}' (stage '{stage.name}')",
            "the connector needs boxes but the dataset provides none; join a box file to the data, or drop the connector")


def training_arguments(stage: Stage, output_dir: Path, seed: int) -> Any:
    from transformers import TrainingArguments

    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir), per_device_train_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.grad_accum, learning_rate=stage.lr, num_train_epochs=stage.epochs,
        max_steps=stage.max_steps if stage.max_steps else -1, lr_scheduler_type=stage.schedule,
        warmup_steps=stage.warmup_ratio, optim=stage.optimizer, weight_decay=stage.weight_decay,
        max_grad_norm=stage.max_grad_norm,
        logging_steps=stage.logging_steps, logging_first_step=True, save_strategy="steps", save_steps=stage.save_steps,
        # rotation is the trainer's own (it counts complete checkpoints only): see resume.py
        save_total_limit=None, seed=seed, data_seed=seed, report_to="none",
        remove_unused_columns=False, dataloader_num_workers=stage.dataloader_workers,
        bf16=stage.precision == "bf16", fp16=stage.precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        deepspeed=deepspeed_config(stage.deepspeed, stage),
    )
    # gradient checkpointing is switched on per part by the runner (activation_checkpointing.py), not by the Trainer
    return TrainingArguments(**kwargs)


class FollowCpuThreads(TrainerCallback):
    """Re-sizes torch's CPU thread pool as the machine's load changes (``vlmkit.cpu_threads``)."""

    def __init__(self) -> None:
        self.follower = ThreadsFollower()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.follower.step()


def run_stage(model: VisionLanguageModel, stage: Stage, stage_dir: Path, recipe: Recipe, resume: bool,
              weights_only: bool = False) -> Path:
    from vlmkit.training.trainer import VlmkitTrainer

    seed = stage.seed if stage.seed is not None else recipe.seed
    torch.manual_seed(seed)
    if stage.max_length:
        model.config.max_length = stage.max_length
    prepare_stage_model(model, stage)
    dataset = build_dataset(stage)
    check_data_compatibility(model, dataset, stage)
    transforms = [build_component("transform", t) for t in stage.data.transforms]
    processor = MultimodalProcessor.for_model(model, template=stage.data.template, resize_policy=stage.data.resize)
    train_ds = SupervisedDataset(dataset, processor, transforms, stage.data.on_bad_sample, seed)
    pack = (stage.pack_max_tokens or model.config.max_length) if stage.packing else None
    collator = TrainingCollator(model.tokenizer.pad_token_id, list(model.views), model.config.padding_side,
                                pack_max_tokens=pack)
    if stage.deepspeed:
        prepare_deepspeed_on_cpu()
    args = training_arguments(stage, stage_dir, seed)

    sampler_factory = None
    if stage.data.sampler:
        make = registry.load("sampler", stage.data.sampler)
        world = args.world_size * stage.grad_accum

        def sampler_factory(ds: Any) -> Any:
            return make(ds.dataset, batch_size=stage.batch_size, world_size=world, seed=seed)

    callbacks = [cb for res in get_plugin_manager().hook.vlmkit_training_callbacks(recipe=recipe, stage=stage) if res
                 for cb in res]
    if not torch.cuda.is_available():  # CPU kernels: threads that fit the machine, followed as its load changes
        apply_threads()
        callbacks.append(FollowCpuThreads())
    trainer = VlmkitTrainer(model=model, args=args, train_dataset=train_ds, data_collator=collator,
                            lr_groups=stage.lr_groups, sampler_factory=sampler_factory, callbacks=callbacks,
                            keep_checkpoints=stage.save_total_limit)
    ckpt = find_resume_checkpoint(stage_dir, weights_only) if resume else None
    trainer.train(resume_from_checkpoint=ckpt)

    # the final checkpoint is written beside its place and renamed into it when every file is there:
    # a stage is done exactly when `final` exists
    final = stage_dir / "final"
    partial = stage_dir / "final.partial"
    state = full_state_dict(trainer)  # every process takes part (ZeRO-3 gathers); rank 0 gets the tensors
    report = trainer.data_report_dict()  # likewise (gathers every process's skips and truncations)
    if trainer.args.should_save:
        shutil.rmtree(partial, ignore_errors=True)  # what an interrupted final save left
        assert state is not None
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        extra = {"stage": stage.name, "recipe": recipe.source}
        if stage.lora is not None:  # a plain checkpoint: adapters merged into their base weights
            extra["lora"] = {"merged": True, **asdict(stage.lora)}
            save_weights(unwrapped, merge_lora_state_dict(unwrapped, state), partial, extra,
                         key_map=lora_key_map(unwrapped))
        else:
            save_weights(unwrapped, state, partial, extra)
        history = trainer.state.log_history
        (partial / "log_history.json").write_text(json.dumps(history, indent=1))
        plot_loss_curve(history, partial / "loss_curve.png", title=f"{stage.name}: loss")
        (partial / "skipped.json").write_text(json.dumps(report, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        if report["skipped"]:
            log.warning("stage %s skipped %d sample(s): %s (list in %s)", stage.name, report["skipped"],
                        report["by_kind"], final / "skipped.json")
        if report["truncated"]:
            log.warning("stage %s cut %d sample(s) at max_length=%d (list in %s)", stage.name, report["truncated"],
                        model.config.max_length, final / "skipped.json")
    trainer.accelerator.wait_for_everyone()  # the next stage reads `final` on every process
    return final


def prepare_stage_model(model: VisionLanguageModel, stage: Stage) -> dict[str, Any]:
    """Trainable parameters, LoRA adapters, gradient checkpointing and the packing check for one stage.

    Returns what was set up: ``trainable`` (parameter names), ``lora`` (adapted modules) and
    ``gradient_checkpointing`` (part -> mechanism).
    """
    set_trainable(model, stage.trainable)
    done: dict[str, Any] = {"lora": [], "gradient_checkpointing": {}}
    if stage.lora is not None:
        if stage.lora.quantize and stage.deepspeed:  # the CLI's --deepspeed is set after the recipe was read
            raise ConfigError(f"stage '{stage.name}': QLoRA (lora.quantize) runs without DeepSpeed; drop one of the two")
        targets = target_modules(model, stage.lora)
        prefix_of = {id(m): n for n, m in model.named_modules()}
        prefixes = [prefix_of[id(m)] + "." for m in targets.values()]
        clash = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith(tuple(prefixes))]
        if clash:
            raise ConfigError(f"stage '{stage.name}': 'trainable' selects parameters of the LoRA target "
                              f"'{stage.lora.target}' (e.g. {clash[0]}); LoRA trains adapters there and freezes the "
                              f"rest, so drop that part from 'trainable'")
        done["lora"] = apply_lora(model, stage.lora)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError(f"stage '{stage.name}': 'trainable' selects no parameter")
    done["trainable"] = trainable
    done["frozen_objectives"] = frozen_objectives(model)
    for name in done["frozen_objectives"]:
        log.warning("stage %s: objective '%s' counts in the loss (weight %g) but none of its own parameters train, "
                    "so its loss cannot fall and the gradient it sends back comes from its initial weights; add "
                    "'objective.%s' to the stage's trainable (or set its weight to 0) unless that is the intent",
                    stage.name, name, model.loss_weights.get(name, 1.0), name)
    if stage.gradient_checkpointing:
        done["gradient_checkpointing"] = enable_gradient_checkpointing(model, stage.gradient_checkpointing)
    if stage.packing:
        unsupported = [name for name, obj in model.objectives.items()
                       if not getattr(obj, "supports_packing", isinstance(obj, LanguageModelingObjective))]
        if unsupported:
            raise ConfigError(f"stage '{stage.name}': packing puts several samples in a row, which objective(s) "
                              f"{', '.join(unsupported)} do not declare they support (supports_packing); "
                              "drop 'packing' for this stage")
    return done


def frozen_objectives(model: VisionLanguageModel) -> list[str]:
    """Objectives that count in the loss (weight above 0) and own parameters (their frozen teachers aside),
    none of which trains: a stage that forgot to list them in ``trainable``."""
    teachers = tuple(f"{t}." for t in non_persistent_prefixes(model))
    out = []
    for name, objective in model.objectives.items():
        if model.loss_weights.get(name, 1.0) <= 0:
            continue
        own = [p for n, p in objective.named_parameters(prefix=f"objectives.{name}") if not n.startswith(teachers)]
        if own and not any(p.requires_grad for p in own):
            out.append(name)
    return out


def run_recipe(recipe: Recipe, resume: bool = False, weights_only: bool = False) -> Path:
    """Run every stage not yet done. ``resume`` continues from each stage's newest complete checkpoint;
    ``weights_only`` lets it continue from one whose optimizer/scheduler state is gone."""
    for i, stage in enumerate(recipe.stages):
        check_deepspeed(stage.deepspeed, f"{recipe.source}.stages[{i}]")
    out = Path(recipe.output_dir)
    prepare_output_folder(out, f"{recipe.source}: output_dir")
    if is_main_process():
        (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    prev: Path | None = Path(recipe.init_from) if recipe.init_from else None
    for i, stage in enumerate(recipe.stages):
        stage_dir = out / f"{i + 1:02d}-{stage.name}"
        final = stage_dir / "final"
        if resume and final.is_dir():  # `final` appears whole (renamed into place) or not at all
            prev = final
            continue
        if not resume and stage_dir.exists() and any(stage_dir.iterdir()):
            raise ConfigError(f"{stage_dir} already holds a run; pass --resume to continue it or choose another --output")
        if prev is None:
            torch.manual_seed(recipe.seed)  # initial weights are part of the recipe: seed them
            model = build_model(recipe.model)
        else:  # remote code only if the user's own recipe asks for it (never because a checkpoint does)
            trust = bool(recipe.model.llm is not None and (recipe.model.llm.args or {}).get("trust_remote_code"))
            model = load_checkpoint(prev, trust_remote_code=trust)
        prev = run_stage(model, stage, stage_dir, recipe, resume, weights_only)
        del model
    assert prev is not None
    return prev
