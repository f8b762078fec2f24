"""Several processes (torchrun or the deepspeed launcher): who writes files, DeepSpeed on CPU, and
whole weights out of sharded ones.

Under ZeRO-3 every process holds a slice of each parameter, so a checkpoint is written from a state
dict gathered on rank 0 (``stage3_gather_16bit_weights_on_model_save``, set by the presets; the
tensors keep the training dtype, fp32 unless the stage trains in bf16/fp16). Every process takes part
in the gathering, only rank 0 writes, and all wait for it before the next stage reads the folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch

from vlmkit.model.checkpoint import save_checkpoint

log = logging.getLogger(__name__)


def rank() -> int:
    """This process's global rank from the launcher's environment (0 when not launched)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def prepare_deepspeed_on_cpu() -> None:
    """Skip DeepSpeed's shared-memory all-reduce kernel when there is no GPU.

    DeepSpeed compiles that C++ kernel (minutes, once per machine) at communication start-up and
    probes every other op by running the compiler; training never calls it (it serves inference
    all-reduce; training collectives go through torch.distributed with gloo). DeepSpeed reads its
    op-compatibility table lazily and keeps edits to it, so recording "not available" before the
    first use avoids both the probe and the build. ``VLMKIT_DEEPSPEED_SHM=1`` keeps DeepSpeed's default.
    """
    if torch.cuda.is_available() or os.environ.get("VLMKIT_DEEPSPEED_SHM") == "1":
        return
    import deepspeed.ops

    if "__compatible_ops__" not in vars(deepspeed.ops):
        vars(deepspeed.ops)["__compatible_ops__"] = {"deepspeed_shm_comm": False}


def full_state_dict(trainer: Any) -> dict[str, torch.Tensor] | None:
    """Whole tensors of the trained model on the main process (None elsewhere). A collective: every
    process must call it."""
    if trainer.is_deepspeed_enabled:
        state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    else:
        state = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    return state if trainer.args.should_save else None


def save_weights(model: Any, state: dict[str, torch.Tensor], directory: str | Path, extra: dict[str, Any] | None = None,
                 key_map: Callable[[str], str | None] = lambda k: k) -> Path:
    """``save_checkpoint`` with weights from ``state`` (gathered, possibly merged) instead of the (possibly
    sharded) model: the model's persistent names, each looked up in ``state`` through ``key_map``."""
    names = [(k, k2) for k in model.persistent_state_dict() if (k2 := key_map(k)) is not None]
    missing = [k2 for _, k2 in names if k2 not in state]
    if missing:
        raise RuntimeError(f"gathered state dict lacks {len(missing)} tensor(s), e.g. {missing[:3]}")
    return save_checkpoint(model, directory, extra=extra, state={k2: state[k2] for _, k2 in names})
