"""Paper recipes (vlmkit.recipes): stage tables of components.md §1.7, §2.7, §3.6, §4.5, §5.2, and their
trainable selectors resolved on the paper-size models built on the meta device."""

from __future__ import annotations

import re

import pytest

from vlmkit.model.assembly import build_model
from vlmkit.model.selectors import select_parameters
from vlmkit.plugins.registry import registry
from vlmkit.training.recipe import load_recipe

RECIPES = ("densefusion", "vip-llava", "convllava", "mg-llava", "ross")
_MODELS: dict[str, object] = {}


def model_of(recipe):
    key = recipe.source
    if key not in _MODELS:
        _MODELS[key] = build_model(recipe.model, meta=True)
    return _MODELS[key]


def count(model, selectors) -> int:
    chosen = select_parameters(model, selectors)
    return sum(p.numel() for n, p in model.named_parameters() if n in chosen)


def table(name):
    r = load_recipe(name)
    return r, [(s.trainable, s.lr, s.data.template) for s in r.stages]


def test_stage_tables():
    r, t = table("densefusion")
    assert t == [(["connector"], 1e-3, "plain"), (["llm", "connector", "encoder.0:layers>=12"], 2e-5, "plain"),
                 (["llm", "connector"], 2e-5, "vicuna_v1")]
    assert [s.batch_size * s.grad_accum * 16 for s in r.stages] == [256, 256, 128]  # 16 GPUs
    assert [s.max_length for s in r.stages] == [2000, 2100, 2048]
    assert [s.data.resize for s in r.stages] == ["square", "square", "pad"]
    assert [s.data.dataset for s in r.stages] == ["densefusion", "densefusion", "llava-json"]

    r, t = table("vip-llava")
    assert t == [(["connector"], 1e-3, "plain"), (["llm", "connector"], 2e-5, "vicuna_v1"),
                 (["llm", "connector"], 2e-7, "vicuna_v1")]
    assert [s.batch_size * s.grad_accum * 8 for s in r.stages] == [256, 128, 128]
    assert [[c.name for c in s.data.transforms] for s in r.stages] == [[], ["vip"], ["vip"]]
    assert all(s.deepspeed == "zero2" for s in r.stages)

    r, t = table("convllava")
    assert [x[:2] for x in t] == [(["encoder.0:stage5", "connector"], 3e-4),
                                  (["llm", "connector", "encoder.0:stages>=2"], 2e-5), (["llm", "connector"], 2e-5)]
    assert [s.batch_size * s.grad_accum * 8 for s in r.stages] == [256, 256, 128]
    assert [s.deepspeed for s in r.stages] == ["zero2", "zero3", "zero3"]

    r, t = table("mg-llava")
    assert t == [(["connector", "fusion"], 1e-3, "vicuna_v1"), (["llm", "connector", "fusion"], 2e-5, "vicuna_v1")]
    assert [s.batch_size for s in r.stages] == [32, 16] and all(s.precision == "fp16" for s in r.stages)
    assert all(s.data.args.get("boxes") is True and s.data.resize == "pad" for s in r.stages)

    r, t = table("ross")
    assert t == [(["connector", "objective.ross:denoiser"], 1e-3, "plain"),
                 (["llm", "connector", "objective.ross:denoiser"], 2e-5, "vicuna_v1")]
    assert [(s.batch_size, s.grad_accum) for s in r.stages] == [(16, 2), (4, 4)]
    for name in RECIPES:
        for s in load_recipe(name).stages:
            assert (s.schedule, s.warmup_ratio, s.weight_decay, s.epochs) == ("cosine", 0.03, 0.0, 1.0)


@pytest.mark.parametrize("name", RECIPES)
def test_components_of_every_stage_are_registered(name):
    for s in load_recipe(name).stages:
        assert registry.load("dataset", s.data.dataset)
        for t in s.data.transforms:
            assert registry.load("transform", t.name)


def test_data_paths_are_overridable():
    r = load_recipe("densefusion", ["stages.0.data.args.path=/data/df.jsonl", "stages.0.data.args.image_root=/img",
                                    "model.preset=llava-1.5"])
    assert r.stages[0].data.args == {"path": "/data/df.jsonl", "image_root": "/img"}
    assert r.model.encoders[0].name == "clip"  # the low-res DenseFusion model


def test_densefusion_selectors_on_the_meta_model():
    r = load_recipe("densefusion")
    m = model_of(r)
    clip = select_parameters(m, ["encoder.0:layers>=12"])
    layers = {int(x) for n in clip for x in re.findall(r"\.layers\.(\d+)\.", n)}
    assert layers == set(range(12, 24))  # half of CLIP-L: layers 12-23
    assert count(m, ["encoder.0:layers>=12"]) == 151_154_688  # 12 x 12.6M
    assert count(m, ["encoder.s2:layers>=12"]) == 151_154_688  # the S2 wrapper forwards its CLIP's parts
    assert count(m, r.stages[0].trainable) == 29_368_320  # S2 projector 3072 -> 4096
    assert count(m, r.stages[1].trainable) == count(m, ["llm"]) + 29_368_320 + 151_154_688


def test_vip_llava_selectors_on_the_meta_model():
    r = load_recipe("vip-llava")
    m = model_of(r)
    assert count(m, r.stages[0].trainable) == 37_767_168  # LayerNorm(5120) + MLP
    assert count(m, r.stages[1].trainable) == count(m, ["llm"]) + 37_767_168


def test_convllava_selectors_on_the_meta_model():
    r = load_recipe("convllava")
    m = model_of(r)
    assert count(m, r.stages[0].trainable) == 472_934_400 + 29_368_320  # stage 5 + projector, no lm_head
    stage2 = select_parameters(m, ["encoder.0:stages>=2"])
    assert stage2 and {int(x) for n in stage2 for x in re.findall(r"\.stages\.(\d+)\.", n)} == {2, 3, 4}
    assert not select_parameters(m, r.stages[0].trainable) & select_parameters(m, ["llm"])


def test_mg_llava_selectors_on_the_meta_model():
    r = load_recipe("mg-llava")
    m = model_of(r)
    assert count(m, r.stages[0].trainable) == 20_979_712 + 6_085_121 + 28_581_888  # projector, Conv-Gate, box proj.


def test_ross_selectors_on_the_meta_model():
    r = load_recipe("ross")
    m = model_of(r)
    assert count(m, ["objective.ross:denoiser"]) == 64_408_640  # the VAE teacher stays frozen
    assert count(m, r.stages[0].trainable) == 20_979_712 + 64_408_640
