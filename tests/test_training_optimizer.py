"""The Trainer's optimizer over vlmkit's learning-rate groups (``create_optimizer``), and the Trainer
internals vlmkit overrides, checked against the pinned transformers."""

from __future__ import annotations

import inspect

import pytest
import torch
from transformers import Trainer, TrainingArguments

import vlmkit
from vlmkit.training.trainer import VlmkitTrainer


@pytest.fixture(scope="module")
def model():
    return vlmkit.create_model("tiny-conv", connector="mlp2x_gelu", llm="tiny-llama")


def _trainer(model, tmp_path, **kw):
    lr_groups = kw.pop("lr_groups", None)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, learning_rate=1e-3, **kw)
    return VlmkitTrainer(model=model, args=args, lr_groups=lr_groups)


def _groups(opt, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return [(g["lr"], g["weight_decay"], [names[id(p)] for p in g["params"]]) for g in opt.param_groups]


def test_optim_names_the_optimizer_class(model, tmp_path):
    assert type(_trainer(model, tmp_path, optim="sgd").create_optimizer()) is torch.optim.SGD
    opt = _trainer(model, tmp_path, optim="adamw_torch").create_optimizer()
    assert type(opt) is torch.optim.AdamW and not opt.defaults.get("fused")


def test_weight_decay_skips_biases_and_norms(model, tmp_path):
    trainer = _trainer(model, tmp_path, optim="adamw_torch", weight_decay=0.1)
    groups = _groups(trainer.create_optimizer(), model)
    decayed = [n for _, wd, names in groups if wd > 0 for n in names]
    kept = [n for _, wd, names in groups if wd == 0 for n in names]
    assert decayed and kept
    assert not any(n.endswith(".bias") or "norm" in n for n in decayed)
    assert any(n.endswith(".bias") for n in kept) and any("norm" in n for n in kept)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert sorted(decayed + kept) == sorted(trainable)  # every trainable parameter once


def test_lr_groups_take_the_first_selector_that_picks_a_parameter(model, tmp_path):
    trainer = _trainer(model, tmp_path, optim="adamw_torch", lr_groups={"connector": 5e-2, "llm": 2e-4})
    lr = {n: g_lr for g_lr, _, names in _groups(trainer.create_optimizer(), model) for n in names}
    assert {v for n, v in lr.items() if n.startswith("connectors.")} == {5e-2}
    assert {v for n, v in lr.items() if n.startswith("llm.")} == {2e-4}
    assert {v for n, v in lr.items() if n.startswith("encoders.")} == {1e-3}


@pytest.mark.parametrize("name", sorted(n for n in VlmkitTrainer.__dict__ if n in Trainer.__dict__ and callable(
    VlmkitTrainer.__dict__[n]) and not n.startswith("__")))
def test_overridden_trainer_methods_still_exist_with_our_parameters(name):
    """vlmkit overrides a few Trainer methods (some private); a transformers release that renames one or
    changes its parameters must fail here, not silently skip vlmkit's version."""
    ours = inspect.signature(VlmkitTrainer.__dict__[name]).parameters
    theirs = inspect.signature(Trainer.__dict__[name]).parameters
    passes_on = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in ours.values())  # **kwargs reach the Trainer
    missing = [p for p, par in theirs.items() if p not in ours and par.kind not in (
        inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL) and not (
        passes_on and par.kind is inspect.Parameter.KEYWORD_ONLY or passes_on and par.default is not par.empty)]
    assert not missing, f"Trainer.{name} takes {missing}, which VlmkitTrainer.{name} does not"


def test_every_override_is_listed():
    overrides = sorted(n for n in VlmkitTrainer.__dict__ if n in Trainer.__dict__ and not n.startswith("__"))
    assert overrides == ["_get_train_sampler", "_load_from_checkpoint", "_save", "_save_checkpoint", "compute_loss",
                         "create_optimizer", "log", "train"]
