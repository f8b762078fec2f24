"""Checkpoints: safetensors + YAML, rebuilt through the registry, clear errors for bad folders."""

from __future__ import annotations

import pytest
import torch
import yaml

from vlmkit.errors import CheckpointError, MissingPluginError
from vlmkit.model.assembly import build_model
from vlmkit.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint


def _batch():
    ids = torch.tensor([[2, -200, 30, 31, 32], [2, 40, 41, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    return dict(input_ids=ids, attention_mask=mask, pixel_values={"base": torch.randn(1, 3, 32, 32)})


def test_round_trip_is_exact(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config).eval()
    save_checkpoint(model, tmp_path / "ck")
    doc = yaml.safe_load((tmp_path / "ck" / CONFIG_FILE).read_text())
    dists = {p["kind"]: p["distribution"] for p in doc["plugins"]}
    assert dists["encoder"] == "vlmkit-encoders" and dists["connector"] == "vlmkit-fusion"
    assert all(p["version"] for p in doc["plugins"])
    loaded = load_checkpoint(tmp_path / "ck").eval()
    b = _batch()
    assert torch.equal(model(**b).logits, loaded(**b).logits)
    assert loaded.tokenizer("red circle")["input_ids"] == model.tokenizer("red circle")["input_ids"]


def test_missing_plugin_names_component_and_distribution(tiny_config, tmp_path):
    save_checkpoint(build_model(tiny_config), tmp_path / "ck")
    f = tmp_path / "ck" / CONFIG_FILE
    doc = yaml.safe_load(f.read_text())
    doc["model"]["encoders"][0]["name"] = "fancy-enc"
    doc["plugins"].append({"kind": "encoder", "name": "fancy-enc", "distribution": "vlmkit-fancy", "version": "2.0"})
    f.write_text(yaml.safe_dump(doc))
    with pytest.raises(MissingPluginError, match="encoder 'fancy-enc'.*pip install vlmkit-fancy"):
        load_checkpoint(tmp_path / "ck")


def test_missing_and_corrupt_files(tiny_config, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        load_checkpoint(tmp_path / "nope")
    save_checkpoint(build_model(tiny_config), tmp_path / "ck")
    w = tmp_path / "ck" / WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: changed since it was saved"):
        load_checkpoint(tmp_path / "ck")
    w.unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing \(the checkpoint records its SHA-256\)"):
        load_checkpoint(tmp_path / "ck")
    # without the digest check, the parser still names the damage
    monkeypatch.setenv("VLMKIT_VERIFY_WEIGHTS", "0")
    with pytest.raises(CheckpointError, match="missing weights file"):
        load_checkpoint(tmp_path / "ck")
    w.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt or truncated safetensors"):
        load_checkpoint(tmp_path / "ck")


def test_weights_must_match_config(tiny_config, tmp_path):
    save_checkpoint(build_model(tiny_config), tmp_path / "ck")
    f = tmp_path / "ck" / CONFIG_FILE
    doc = yaml.safe_load(f.read_text())
    doc["model"]["connector"] = {"name": "mlp3x_gelu"}
    f.write_text(yaml.safe_dump(doc))
    with pytest.raises(CheckpointError, match="missing 2 tensor"):
        load_checkpoint(tmp_path / "ck")


def test_llm_from_local_folder(tmp_path):
    """A real HF causal LM saved to disk loads by path through the same code (as Vicuna would)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlmkit.model.config import ModelConfig
    from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2))
    hf.save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    cfg = ModelConfig.from_dict({"encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 16}}],
                                 "connector": "mlp2x_gelu", "llm": str(tmp_path / "llm")})
    model = build_model(cfg)
    assert torch.equal(model.llm.model.lm_head.weight, hf.lm_head.weight)
    assert model.llm.display_name == str(tmp_path / "llm")
