"""Training end to end through transformers' Trainer: learning, exact resume, stages, bad samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vlmkit.errors import DataError
from vlmkit.model.checkpoint import load_checkpoint, load_weights
from vlmkit.plugins.hooks import get_plugin_manager, hookimpl
from vlmkit.training.recipe import parse_recipe
from vlmkit.training.runner import run_recipe

TINY_MODEL = {
    "encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}],
    "connector": "mlp2x_gelu",
    "llm": {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128}},
    "max_length": 128,
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from vlmkit_data.synthetic import generate_shapes

    return generate_shapes(tmp_path_factory.mktemp("shapes"), n_train=160, n_test=16, seed=1, image_size=32)


def recipe(out: Path, data: dict, stages: list[dict] | None = None, **stage_kw) -> dict:
    stage = {"name": "s1", "data": data, "trainable": ["encoders", "connector", "llm"], "lr": 3e-3, "max_steps": 6,
             "batch_size": 8, "logging_steps": 1, "save_steps": 3, "warmup_ratio": 0.0, "schedule": "linear"}
    stage.update(stage_kw)
    return {"model": TINY_MODEL, "output_dir": str(out), "seed": 3, "stages": stages or [stage]}


def data(shapes, **kw) -> dict:
    return {"dataset": "llava-json", "args": {"path": shapes["train"], "image_root": shapes["root"]},
            "template": "vicuna_v1", **kw}


def test_loss_goes_down_and_outputs_are_written(shapes, tmp_path):
    final = run_recipe(parse_recipe(recipe(tmp_path / "run", data(shapes), max_steps=40, save_steps=100)))
    history = json.loads((final / "log_history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert all("loss/lm" in h for h in history if "loss" in h)  # each term logged on its own
    assert (final / "loss_curve.png").stat().st_size > 1000
    model = load_checkpoint(final)  # the final folder loads like `vlmkit build --out`
    assert model.visual_tokens_per_image() == 4


class StopAfter:
    """Simulates a crash right after the checkpoint at `step` has been written."""

    def __init__(self, step: int):
        from transformers import TrainerCallback

        class _CB(TrainerCallback):
            def on_save(self, args, state, control, **kw):
                if state.global_step == step:
                    raise KeyboardInterrupt("simulated crash")

        self.cb = _CB()

    @hookimpl
    def vlmkit_training_callbacks(self, recipe, stage):
        return [self.cb]


def test_resume_is_bitwise_equal_to_an_uninterrupted_run(shapes, tmp_path):
    full = run_recipe(parse_recipe(recipe(tmp_path / "full", data(shapes, sampler="modality-length"))))
    pm = get_plugin_manager()
    crash = StopAfter(3)
    pm.register(crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_recipe(parse_recipe(recipe(tmp_path / "resumed", data(shapes, sampler="modality-length"))))
    finally:
        pm.unregister(crash)
    assert (tmp_path / "resumed" / "01-s1" / "checkpoint-3").is_dir()
    assert not (tmp_path / "resumed" / "01-s1" / "final").exists()
    resumed = run_recipe(parse_recipe(recipe(tmp_path / "resumed", data(shapes, sampler="modality-length"))), resume=True)
    a, _ = load_weights(full / "model.safetensors")
    b, _ = load_weights(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    diffs = {k: (a[k] - b[k]).abs().max().item() for k in a}
    assert max(diffs.values()) == 0.0, {k: v for k, v in diffs.items() if v}


def test_second_stage_starts_from_first_and_respects_trainable(shapes, tmp_path):
    stages = [
        {"name": "align", "data": data(shapes, template="plain"), "trainable": ["connector"], "lr": 1e-2,
         "max_steps": 3, "batch_size": 8, "save_steps": 100},
        {"name": "tune", "data": data(shapes), "trainable": ["llm"], "lr": 1e-3, "max_steps": 3, "batch_size": 8,
         "save_steps": 100, "lr_groups": {"llm:layers>=0": 5e-4}},
    ]
    rec = parse_recipe(recipe(tmp_path / "run", {}, stages=stages))
    final = run_recipe(rec)
    s1, _ = load_weights(tmp_path / "run" / "01-align" / "final" / "model.safetensors")
    s2, _ = load_weights(final / "model.safetensors")
    conn = [k for k in s1 if k.startswith("connectors.")]
    llm = [k for k in s1 if k.startswith("llm.")]
    assert conn and all(torch.equal(s1[k], s2[k]) for k in conn)  # stage 2 froze the connector it inherited
    assert any(not torch.equal(s1[k], s2[k]) for k in llm)  # and trained the llm
    enc = [k for k in s1 if k.startswith("encoders.")]
    from vlmkit.model.assembly import build_model
    from vlmkit.model.config import ModelConfig

    torch.manual_seed(3)
    fresh = build_model(ModelConfig.from_dict(TINY_MODEL)).state_dict()
    assert all(torch.equal(fresh[k], s2[k]) for k in enc)  # never trainable: untouched from init


def _write_bad_data(shapes, tmp_path, bad_line: str) -> Path:
    lines = Path(shapes["train"]).read_text().splitlines()[:16]
    lines[5] = bad_line
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize("bad,kind", [
    ('{"id": "x", "image": "images/train/nope.png", "conversations": '
     '[{"from": "human", "value": "<image>\\nq"}, {"from": "gpt", "value": "a"}]}', "missing_image"),
    ('{"id": "x", "image": "corrupt.png", "conversations": '
     '[{"from": "human", "value": "<image>\\nq"}, {"from": "gpt", "value": "a"}]}', "corrupt_image"),
    ('{"id": "x", "conversations": [{"from": "human", "value": "a question with no answer"}]}', "all_masked"),
    ('{"id": "x", "conversations": []}', "empty_conversation"),
    ('{"id": "x", "conversations": [', "malformed_json"),
])
def test_bad_samples_error_or_counted_skip(shapes, tmp_path, bad, kind):
    (Path(shapes["root"]) / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    path = _write_bad_data(shapes, tmp_path, bad)
    d = {"dataset": "llava-json", "args": {"path": str(path), "image_root": shapes["root"]}, "template": "vicuna_v1"}
    with pytest.raises(DataError) as err:
        run_recipe(parse_recipe(recipe(tmp_path / "err", d, max_steps=2, batch_size=16)))
    assert err.value.kind == kind
    assert f"{path}:6" in str(err.value)
    d["on_bad_sample"] = "skip"
    final = run_recipe(parse_recipe(recipe(tmp_path / "skip", d, max_steps=2, batch_size=16)))
    report = json.loads((final / "skipped.json").read_text())
    assert report["skipped"] >= 1 and report["by_kind"] == {kind: report["skipped"]}
    assert report["records"][0]["line"] == 6 and report["records"][0]["file"] == str(path)
