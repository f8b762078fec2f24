"""transformers' Trainer, taught three things: parameter groups with their own learning rates, one
log entry per loss term, and vlmkit checkpoints (safetensors + vlmkit.yaml) for every save."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Callable

import torch
from transformers import Trainer

from ..checkpoint import WEIGHTS_FILE, load_weights, save_checkpoint
from ..parts import select_parameters


class VlmkitTrainer(Trainer):
    def __init__(self, *args: Any, lr_groups: dict[str, float] | None = None,
                 sampler_factory: Callable[[Any], torch.utils.data.Sampler] | None = None, **kwargs: Any):
        self.lr_groups = dict(lr_groups or {})
        self.sampler_factory = sampler_factory
        self._term_sums: dict[str, float] = defaultdict(float)
        self._term_counts: dict[str, int] = defaultdict(int)
        super().__init__(*args, **kwargs)

    # -- optimisation ------------------------------------------------------------------------
    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        if self.optimizer is not None:
            return self.optimizer
        model = model or self.model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        assigned: set[str] = set()
        groups = []
        for selector, lr in self.lr_groups.items():
            chosen = select_parameters(model, [selector])
            params = [p for n, p in named if n in chosen and n not in assigned]
            assigned |= {n for n, _ in named if n in chosen}
            if params:
                groups.append({"params": params, "lr": float(lr), "weight_decay": self.args.weight_decay})
        rest = [p for n, p in named if n not in assigned]
        if rest:
            groups.insert(0, {"params": rest, "lr": self.args.learning_rate, "weight_decay": self.args.weight_decay})
        self.optimizer = torch.optim.AdamW(groups, lr=self.args.learning_rate, betas=(self.args.adam_beta1, self.args.adam_beta2),
                                           eps=self.args.adam_epsilon)
        return self.optimizer

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if self.sampler_factory is not None:
            return self.sampler_factory(train_dataset or self.train_dataset)
        return super()._get_train_sampler(train_dataset)

    # -- loss and logging --------------------------------------------------------------------
    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        out = model(**inputs, num_items_in_batch=num_items_in_batch)
        for k, v in out.losses.items():
            self._term_sums[k] += float(v.detach())
            self._term_counts[k] += 1
        return (out.loss, out) if return_outputs else out.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_counts:
            for k in list(self._term_sums):
                logs[f"loss/{k}"] = round(self._term_sums[k] / max(1, self._term_counts[k]), 6)
            self._term_sums.clear()
            self._term_counts.clear()
        super().log(logs, start_time)

    # -- checkpoints -------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model)
        save_checkpoint(model, output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        model = model or self.model
        tensors, aliases = load_weights(os.path.join(resume_from_checkpoint, WEIGHTS_FILE))
        for alias, target in aliases.items():
            tensors[alias] = tensors[target]
        model.load_state_dict(tensors, strict=False)
