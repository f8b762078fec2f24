"""Ross objective: architecture and parameter counts (spec §3.4, §6.1), schedule (§3.5), target geometry
(§3.2, §3.7), per-token conditioning, loss bookkeeping, and that it learns on a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from vlmkit.data.processing import MultimodalProcessor, collate
from vlmkit.data.templates import Turn
from vlmkit.errors import ConfigError, Incompatible, IncompatibleComponentsError
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ModelConfig
from vlmkit.model.contracts import CLIP_MEAN, CLIP_STD, BuildOptions, ImageSpan, ImageView, ObjectiveContext, StreamSpec
from vlmkit.plugins.registry import registry
from vlmkit_objectives.latents import group_latents, ungroup_latents, vae_pixels
from vlmkit_objectives.ross import RossObjective, gather_image_hidden

SIGLIP_VIEW = ImageView(size=384, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
COLOURS = {"red": (220, 30, 30), "green": (30, 190, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
CORNERS = {"top left": (0, 0), "top right": (1, 0), "bottom left": (0, 1), "bottom right": (1, 1)}


pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py


def meta_objective(d_llm: int, grid=(24, 24), view=ImageView(size=336), **args) -> RossObjective:
    ctx = ObjectiveContext(d_llm=d_llm, visual=StreamSpec("enc", d_llm, grid[0] * grid[1], grid, view))
    with torch.device("meta"):
        return RossObjective(ctx, **args, build=BuildOptions(pretrained=False, meta=True))


def tiny_objective(grid=(4, 4), view=ImageView(size=56), d_llm=32, **args) -> RossObjective:
    ctx = ObjectiveContext(d_llm=d_llm, visual=StreamSpec("enc", d_llm, grid[0] * grid[1], grid, view))
    args = {"vae_config": "tiny", "width": 32, "depth": 1, "heads": 2, **args}
    return RossObjective(ctx, **args)


def ross_tiny_model(**ross_args):
    preset = registry.load("preset", "ross-tiny")
    cfg = ModelConfig.from_dict(preset)
    cfg.objectives[1].args.update(ross_args)
    torch.manual_seed(0)
    return build_model(cfg)


def square(colour: str, corner: str, size: int = 64) -> Image.Image:
    img = Image.new("RGB", (size, size), (128, 128, 128))
    cx, cy = CORNERS[corner]
    half = size // 2
    ImageDraw.Draw(img).rectangle([cx * half + 4, cy * half + 4, cx * half + half - 5, cy * half + half - 5],
                                  fill=COLOURS[colour])
    return img


def image_features(model, n: int):
    proc = MultimodalProcessor.for_model(model)
    names = [(c, k) for c in COLOURS for k in CORNERS]
    return [proc([Turn("user", "<image>\nWhat is shown?"), Turn("assistant", f"a {c} square at the {k}")],
                 [square(c, k)]) for c, k in names[:n]]


def text_features(model):
    proc = MultimodalProcessor.for_model(model)
    return proc([Turn("user", "Say hello"), Turn("assistant", "hello there")])


def batch_of(model, features):
    return collate(features, model.tokenizer.pad_token_id, views=list(model.views))


# -- architecture -------------------------------------------------------------------------------

@pytest.mark.parametrize("d_llm,expected", [(3584, 63_884_352), (4096, 64_408_640), (5120, 65_457_216)])
def test_trainable_parameters_match_spec(d_llm, expected):
    obj = meta_objective(d_llm)
    assert sum(p.numel() for p in obj.parameters() if p.requires_grad) == expected
    assert sum(p.numel() for p in obj.denoiser.parameters()) == expected  # no frozen pos_embed parameter
    assert not any(p.requires_grad for p in obj.vae.parameters())


def test_denoiser_vit3x_structure_and_flux_layout():
    obj = meta_objective(4096)
    den = obj.denoiser
    assert len(den.blocks) == 3 and den.width == 1024
    assert den.blocks[0].attn.num_heads == 16 and den.blocks[0].attn.head_dim == 64
    assert den.blocks[0].mlp.fc1.out_features == 4096
    assert den.final_layer.linear.out_features == 64
    assert den.z_embedder[1].in_features == 4096
    cfg = obj.vae.config
    assert (cfg.latent_channels, list(cfg.block_out_channels)) == (16, [128, 256, 512, 512])
    assert (cfg.scaling_factor, cfg.shift_factor, cfg.use_quant_conv, cfg.use_post_quant_conv) == (0.3611, 0.1159, False, False)
    assert sum(p.numel() for p in obj.vae.parameters()) == 83_819_683  # the FLUX.1 VAE
    assert obj.non_persistent == ("vae",) and obj.needs_hidden_states


def test_paper_preset_builds_on_meta():
    model = build_model(ModelConfig.from_dict(registry.load("preset", "ross")), meta=True)
    part = next(p for p in model.summary()["parts"] if p["part"] == "objective.ross")
    assert part["trainable"] == 64_408_640
    assert model.loss_weights["ross"] == 1.0


@pytest.mark.parametrize("encoder,grid,vae_size", [
    ({"name": "siglip"}, (27, 27), 432),
    ({"name": "convnext5", "args": {"config": "large", "stage5_width": 3072, "stage5_depth": 6, "image_size": 1536}},
     (24, 24), 384),
])
def test_paper_encoders_give_grid_aligned_targets(encoder, grid, vae_size):
    if encoder["name"] not in registry.names("encoder"):
        pytest.skip(f"encoder plugin '{encoder['name']}' is not installed")
    qwen2_width = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 64, "num_hidden_layers": 1,
                   "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 100}
    cfg = ModelConfig.from_dict({"encoders": [encoder], "connector": "mlp2x_gelu", "objectives": ["lm", "ross"],
                                 "llm": {"name": "hf", "args": {"config": qwen2_width, "tokenizer": "builtin:tiny"}}})
    obj = build_model(cfg, meta=True).objectives["ross"]
    assert obj.grid == grid
    assert sum(p.numel() for p in obj.parameters() if p.requires_grad) == 63_884_352
    pixels = torch.zeros(1, 3, obj.view.size, obj.view.size, device="meta")
    assert vae_pixels(pixels, obj.view, grid).shape[-2:] == (vae_size, vae_size)
    assert obj.targets(pixels, grid).shape == (1, 64, *grid)


def test_cosine_schedule_matches_iddpm():
    sched = tiny_objective().scheduler
    ac, betas = sched.alphas_cumprod.double(), sched.betas.double()
    assert ac[0].item() == pytest.approx(0.9999587, abs=1e-7)
    assert ac[-1].item() == pytest.approx(2.4e-9, rel=0.05)
    assert betas[0].item() == pytest.approx(4.13e-5, rel=1e-3)
    assert betas[-1].item() == pytest.approx(0.999, abs=1e-7)
    abar = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    ref = torch.tensor([min(1 - abar(i + 1) / abar(i), 0.999) for i in range(1000)], dtype=torch.float64)
    assert torch.allclose(betas, ref, atol=1e-6)
    assert sched.config.prediction_type == "epsilon"


def test_pos_embed_is_mae_sincos():
    from vlmkit_objectives.denoiser import sincos_pos_embed

    def mae(dim, n):  # MAE's numpy construction
        def one_d(d, pos):
            omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
            out = np.einsum("m,d->md", pos.reshape(-1), omega)
            return np.concatenate([np.sin(out), np.cos(out)], axis=1)
        grid = np.meshgrid(np.arange(n, dtype=np.float64), np.arange(n, dtype=np.float64))  # w goes first
        return np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)

    assert np.allclose(sincos_pos_embed(32, (5, 5)).numpy(), mae(32, 5), atol=1e-6)
    rect = sincos_pos_embed(32, (2, 3))  # non-square: column code in the first half, row code in the second
    assert rect.shape == (6, 32)
    assert torch.allclose(rect[4, :16], sincos_pos_embed(32, (3, 3))[1, :16])  # (row 1, col 1)
    assert torch.allclose(rect[4, 16:], sincos_pos_embed(32, (3, 3))[4, 16:])


def test_denoiser_output_exactly_zero_at_init():
    obj = tiny_objective()
    x = torch.randn(3, 64, 4, 4)
    cond = obj.condition(torch.randn(3, 16, 32), torch.float32)
    out = obj.denoiser(x, torch.tensor([0, 500, 999]), cond)
    assert out.shape == x.shape and torch.count_nonzero(out) == 0


# -- targets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("view,grid,vae_size", [(ImageView(size=336), (24, 24), 384), (SIGLIP_VIEW, (27, 27), 432)])
def test_targets_line_up_with_paper_grids(view, grid, vae_size):
    obj = meta_objective(64, grid=grid, view=view, width=64, heads=4, depth=1)
    pixels = torch.zeros(2, 3, view.size, view.size, device="meta")
    assert vae_pixels(pixels, view, grid).shape == (2, 3, vae_size, vae_size)
    mean, _ = obj.latent_moments(pixels, grid)
    assert mean.shape == (2, 16, vae_size // 8, vae_size // 8)
    assert obj.targets(pixels, grid).shape == (2, 64, *grid)
    hidden = torch.zeros(2, grid[0] * grid[1], 64, device="meta")
    assert obj.denoising_losses(obj.targets(pixels, grid), hidden).shape == (8,)  # K = 4 draws per image


def test_group_latents_matches_unfold_reference():
    z = torch.randn(2, 16, 6, 8)
    ref = z.unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 1, 4, 5, 2, 3).reshape(2, 64, 3, 4)  # b (c p1 p2) h w
    assert torch.equal(group_latents(z), ref)
    assert torch.equal(ungroup_latents(group_latents(z)), z)


def test_targets_equal_flux_recipe_with_latent_dist_sample():
    obj = tiny_objective(view=ImageView(size=56))
    pixels = torch.randn(2, 3, 56, 56)
    mine = obj.targets(pixels, (4, 4), generator=torch.Generator().manual_seed(7))

    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    x = (((pixels * std + mean) - 0.5) / 0.5).clamp(-1, 1)
    x = F.interpolate(x, size=(64, 64), mode="bilinear")
    with torch.no_grad():
        z = obj.vae.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(7))
    z = (z - 0.1159) * 0.3611
    ref = z.unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 1, 4, 5, 2, 3).reshape(2, 64, 4, 4)
    assert torch.allclose(mine, ref, atol=1e-5)


def test_hidden_states_gathered_at_each_images_tokens():
    hidden = torch.randn(3, 20, 8)
    spans = [ImageSpan(0, 2, 4, 4, (2, 2)), ImageSpan(2, 9, 4, 6, (2, 2)), ImageSpan(2, 15, 4, 4, (2, 2))]
    got = gather_image_hidden(hidden, spans)
    assert torch.equal(got, torch.stack([hidden[0, 2:6], hidden[2, 9:13], hidden[2, 15:19]]))
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[2, 17:] = 0  # the third image was cut by max_length
    assert RossObjective._present(spans, mask, 20) == [True, True, False]


# -- build-time checks -----------------------------------------------------------------------------

def test_non_grid_encoder_refused_at_build():
    cfg = ModelConfig.from_dict({
        "encoders": [{"name": "clip", "args": {"config": "tiny", "select": "cls_patch"}}],
        "connector": "mlp2x_gelu", "llm": "tiny-llama", "objectives": ["lm", "ross"]})
    with pytest.raises(IncompatibleComponentsError, match=r"objective 'ross'.*grid"):
        build_model(cfg, meta=True)
    with pytest.raises(Incompatible, match="visual stream"):
        RossObjective(ObjectiveContext(d_llm=32, visual=None), vae_config="tiny")


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="divisible"):
        tiny_objective(width=30, heads=4)
    with pytest.raises(ConfigError, match="denoiser_dtype"):
        tiny_objective(denoiser_dtype="half")
    with pytest.raises(ConfigError, match="vae_config"):
        tiny_objective(vae_config="sdxl")
    cfg = ModelConfig.from_dict(registry.load("preset", "ross-tiny"))
    cfg.objectives[1].args["nosie_draws"] = 2
    with pytest.raises(ConfigError, match="did you mean 'noise_draws'"):
        build_model(cfg, meta=True)


# -- in a model ---------------------------------------------------------------------------------

def test_first_loss_is_unit_and_terms_are_logged_separately():
    model = ross_tiny_model()
    model.config.objectives[1].weight = 0.5
    model.loss_weights["ross"] = 0.5
    torch.manual_seed(1)
    out = model(**batch_of(model, image_features(model, 8)))
    assert set(out.losses) == {"lm", "ross"}
    # denoiser output is 0 at init, so the loss is mean(eps^2) over 8 images x 4 draws x 64x4x4 values
    assert out.losses["ross"].item() == pytest.approx(1.0, abs=0.05)
    assert torch.allclose(out.loss, out.losses["lm"] + 0.5 * out.losses["ross"])


def test_text_only_rows_add_nothing():
    model = ross_tiny_model().eval()
    img, txt = image_features(model, 1)[0], text_features(model)
    torch.manual_seed(3)
    mixed = model(**batch_of(model, [img, txt, txt]))
    torch.manual_seed(3)
    alone = model(**batch_of(model, [img]))
    assert mixed.losses["ross"].item() == pytest.approx(alone.losses["ross"].item(), abs=1e-5)

    none = model(**batch_of(model, [txt, txt]))
    ross = none.losses["ross"]
    assert ross.item() == 0.0 and ross.requires_grad
    none.loss.backward()
    grads = [p.grad for p in model.objectives["ross"].denoiser.parameters()]
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in grads)


def test_clip_grid_and_native_non_square_grids():
    cfg = ModelConfig.from_dict({
        "encoders": [{"name": "clip", "args": {"config": "tiny"}}], "connector": "mlp2x_gelu",
        "llm": {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 1}},
        "objectives": ["lm", {"name": "ross", "args": {"vae_config": "tiny", "width": 32, "depth": 1, "heads": 2}}]})
    model = build_model(cfg)
    seen = []
    model.objectives["ross"].denoiser.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape)))
    out = model(**batch_of(model, image_features(model, 2)))
    assert torch.isfinite(out.losses["ross"]) and seen == [(8, 64, 4, 4)]  # CLIP 56/14 -> 4x4, VAE input 64 px

    cfg = ModelConfig.from_dict(registry.load("preset", "ross-tiny"))
    cfg.encoders[0].args["resize"] = "native"  # keep the aspect ratio: a 64x32 image gives a 2x4 grid
    model = build_model(cfg)
    obj = model.objectives["ross"]
    seen, vae_in = [], []
    obj.denoiser.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape)))
    obj.vae.encoder.register_forward_pre_hook(lambda m, a: vae_in.append(tuple(a[0].shape)))
    proc = MultimodalProcessor.for_model(model)
    feats = [proc([Turn("user", "<image>\nShape?"), Turn("assistant", "a square")], [img])
             for img in (square("red", "top left").resize((64, 32)), square("blue", "top left").resize((32, 64)))]
    batch = batch_of(model, feats)
    assert isinstance(batch["pixel_values"]["base"], list)  # sizes differ
    out = model(**batch)
    assert torch.isfinite(out.losses["ross"])
    assert sorted(seen) == [(4, 64, 2, 4), (4, 64, 4, 2)]
    assert sorted(vae_in) == [(1, 3, 32, 64), (1, 3, 64, 32)]


def test_loss_goes_down_on_coloured_squares():
    model = ross_tiny_model()
    batch = batch_of(model, image_features(model, 4))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    torch.manual_seed(0)
    history = []
    for _ in range(25):
        out = model(**batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        history.append(out.losses["ross"].item())
    first, last = np.mean(history[:3]), np.mean(history[-8:])
    assert first == pytest.approx(1.0, abs=0.1)
    assert last < 0.7 * first, history


def test_teacher_stays_fp32_when_the_model_is_cast_to_bf16():
    model = ross_tiny_model().to(torch.bfloat16)
    obj = model.objectives["ross"]
    assert all(t.dtype == torch.float32 for t in obj.vae.state_dict().values())
    assert next(obj.denoiser.parameters()).dtype == torch.bfloat16
    out = model(**batch_of(model, image_features(model, 2)))
    assert torch.isfinite(out.losses["ross"]) and out.losses["ross"].dtype == torch.float32


# -- the denoiser reads the image from the LLM --------------------------------------------------

def test_denoiser_prediction_depends_on_the_hidden_states_and_its_loss_reaches_the_llm():
    """After a few steps on the ross loss alone, (a) the prediction for one noisy latent changes when the
    hidden states change, most at the token whose state changed, and (b) the ross loss sends gradient into
    the LLM. At init neither holds: adaLN-Zero makes the output exactly 0, whatever the condition."""
    model = ross_tiny_model()
    obj = model.objectives["ross"]
    batch = batch_of(model, image_features(model, 4))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    torch.manual_seed(0)
    for _ in range(5):
        opt.zero_grad()
        model(**batch).losses["ross"].backward()
        opt.step()

    opt.zero_grad()
    model(**batch).losses["ross"].backward()
    llm_grads = [p.grad for p in model.llm.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in llm_grads), "no ross gradient reaches the LLM"

    torch.manual_seed(1)
    grid = obj.grid
    x_t = torch.randn(1, obj.latent_channels, *grid)
    t = torch.tensor([500])
    hidden = torch.randn(1, grid[0] * grid[1], obj.d_llm)
    with torch.no_grad():
        base = obj.denoiser(x_t, t, obj.condition(hidden, torch.float32))
        other = obj.denoiser(x_t, t, obj.condition(torch.randn_like(hidden), torch.float32))
        changed = hidden.clone()
        changed[0, 5] = torch.randn(hidden.shape[-1])  # token (1, 1) of the 4x4 grid
        local = obj.denoiser(x_t, t, obj.condition(changed, torch.float32))
    assert (other - base).abs().mean() > 1e-3 * base.abs().mean().clamp_min(1e-6)
    per_token = (local - base).abs().mean(1).flatten()  # (16,)
    assert per_token.argmax().item() == 5 and per_token[5] > 0
