"""transformers' Trainer, taught four things: parameter groups with their own learning rates, one
log entry per loss term (and the padding share of the batches), vlmkit checkpoints (safetensors +
vlmkit.yaml) for every save, whole weights under ZeRO-3, and a token-weighted loss that is the same
on N processes as on one."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Callable

import torch
from transformers import Trainer

from ..checkpoint import WEIGHTS_FILE, load_weights, save_checkpoint
from ..parts import select_parameters
from .distributed import save_weights


class VlmkitTrainer(Trainer):
    def __init__(self, *args: Any, lr_groups: dict[str, float] | None = None,
                 sampler_factory: Callable[[Any], torch.utils.data.Sampler] | None = None, **kwargs: Any):
        self.lr_groups = dict(lr_groups or {})
        self.sampler_factory = sampler_factory
        self._term_sums: dict[str, float] = defaultdict(float)
        self._term_counts: dict[str, int] = defaultdict(int)
        self._slots = [0, 0]  # real tokens, computed token slots (for the padding fraction)
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
        world = self.accelerator.num_processes
        if num_items_in_batch is not None and world > 1 and self.args.average_tokens_across_devices:
            # the Trainer counts supervised tokens over all processes; gradients are then averaged over
            # processes, so each process divides its token sum by 1/world of the global count
            num_items_in_batch = num_items_in_batch / world
        out = model(**inputs, num_items_in_batch=num_items_in_batch)
        for k, v in out.losses.items():
            self._term_sums[k] += float(v.detach())
            self._term_counts[k] += 1
        if out.attention_mask is not None:
            self._slots[0] += int(out.attention_mask.sum())
            self._slots[1] += out.attention_mask.numel()
        return (out.loss, out) if return_outputs else out.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            names = sorted(self._term_sums)
            stats = torch.tensor([self._term_sums[k] / max(1, self._term_counts[k]) for k in names] + self._slots,
                                 dtype=torch.float64, device=self.args.device)
            if self.accelerator.num_processes > 1:  # every process logs at the same steps: average the terms
                stats = self.accelerator.reduce(stats, reduction="sum")
                stats[:len(names)] /= self.accelerator.num_processes
            for k, v in zip(names, stats.tolist()):
                logs[f"loss/{k}"] = round(v, 6)
            if stats[-1] > 0:
                logs["pad_fraction"] = round(1.0 - float(stats[-2] / stats[-1]), 4)
            self._term_sums.clear()
            self._term_counts.clear()
            self._slots = [0, 0]
        super().log(logs, start_time)

    # -- checkpoints -------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Periodic checkpoints: ``state_dict`` is the gathered one under DeepSpeed. With LoRA the adapters
        stay unmerged here (exact resume); the stage's final checkpoint is the merged one."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model)
        if state_dict is None:
            save_checkpoint(model, output_dir)
        else:
            save_weights(model, state_dict, output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        model = model or self.model
        tensors, aliases = load_weights(os.path.join(resume_from_checkpoint, WEIGHTS_FILE))
        for alias, target in aliases.items():
            tensors[alias] = tensors[target]
        model.load_state_dict(tensors, strict=False)
