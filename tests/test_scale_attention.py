"""Attention implementation: sdpa by default, flash-attention only when it can run, and the choice
reaches the transformers model (and survives a checkpoint)."""

from __future__ import annotations

import logging

import pytest
import torch

import vlmkit.model.llm as llm_module
from vlmkit.model.assembly import build_model
from vlmkit.model.checkpoint import load_checkpoint, save_checkpoint
from vlmkit.model.config import ModelConfig
from vlmkit.model.llm import resolve_attn_implementation


def model_config(attn: str | None) -> ModelConfig:
    args = {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128}
    if attn is not None:
        args["attn_implementation"] = attn
    return ModelConfig.from_dict({"encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}],
                                  "connector": "mlp2x_gelu", "llm": {"name": "tiny-llama", "args": args}})


def test_flash_attention_falls_back_to_sdpa_without_flash_attn(monkeypatch, caplog):
    monkeypatch.setattr(llm_module.importlib.util, "find_spec", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="vlmkit.model.llm"):
        assert resolve_attn_implementation("flash_attention_2") == "sdpa"
    assert "flash-attn is not installed" in caplog.text
    assert resolve_attn_implementation("auto") == "sdpa"
    assert resolve_attn_implementation("eager") == "eager"


def test_flash_attention_is_chosen_when_installed_with_a_gpu(monkeypatch):
    monkeypatch.setattr(llm_module.importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_attn_implementation("flash_attention_2") == "flash_attention_2"
    assert resolve_attn_implementation("auto") == "flash_attention_2"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # flash-attn without a GPU cannot run
    assert resolve_attn_implementation("flash_attention_2") == "sdpa"


@pytest.mark.parametrize("requested,used", [(None, "sdpa"), ("eager", "eager"), ("sdpa", "sdpa")])
def test_the_choice_reaches_the_transformers_config_and_the_checkpoint(requested, used, tmp_path):
    torch.manual_seed(0)
    model = build_model(model_config(requested))
    assert model.llm.model.config._attn_implementation == used
    assert model.llm.attn_implementation == used
    save_checkpoint(model, tmp_path / "ckpt")
    assert load_checkpoint(tmp_path / "ckpt").llm.model.config._attn_implementation == used


def test_flash_request_on_this_machine_builds_a_working_sdpa_model(monkeypatch):
    monkeypatch.setattr(llm_module.importlib.util, "find_spec", lambda name: None)
    torch.manual_seed(0)
    flash = build_model(model_config("flash_attention_2")).eval()
    torch.manual_seed(0)
    eager = build_model(model_config("eager")).eval()
    assert flash.llm.attn_implementation == "sdpa"
    ids = torch.randint(3, 50, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(flash(ids).logits, eager(ids).logits, rtol=1e-5, atol=1e-5)
