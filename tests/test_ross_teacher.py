"""Ross's embedded teacher and sampler: a VAE whose latents carry the image, training one, and a sampler
that does not diverge at the schedule's end.

Why these exist: with a random tiny VAE the posterior noise was larger than the latents' spread, so the
ross targets were mostly noise and the denoiser hardly used the LLM (docs/benchmarks/ross.md); and a
1,000-step sample of a trained model reached latents of 1e5.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlmkit.errors import ConfigError
from vlmkit.model.assembly import build_model
from vlmkit.model.checkpoint import load_checkpoint, save_checkpoint
from vlmkit.model.config import ModelConfig
from vlmkit.model.contracts import ImageView, ObjectiveContext, StreamSpec
from vlmkit.plugins.registry import registry
from vlmkit_data.synthetic import generate_shapes
from vlmkit_objectives.ross import RossObjective
from vlmkit_objectives.vae import ASSETS, BUILTIN_VAES, build_vae, resolve_vae_path
from vlmkit_objectives.vae_training import calibrate_latents, latent_statistics, save_vae, train_vae

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py


@pytest.fixture(scope="module")
def shapes_images(tmp_path_factory) -> torch.Tensor:
    """64 held-out synthetic-shapes images (test split: the teacher never saw them), (N, 3, 64, 64) in [-1, 1]."""
    root = tmp_path_factory.mktemp("shapes")
    paths = generate_shapes(root, n_train=4, n_test=64, seed=0)
    recs = [json.loads(line) for line in Path(paths["test"]).read_text().splitlines()]
    arr = np.stack([np.asarray(Image.open(root / r["image"]).convert("RGB")) for r in recs])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def test_builtin_teacher_latents_carry_held_out_images(shapes_images):
    vae, ready = build_vae("builtin:shapes-tiny", "tiny")
    assert ready and vae.config.latent_channels == 16 and list(vae.config.block_out_channels) == [8, 16, 16, 16]
    stats = latent_statistics(vae, shapes_images)
    # posterior noise is a few percent of the latents' spread (a random VAE: about equal or larger)
    assert stats["posterior_std"] < 0.1 * stats["spread"], stats
    # the decoded posterior mean explains > 85 % of the pixel variance of images it never saw
    assert stats["recon_mse"] < 0.15 * stats["mean_image_mse"], stats
    # its factors normalise the latents to about mean 0, std 1 (as FLUX's shift/scale do for FLUX)
    z = (torch.tensor(stats["sample_mean"]) - vae.config.shift_factor) * vae.config.scaling_factor
    assert abs(float(z)) < 0.1
    assert stats["sample_std"] * vae.config.scaling_factor == pytest.approx(1.0, abs=0.15)


def test_random_teacher_is_the_failure_the_builtin_one_fixes(shapes_images):
    vae, _ = build_vae(None, "tiny")
    stats = latent_statistics(vae, shapes_images)
    assert stats["posterior_std"] > stats["spread"], stats  # its targets are mostly noise


def test_the_details_teacher_carries_held_out_images_and_keeps_what_it_records_of_the_stripes(tmp_path):
    """builtin:details-tiny (the Ross claim's teacher) on synthetic-details test images it never saw, and
    its recorded stripe visibility recomputed by the script that made it."""
    import importlib.util

    from vlmkit_data.synthetic_details import SyntheticDetailsDataset

    vae, ready = build_vae("builtin:details-tiny", "tiny")
    assert ready
    ds = SyntheticDetailsDataset(str(tmp_path), split="test", n_train=1, n_test=48, image_size=128, progress=False)
    arr = np.stack([np.asarray(ds[i].images[0]) for i in range(len(ds))])
    images = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    stats = latent_statistics(vae, images)
    assert stats["posterior_std"] < 0.1 * stats["spread"], stats
    assert stats["recon_mse"] < 0.15 * stats["mean_image_mse"], stats
    record = json.loads((ASSETS / BUILTIN_VAES["details-tiny"] / "teacher.json").read_text())
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_shapes_vae.py"
    spec = importlib.util.spec_from_file_location("make_shapes_vae", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    again = module.stripe_visibility(vae)
    assert again["kept"] == pytest.approx(record["statistics"]["stripes_kept"], abs=1e-4)
    assert again["latent_separation"] == pytest.approx(record["statistics"]["stripes_latent_separation"], abs=1e-4)


def test_builtin_names_resolve_and_unknown_ones_are_refused():
    for name, folder in BUILTIN_VAES.items():
        assert Path(resolve_vae_path(f"builtin:{name}")) == ASSETS / folder
        assert (ASSETS / folder / "config.json").is_file() and (ASSETS / folder / "teacher.json").is_file()
    assert resolve_vae_path("/some/folder") == "/some/folder"
    with pytest.raises(ConfigError, match="builtin:shapes-tiny"):
        resolve_vae_path("builtin:flux")


def test_preset_checkpoint_keeps_the_builtin_name_and_reloads_the_teacher(tmp_path):
    cfg = ModelConfig.from_dict(registry.load("preset", "ross-tiny"))
    assert cfg.objectives[1].args["vae_path"] == "builtin:shapes-tiny"
    torch.manual_seed(0)
    model = build_model(cfg)
    save_checkpoint(model, tmp_path / "ck")
    text = (tmp_path / "ck" / "vlmkit.yaml").read_text()
    assert "builtin:shapes-tiny" in text and str(ASSETS) not in text  # portable: no install path recorded
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.objectives["ross"].teacher_ready
    for a, b in zip(model.objectives["ross"].vae.state_dict().values(),
                    loaded.objectives["ross"].vae.state_dict().values()):
        assert torch.equal(a, b)


def test_train_vae_learns_and_calibration_normalises(shapes_images, tmp_path):
    images = shapes_images[:32]
    vae, log = train_vae(images, "tiny", steps=40, batch_size=8, lr=3e-3, seed=0, progress=False)
    assert log[-1]["mse"] < 0.5 * log[0]["mse"], log
    assert not any(p.requires_grad for p in vae.parameters()) and not vae.training
    stats = calibrate_latents(vae, images)
    assert vae.config.shift_factor == stats["sample_mean"]
    assert vae.config.scaling_factor == pytest.approx(1 / stats["sample_std"])
    folder = save_vae(vae, tmp_path / "vae")
    again, ready = build_vae(str(folder), "tiny")
    assert ready and again.config.scaling_factor == pytest.approx(vae.config.scaling_factor)
    for a, b in zip(vae.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_train_vae_refuses_images_outside_minus_one_one():
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        train_vae(torch.rand(4, 3, 64, 64) * 255, steps=1, progress=False)
    with pytest.raises(ConfigError, match=r"\(N, 3, H, W\)"):
        train_vae(torch.zeros(4, 64, 64), steps=1, progress=False)


# -- sampling ---------------------------------------------------------------------------------------

def tiny_objective() -> RossObjective:
    view = ImageView(size=64)
    ctx = ObjectiveContext(d_llm=32, visual=StreamSpec("enc", 32, 16, (4, 4), view))
    torch.manual_seed(0)
    return RossObjective(ctx, vae_config="tiny", width=32, depth=1, heads=2)


def test_long_samplers_stay_bounded_with_the_clip_and_diverge_without():
    """A denoiser that is wrong at the schedule's end (here: the zero-init one) makes an unclipped DDPM
    sampler diverge, since alphas_cumprod[999] = 2.4e-9; the default clip keeps every step's x0 bounded."""
    obj = tiny_objective()
    hidden = torch.randn(2, 16, 32)
    g = torch.Generator().manual_seed(0)
    clipped = obj.sample(hidden, (4, 4), steps=1000, generator=g)
    assert torch.isfinite(clipped).all() and clipped.abs().max() <= 6.0 + 1e-4
    unclipped = obj.sample(hidden, (4, 4), steps=1000, generator=torch.Generator().manual_seed(0), clip=None)
    assert unclipped.abs().max() > 100
    with pytest.raises(ConfigError, match="clip"):
        obj.sample(hidden, (4, 4), steps=2, clip=0.0)


def test_a_stage_that_leaves_the_denoiser_frozen_is_warned_about(caplog):
    """The trap the Ross claim's first sweep fell into: ``trainable: [encoders, connector, llm]`` leaves the
    denoiser at its initial weights (its last layer starts at zero: the loss stays at 1.0 and sends no
    gradient back), and nothing said so."""
    import logging

    from vlmkit.training.recipe import parse_recipe
    from vlmkit.training.runner import prepare_stage_model

    def stage(trainable, weight=1.0):
        doc = {"model": {"preset": "vlmkit-objectives:ross-tiny"},
               "stages": [{"name": "s", "data": {"dataset": "llava-json", "args": {"path": "x.jsonl"}},
                           "trainable": trainable}]}
        recipe = parse_recipe(doc)
        recipe.model.objectives[1].weight = weight
        return recipe.model, recipe.stages[0]

    for trainable, weight, frozen in [(["encoders", "connector", "llm"], 1.0, ["ross"]),
                                      (["encoders", "connector", "llm", "objective.ross:denoiser"], 1.0, []),
                                      (["encoders", "connector", "llm"], 0.0, [])]:
        config, st = stage(trainable, weight)
        model = build_model(config)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vlmkit.training.runner"):
            done = prepare_stage_model(model, st)
        assert done["frozen_objectives"] == frozen, (trainable, weight)
        warned = [r.getMessage() for r in caplog.records if "none of its own parameters train" in r.getMessage()]
        assert len(warned) == len(frozen)
        if frozen:
            assert "objective 'ross'" in warned[0] and "add 'objective.ross' to the stage's trainable" in warned[0]
