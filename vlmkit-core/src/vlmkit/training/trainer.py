"""transformers' Trainer, taught four things: parameter groups with their own learning rates, one
log entry per loss term (and the padding share of the batches), vlmkit checkpoints (safetensors +
vlmkit.yaml) for every save, whole weights under ZeRO-3, and a token-weighted loss that is the same
on N processes as on one."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import Trainer

from vlmkit.model.checkpoint import load_checkpoint_weights, save_checkpoint
from vlmkit.model.selectors import select_parameters
from vlmkit.training.data import REPORT_KEY, DataReport
from vlmkit.training.distributed import save_weights
from vlmkit.training.resume import rotate, write_manifest

#: the data report inside a periodic checkpoint (skips and truncations so far: resume goes on counting)
DATA_REPORT_FILE = "data_report.json"


class VlmkitTrainer(Trainer):
    def __init__(self, *args: Any, lr_groups: dict[str, float] | None = None,
                 sampler_factory: Callable[[Any], torch.utils.data.Sampler] | None = None,
                 keep_checkpoints: int | None = None, **kwargs: Any):
        self.lr_groups = dict(lr_groups or {})
        #: how many complete periodic checkpoints to keep (rotation is ours: only complete ones count)
        self.keep_checkpoints = keep_checkpoints
        self.sampler_factory = sampler_factory
        self._term_sums: dict[str, float] = defaultdict(float)
        self._term_counts: dict[str, int] = defaultdict(int)
        self._slots = [0, 0]  # real tokens, computed token slots (for the padding fraction)
        self.data_report = DataReport.empty()  # this process's batches (see data_report_dict for all of them)
        super().__init__(*args, **kwargs)

    # -- optimisation ------------------------------------------------------------------------
    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer (``args.optim``, its decay rule) over vlmkit's learning-rate groups: a
        parameter takes the lr of the first ``lr_groups`` selector that picks it, else the stage's lr."""
        if self.optimizer is not None:
            return self.optimizer
        model = model or self.model
        decay = set(self.get_decay_parameter_names(model))
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        lr_of = {n: self.args.learning_rate for n, _ in named}
        assigned: set[str] = set()
        for selector, lr in self.lr_groups.items():
            chosen = select_parameters(model, [selector]) - assigned
            lr_of.update({n: float(lr) for n in chosen if n in lr_of})
            assigned |= chosen
        groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
        for n, p in named:  # insertion order: the stage's own lr first, as the parameters come
            groups.setdefault((lr_of[n], n in decay), []).append(p)
        param_groups = [{"params": ps, "lr": lr, "weight_decay": self.args.weight_decay if decays else 0.0}
                        for (lr, decays), ps in groups.items()]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
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
        report = inputs.pop(REPORT_KEY, None)
        if report is not None and model.training:
            self.data_report.add(report)
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

    # -- data report -------------------------------------------------------------------------
    def data_report_dict(self) -> dict[str, Any]:
        """The report over every process (all must call this: it gathers)."""
        report = self.data_report
        if self.accelerator.num_processes > 1:
            import torch.distributed as dist

            parts: list[Any] = [None] * self.accelerator.num_processes
            dist.all_gather_object(parts, report)
            report = DataReport.merged(parts)
        return report.as_dict()

    def train(self, resume_from_checkpoint: str | None = None, **kwargs: Any) -> Any:
        if resume_from_checkpoint and self.accelerator.is_main_process:  # the counts so far, once
            f = Path(resume_from_checkpoint) / DATA_REPORT_FILE
            if f.is_file():
                self.data_report = DataReport.from_dict(json.loads(f.read_text()))
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

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

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """The Trainer's save, then (once every process has written its part) the completeness manifest,
        then rotation (see resume.py)."""
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        super()._save_checkpoint(model, trial)
        report = self.data_report_dict()  # every process takes part
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            run_dir = self._get_output_dir(trial=trial)
            folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            Path(folder, DATA_REPORT_FILE).write_text(json.dumps(report, indent=1))
            write_manifest(folder, self.state.global_step)
            rotate(run_dir, self.keep_checkpoints)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Resume's weights: checksum verified, every tensor present, nothing unknown, all finite."""
        load_checkpoint_weights(self.accelerator.unwrap_model(model or self.model), resume_from_checkpoint)
