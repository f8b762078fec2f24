"""DeepSpeed ZeRO-2/3 with two CPU processes (gloo), launched like a user would:

    torchrun --nproc_per_node 2 -m vlmkit_cli train recipe.yaml --deepspeed zero2

Each run is compared with a single-process run of the same global batch (2 processes x 2 samples vs
1 process x 4 samples, same seed and sample order). Tolerance: losses within 1e-4 (relative), final
weights within 1e-4 (absolute). Both runs are fp32 and see the same samples per step with the same
token-weighted loss; they differ only in the order of floating-point sums (the gradient all-reduce
adds two partial sums), a ~1e-7 relative effect that Adam carries along (measured: 1e-6 on the
losses, 9e-7 on the weights after 4 steps). The bugs this guards against are much larger: a wrong
loss scale across processes shows up as a factor of 2 in the logged loss, a wrong sample order or
a missed gradient reduction as weight differences of the order of the learning rate (1e-2 here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vlmkit.model.assembly import build_model
from vlmkit.model.checkpoint import load_checkpoint, load_weights
from vlmkit.model.config import ModelConfig
from vlmkit.training.recipe import parse_recipe
from vlmkit.training.runner import run_recipe

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed")

MODEL = {
    "encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}],
    "connector": "mlp2x_gelu",
    "llm": {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128}},
    "max_length": 128,
}
LORA = {"target": "llm", "r": 4, "alpha": 8, "modules": ["q_proj", "v_proj"]}
# ZeRO-3 keeps parameters below a size threshold whole on every process; at 0 every tiny parameter is
# sharded, so the checkpoint can only be right if it is gathered
ZERO3_ALL_SHARDED = {
    "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
    "zero_optimization": {"stage": 3, "overlap_comm": False, "stage3_param_persistence_threshold": 0,
                          "model_persistence_threshold": 0, "stage3_gather_16bit_weights_on_model_save": True},
    "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from vlmkit_data.synthetic import generate_shapes

    return generate_shapes(tmp_path_factory.mktemp("shapes"), n_train=32, n_test=4, seed=1, image_size=32)


def recipe(shapes, out: Path, batch_size: int, **stage_kw) -> dict:
    stage = {"name": "s1", "data": {"dataset": "llava-json", "args": {"path": shapes["train"], "image_root": shapes["root"]},
                                    "template": "vicuna_v1"},
             "trainable": ["encoders", "connector", "llm"], "lr": 1e-2, "max_steps": 4, "batch_size": batch_size,
             "logging_steps": 1, "save_steps": 100, "warmup_ratio": 0.0, "schedule": "linear", **stage_kw}
    return {"model": MODEL, "output_dir": str(out), "seed": 3, "stages": [stage]}


def train_two_processes(doc: dict, tmp_path: Path, deepspeed: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "vlmkit_cli", "train", str(path), "--deepspeed", deepspeed]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return Path(doc["output_dir"]) / "01-s1" / "final"


def losses(final: Path) -> list[float]:
    return [h["loss"] for h in json.loads((final / "log_history.json").read_text()) if "loss" in h]


def assert_same_run(final: Path, reference: Path) -> None:
    got, want = losses(final), losses(reference)
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        assert abs(g - w) <= 1e-4 * abs(w), (got, want)
    a, _ = load_weights(final / "model.safetensors")
    b, _ = load_weights(reference / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a)  # whole tensors, not shards
    diffs = {k: (a[k] - b[k]).abs().max().item() for k in a}
    # every tensor that differs, with its size and place, so a failure says which part went wrong
    # (one on the lowest versions, seen three times and not reproduced since: 0.198 after equal losses)
    off = {k: (d, tuple(a[k].shape), divmod(int((a[k] - b[k]).abs().argmax()), a[k].shape[-1]) if a[k].dim() > 1
               else int((a[k] - b[k]).abs().argmax())) for k, d in diffs.items() if d >= 1e-4}
    assert not off, sorted(off.items(), key=lambda kv: -kv[1][0])[:8]
    model = load_checkpoint(final)  # loads in a single process
    assert sum(p.numel() for p in model.parameters()) > 0


def test_zero2_two_processes_match_one_process(shapes, tmp_path):
    reference = run_recipe(parse_recipe(recipe(shapes, tmp_path / "one", batch_size=4)))
    final = train_two_processes(recipe(shapes, tmp_path / "two", batch_size=2), tmp_path, "zero2")
    assert_same_run(final, reference)


def test_zero3_sharded_lora_run_gathers_and_merges_the_checkpoint(shapes, tmp_path):
    kw = {"trainable": ["connector"], "lora": LORA}
    reference = run_recipe(parse_recipe(recipe(shapes, tmp_path / "one", batch_size=4, **kw)))
    ds_file = tmp_path / "zero3.json"
    ds_file.write_text(json.dumps(ZERO3_ALL_SHARDED))
    final = train_two_processes(recipe(shapes, tmp_path / "two", batch_size=2, **kw), tmp_path, str(ds_file))
    assert_same_run(final, reference)
    weights, _ = load_weights(final / "model.safetensors")
    assert not any("lora_" in k for k in weights)  # merged while gathering
    torch.manual_seed(3)  # the recipe's seed: the initial weights
    init = build_model(ModelConfig.from_dict(MODEL)).state_dict()
    attn = "llm.model.model.layers.0.self_attn."
    assert not torch.equal(weights[attn + "q_proj.weight"], init[attn + "q_proj.weight"])  # adapter merged in
    assert torch.equal(weights[attn + "k_proj.weight"], init[attn + "k_proj.weight"])  # frozen, not adapted


def test_a_zero3_file_that_cannot_gather_weights_is_refused(tmp_path):
    from vlmkit.errors import ConfigError
    from vlmkit.training.runner import deepspeed_config

    cfg = json.loads(json.dumps(ZERO3_ALL_SHARDED))
    del cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(cfg))
    stage = parse_recipe(recipe({"train": "x", "root": "."}, tmp_path, 2)).stages[0]
    with pytest.raises(ConfigError, match="stage3_gather_16bit_weights_on_model_save"):
        deepspeed_config(str(path), stage)
    assert deepspeed_config("zero3", stage)["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    with pytest.raises(ConfigError, match="neither zero2, zero3 nor a file"):
        deepspeed_config("zero4", stage)
