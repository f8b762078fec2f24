"""LoRA on the LLM (and an encoder) through peft, merged into a plain checkpoint; QLoRA refused on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from vlmkit.errors import ConfigError
from vlmkit.model.assembly import build_model
from vlmkit.model.checkpoint import load_checkpoint, load_weights
from vlmkit.model.config import ModelConfig
from vlmkit.training.lora import lora_key_map, merge_lora_state_dict, parse_lora
from vlmkit.training.recipe import parse_recipe
from vlmkit.training.runner import prepare_stage_model, run_recipe

MODEL = {
    "encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}],
    "connector": "mlp2x_gelu",
    "llm": {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128}},
    "max_length": 128,
}
LORA = {"target": "llm", "r": 4, "alpha": 8, "dropout": 0.0, "modules": ["q_proj", "v_proj"]}


def stage(**kw):
    st = {"name": "s1", "data": {"dataset": "llava-json", "args": {"path": "x.jsonl"}}, "trainable": ["connector"],
          "lora": dict(LORA)}
    st.update(kw)
    return parse_recipe({"model": MODEL, "stages": [st]}).stages[0]


def fresh(seed: int = 0, model: dict = MODEL):
    torch.manual_seed(seed)
    return build_model(ModelConfig.from_dict(model))


def test_only_adapters_and_connector_train():
    model = fresh()
    done = prepare_stage_model(model, stage())
    assert len(done["lora"]) == 4  # q_proj and v_proj in 2 layers
    trainable = done["trainable"]
    assert all(".lora_A." in n or ".lora_B." in n or n.startswith("connectors.") for n in trainable)
    assert sum(".lora_" in n for n in trainable) == 8 and any(n.startswith("connectors.") for n in trainable)
    r, d = 4, 64
    assert sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n) == 4 * 2 * r * d


def test_merged_checkpoint_weights_give_the_unmerged_logits():
    model = fresh()
    prepare_stage_model(model, stage())
    with torch.no_grad():  # a trained adapter: B is zero at init, so give it values
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.5)
    model.eval()
    ids = torch.randint(3, 60, (2, 16))
    with torch.no_grad():
        unmerged = model(ids).logits
    merged_state = merge_lora_state_dict(model, model.state_dict())
    plain = fresh(seed=1).eval()  # different init: every weight must come from the merged state
    plain.load_state_dict(merged_state, strict=True)  # exactly the plain model's keys
    with torch.no_grad():
        merged = plain(ids).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert not torch.equal(merged_state["llm.model.model.layers.0.self_attn.q_proj.weight"],
                           fresh().state_dict()["llm.model.model.layers.0.self_attn.q_proj.weight"])
    assert lora_key_map(model)("llm.model.model.layers.0.self_attn.q_proj.lora_A.default.weight") is None


def test_lora_on_an_encoder():
    clip = dict(MODEL, encoders=[{"name": "clip", "args": {"config": "tiny"}}])
    model = fresh(model=clip)
    done = prepare_stage_model(model, stage(lora={"target": "encoders", "r": 2, "alpha": 2, "modules": ["q_proj"]}))
    assert done["lora"] and all(n.startswith("encoders.0.") for n in done["lora"])
    assert all(n.startswith("connectors.") or (n.startswith("encoders.0.") and ".lora_" in n) for n in done["trainable"])


def test_lora_stage_writes_a_plain_merged_checkpoint(tmp_path):
    from vlmkit_data.synthetic import generate_shapes

    shapes = generate_shapes(tmp_path / "shapes", n_train=16, n_test=4, seed=1, image_size=32)
    st = {"name": "lora", "data": {"dataset": "llava-json", "args": {"path": shapes["train"], "image_root": shapes["root"]},
                                   "template": "vicuna_v1"},
          "trainable": ["connector"], "lora": dict(LORA), "lr": 1e-2, "max_steps": 3, "batch_size": 4,
          "logging_steps": 1, "save_steps": 2, "warmup_ratio": 0.0}
    final = run_recipe(parse_recipe({"model": MODEL, "output_dir": str(tmp_path / "run"), "seed": 3, "stages": [st]}))
    weights, _ = load_weights(final / "model.safetensors")
    assert not any("lora_" in k or "base_layer" in k for k in weights)
    load_checkpoint(final)  # a plain vlmkit checkpoint: no peft needed to rebuild it
    init = fresh(seed=3).state_dict()
    changed = {k for k in weights if not torch.equal(weights[k], init[k])}
    adapted = {k for k in weights if k.endswith(("q_proj.weight", "v_proj.weight"))}
    connector = {k for k in weights if k.startswith("connectors.")}
    assert adapted and adapted <= changed  # the adapters were merged in
    assert changed <= adapted | connector  # nothing else trained: encoder, embeddings, k/o_proj, MLPs untouched
    assert connector & changed
    # the periodic checkpoint keeps the adapters unmerged, for an exact resume
    periodic, _ = load_weights(tmp_path / "run" / "01-lora" / "checkpoint-2" / "model.safetensors")
    assert any(".lora_A." in k for k in periodic)
    history = json.loads((final / "log_history.json").read_text())
    assert len([h for h in history if "loss" in h]) == 3


def test_bad_lora_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown key 'rank'"):
        parse_lora({"rank": 4}, "stages[0].lora")
    with pytest.raises(ConfigError, match="quantize"):
        parse_lora({"quantize": "3bit"}, "stages[0].lora")
    with pytest.raises(ConfigError, match="no Linear layer named qkv"):
        prepare_stage_model(fresh(), stage(lora=dict(LORA, modules=["qkv"])))
    with pytest.raises(ConfigError, match="drop that part from 'trainable'"):
        prepare_stage_model(fresh(), stage(trainable=["connector", "llm"]))
    with pytest.raises(ConfigError, match="unknown part 'vision'"):
        prepare_stage_model(fresh(), stage(lora=dict(LORA, target="vision")))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_qlora_is_refused_without_cuda_and_bitsandbytes():
    st = stage(lora=dict(LORA, quantize="4bit"))
    assert st.lora.quantize == "4bit"  # the recipe accepts it...
    with pytest.raises(ConfigError, match=r"4bit \(QLoRA\) needs a CUDA GPU"):
        prepare_stage_model(fresh(), st)  # ...and the stage refuses to start on CPU
    with pytest.raises(ConfigError, match="QLoRA .* runs without DeepSpeed"):
        stage(lora=dict(LORA, quantize="4bit"), deepspeed="zero2")
