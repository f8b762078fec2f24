"""Ross objective: checkpoints without the VAE teacher, loading the VAE by path, the latent cache, and
DDPM reconstruction."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw
from safetensors import safe_open
from torch import nn

from vlmkit.data.processing import MultimodalProcessor, collate
from vlmkit.data.samples import Sample
from vlmkit.data.templates import Turn
from vlmkit.errors import ConfigError
from vlmkit.model.assembly import build_model
from vlmkit.model.checkpoint import load_checkpoint, save_checkpoint
from vlmkit.model.config import ModelConfig
from vlmkit.plugins.registry import registry
from vlmkit_objectives.latent_cache import LatentCache, build_latent_cache
from vlmkit_objectives.latents import group_latents
from vlmkit_objectives.reconstruct import reconstruct, to_pil
from vlmkit_objectives.vae import TINY_VAE

COLOURS = [(220, 30, 30), (30, 190, 60), (40, 60, 220), (230, 210, 40)]


pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py


def ross_tiny_model(**ross_args):
    cfg = ModelConfig.from_dict(registry.load("preset", "ross-tiny"))
    cfg.objectives[1].args.update(ross_args)
    torch.manual_seed(0)
    return build_model(cfg)


def square(i: int, size: int = 64) -> Image.Image:
    img = Image.new("RGB", (size, size), (128, 128, 128))
    x, y = (i % 2) * 32, (i // 2 % 2) * 32
    ImageDraw.Draw(img).rectangle([x + 4, y + 4, x + 27, y + 27], fill=COLOURS[i % 4])
    return img


def samples(n: int) -> list[Sample]:
    return [Sample(id=f"s{i}", turns=[Turn("user", "<image>\nWhat is it?"), Turn("assistant", f"square {i}")],
                   images=[square(i)]) for i in range(n)]


def batch_for(model, items: list[Sample]):
    proc = MultimodalProcessor.for_model(model)
    return collate([proc(s.turns, s.images) for s in items], model.tokenizer.pad_token_id, views=list(model.views))


def ross_loss(model, batch, seed=5, **extra):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(**batch, **extra).losses["ross"].item()


# -- checkpoints ----------------------------------------------------------------------------------

def test_checkpoint_has_no_vae_and_restores_the_denoiser(tmp_path):
    model = ross_tiny_model().eval()
    den = model.objectives["ross"].denoiser
    with torch.no_grad():  # move away from the zero init so "equal after load" means something
        for p in den.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    save_checkpoint(model, tmp_path / "ck")
    with safe_open(str(tmp_path / "ck" / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert not any(".vae." in k for k in keys)
    assert sum(k.startswith("objectives.ross.denoiser.") for k in keys) == len(list(den.parameters()))
    args = yaml.safe_load((tmp_path / "ck" / "vlmkit.yaml").read_text())["model"]["objectives"][1]["args"]
    assert args["vae_config"]["latent_channels"] == 16 and args["vae_config"]["block_out_channels"] == [8, 16, 16, 16]

    loaded = load_checkpoint(tmp_path / "ck").eval()
    for (n, a), (_, b) in zip(den.state_dict().items(), loaded.objectives["ross"].denoiser.state_dict().items()):
        assert torch.equal(a, b), n
    for a, b in zip(model.objectives["ross"].vae.parameters(), loaded.objectives["ross"].vae.parameters()):
        assert torch.equal(a, b)  # the teacher is rebuilt from its path (builtin:shapes-tiny), never saved
    batch = batch_for(model, samples(2))
    assert ross_loss(loaded, batch) == pytest.approx(ross_loss(model, batch), abs=1e-6)


def test_vae_is_read_from_its_path_also_after_a_checkpoint(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(123)
    AutoencoderKL(**TINY_VAE).save_pretrained(tmp_path / "vae")
    saved = AutoencoderKL.from_pretrained(tmp_path / "vae")
    random_teacher = ross_tiny_model().objectives["ross"].vae
    assert not torch.equal(saved.encoder.conv_in.weight, random_teacher.encoder.conv_in.weight)

    model = ross_tiny_model(vae_path=str(tmp_path / "vae"))
    assert torch.equal(model.objectives["ross"].vae.encoder.conv_in.weight, saved.encoder.conv_in.weight)
    save_checkpoint(model, tmp_path / "ck")
    args = yaml.safe_load((tmp_path / "ck" / "vlmkit.yaml").read_text())["model"]["objectives"][1]["args"]
    assert args["vae_path"] == str(tmp_path / "vae")
    loaded = load_checkpoint(tmp_path / "ck")
    for a, b in zip(loaded.objectives["ross"].vae.state_dict().values(), saved.state_dict().values()):
        assert torch.equal(a, b)

    shutil.rmtree(tmp_path / "vae")
    with pytest.raises(ConfigError, match="vae_path"):
        ross_tiny_model(vae_path=str(tmp_path / "vae"))
    with pytest.warns(UserWarning, match="not found"):
        orphan = load_checkpoint(tmp_path / "ck")  # still loads (inference needs no teacher)...
    with pytest.raises(ConfigError, match="VAE weights are missing"):
        orphan(**batch_for(orphan, samples(1)))  # ...but cannot train the ross loss


# -- latent cache -----------------------------------------------------------------------------------

def test_latent_cache_gives_the_same_loss_without_running_the_vae(tmp_path, monkeypatch):
    model = ross_tiny_model().eval()
    data = samples(4) + [Sample(id="text", turns=[Turn("user", "hi"), Turn("assistant", "hello")])]
    data.append(Sample(id="dup", turns=data[0].turns, images=[square(0)]))  # same pixels as s0: one entry
    path = build_latent_cache(model, data, tmp_path / "cache", batch_size=2, shard_size=2, progress=False)
    assert len(sorted(path.glob("*.safetensors"))) == 2
    cache = LatentCache(path)
    assert len(cache) == 4

    batch = batch_for(model, data[:4])
    reference = ross_loss(model, batch)
    cached = ross_tiny_model(latent_cache=str(path)).eval()
    calls = []
    monkeypatch.setattr(cached.objectives["ross"].vae, "encode", lambda x: calls.append(x) or 1 / 0)
    assert ross_loss(cached, batch) == pytest.approx(reference, abs=1e-5)
    assert calls == []

    monkeypatch.undo()
    other = batch_for(model, [Sample(id="new", turns=data[0].turns, images=[square(0).rotate(90)])] + data[:1])
    assert ross_loss(cached, other) == pytest.approx(ross_loss(model, other), abs=1e-5)  # a miss runs the VAE

    with pytest.raises(ConfigError, match="another VAE"):
        ross_tiny_model(latent_cache=str(path), vae_path=None, vae_config="tiny")  # a random teacher


def test_latent_cache_by_sample_id(tmp_path, monkeypatch):
    model = ross_tiny_model().eval()
    data = samples(3)
    path = build_latent_cache(model, data, tmp_path / "ids", key="sample_id", progress=False)
    assert "s2#0" in LatentCache(path)
    cached = ross_tiny_model(latent_cache=str(path)).eval()
    monkeypatch.setattr(cached.objectives["ross"].vae, "encode", lambda x: 1 / 0)
    batch = batch_for(model, data)
    ids = [s.id for s in data]
    assert ross_loss(cached, batch, sample_ids=ids) == pytest.approx(ross_loss(model, batch), abs=1e-5)


# -- reconstruction -----------------------------------------------------------------------------------

class Oracle(nn.Module):
    """Predicts the exact noise of x_t around a known x0: DDPM sampling must then land on x0."""

    def __init__(self, x0: torch.Tensor, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.x0, self.ac = x0, alphas_cumprod
        self.dummy = nn.Parameter(torch.zeros(()))
        self.conditions: list[tuple[int, ...]] = []

    def embed_condition(self, hidden):
        self.conditions.append(tuple(hidden.shape))
        return hidden

    def forward(self, x, t, cond):
        a = self.ac[t].view(-1, 1, 1, 1).to(x)
        return (x - a.sqrt() * self.x0) / (1 - a).sqrt()


def test_reconstruct_samples_by_ddpm_and_decodes_with_the_vae():
    model = ross_tiny_model().eval()
    obj = model.objectives["ross"]
    img = square(1)
    first = reconstruct(model, img, steps=4, seed=0)
    assert isinstance(first, Image.Image) and first.size == (64, 64)  # 4x4 tokens x 16 px
    assert np.array_equal(np.asarray(first), np.asarray(reconstruct(model, img, steps=4, seed=0)))
    assert not np.array_equal(np.asarray(first), np.asarray(reconstruct(model, img, steps=4, seed=1)))

    pixels = MultimodalProcessor.for_model(model).images([img])[0]["base"][0][None]
    mean, _ = obj.latent_moments(pixels, (4, 4))
    x0 = group_latents((mean - obj.latent_shift) * obj.latent_scale)
    obj.denoiser = Oracle(x0, obj.scheduler.alphas_cumprod)
    out = reconstruct(model, img, steps=20, seed=0)
    assert obj.denoiser.conditions == [(1, 16, 128)]  # the LLM's hidden states at the 16 visual tokens
    expected = to_pil(obj.decode(x0)[0])
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(expected, dtype=int)).max() <= 1
