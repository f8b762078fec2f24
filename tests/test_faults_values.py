"""Values validated before work starts: finite numbers, ceilings on sizes, and a model that cannot fit
refused before it is allocated (issue #31's "values" class)."""

from __future__ import annotations

import copy

import pytest
import torch

from vlmkit.errors import ConfigError
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ModelConfig
from vlmkit.model.memory_budget import check_fits, module_bytes
from vlmkit.training.recipe import parse_recipe

BASE = {"model": {"encoders": ["tiny-conv"], "connector": "mlp2x_gelu", "llm": "tiny-llama"},
        "stages": [{"name": "s", "data": {"dataset": "llava-json", "args": {}}}]}
TINY = {"encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}], "connector": "mlp2x_gelu",
        "llm": {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 1}}}


@pytest.mark.parametrize("field, value, message", [
    ("lr", float("inf"), r"stages\[0\]\.lr: input should be a finite number, got inf"),
    ("lr", float("nan"), r"stages\[0\]\.lr: input should be a finite number, got nan"),
    ("epochs", float("nan"), r"stages\[0\]\.epochs: input should be a finite number"),
    ("weight_decay", float("inf"), r"stages\[0\]\.weight_decay: input should be a finite number"),
    ("max_grad_norm", float("-inf"), r"stages\[0\]\.max_grad_norm: input should be a finite number"),
    ("lr_groups", {"encoder.0": float("inf")}, r"stages\[0\]\.lr_groups\.encoder\.0: input should be a finite"),
    ("warmup_ratio", float("nan"), r"stages\[0\]\.warmup_ratio: input should be a finite number"),
    ("batch_size", 10 ** 9, r"stages\[0\]\.batch_size: input should be less than or equal to 65536"),
    ("grad_accum", 10 ** 6, r"stages\[0\]\.grad_accum: input should be less than or equal to 65536"),
    ("max_length", 10 ** 12, r"stages\[0\]\.max_length: input should be less than or equal to 1048576"),
    ("pack_max_tokens", 0, r"stages\[0\]\.pack_max_tokens: input should be greater than 0"),
    ("dataloader_workers", 10 ** 4, r"stages\[0\]\.dataloader_workers: input should be less than or equal to 256"),
])
def test_stage_values_are_finite_and_bounded(field, value, message):
    doc = copy.deepcopy(BASE)
    doc["stages"][0][field] = value
    with pytest.raises(ConfigError, match=message):
        parse_recipe(doc, "r.yaml")


def test_the_same_values_within_bounds_are_accepted():
    doc = copy.deepcopy(BASE)
    doc["stages"][0].update(lr=2e-5, batch_size=65536, max_length=1 << 20, dataloader_workers=2)
    assert parse_recipe(doc).stages[0].batch_size == 65536


def test_a_model_max_length_has_a_ceiling():
    with pytest.raises(ConfigError, match=r"m\.max_length: expected an integer from 1 to 1,048,576"):
        ModelConfig.from_dict({**TINY, "max_length": 10 ** 11}, "m")


def test_a_model_larger_than_the_memory_is_refused_with_its_estimate():
    cfg = ModelConfig.from_dict(TINY)
    shell = build_model(cfg, meta=True)
    need = module_bytes(shell)
    parts = {"encoder 'tiny-conv'": shell.encoders[0], "llm 'tiny-llama'": shell.llm}
    with pytest.raises(ConfigError, match=r"needs about 0\.0 GiB for its weights alone \(llm 'tiny-llama' 0\.0 GiB, "
                                          r"encoder 'tiny-conv' .*\), and 0\.0 GiB are available: nothing was allocated"):
        check_fits(lambda: shell, lambda m: parts, available=need // 2)
    check_fits(lambda: shell, lambda m: parts, available=need * 2)  # fits: nothing to say


def test_a_mistyped_width_is_refused_before_any_allocation(monkeypatch):
    allocated = []
    real_empty = torch.empty

    def watched(*size, **kw):
        t = real_empty(*size, **kw)
        if t.device.type != "meta":
            allocated.append(t.numel())
        return t

    cfg = ModelConfig.from_dict({**TINY, "encoders": [{"name": "tiny-conv", "args": {"width": 100_000}}]})
    monkeypatch.setattr(torch, "empty", watched)
    with pytest.raises(ConfigError, match=r"needs about 22\d\.\d GiB for its weights alone \(encoder 'tiny-conv' "):
        build_model(cfg)
    assert not allocated or max(allocated) < 10 ** 6  # the 56-billion-element tensor was never asked for
    cfg = ModelConfig.from_dict({**TINY, "encoders": [{"name": "tiny-conv", "args": {"width": 10 ** 9}}]})
    with pytest.raises(ConfigError, match=r"a tensor too large to exist .*overflowed"):
        build_model(cfg)


def test_a_component_that_cannot_build_on_meta_still_builds(caplog):
    import logging

    def no_meta():
        raise NotImplementedError("this plugin has no meta build")

    with caplog.at_level(logging.DEBUG, logger="vlmkit.model.memory_budget"):
        check_fits(no_meta, lambda m: {}, available=1)
    assert "no memory estimate (meta build failed: this plugin has no meta build)" in caplog.text


@pytest.mark.parametrize("args, flag", [(["eval", "--model", "m", "--data", "d", "--batch-size", "0"], "--batch-size"),
                                        (["generate", "--model", "m", "--prompt", "x", "--max-new-tokens", "0"],
                                         "--max-new-tokens")])
def test_cli_sizes_are_bounded(args, flag):
    from typer.testing import CliRunner

    from vlmkit_cli.main import app

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and f"Invalid value for '{flag}'" in res.output
