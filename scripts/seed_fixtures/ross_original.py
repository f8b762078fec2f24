"""Make (and check) the Ross parity fixture with the ORIGINAL Ross code (Haochen-Wang409/ross @ 20ffc6b7).

Run in Ross's own environment (transformers 4.43.1, timm 0.6.13, diffusers 0.30.0; see README.md here),
never in vlmkit's. The model code is imported from ``--repo`` and run unchanged; none of it is copied.

``make`` builds a tiny ``RossQwen2ForCausalLM`` (Qwen2 LLM, SigLIP tower as the released Ross-7B, ``mlp2x_gelu``
projector) and gives
it the original ``RossDenoiser`` as ``mm_inv_projector``, as Ross's ``initialize_vision_modules`` does.
The only departure: Ross's builder fixes the denoiser width by depth (1024 for ``denoiser_vit1x``), which
would make a 10 MB fixture, so the original ``RossDenoiser`` class is constructed directly at width 32
(its own code, its own math; ``mm_inv_projector_type`` still says ``denoiser_vit1x``). Then it is saved as
Ross saves (``save_pretrained``: tower, projector and denoiser all in the checkpoint, safetensors) and
reloaded as its builder does. Recorded:

* the LLM batch (one image, two images, text only) with the original's fp32 logits and greedy tokens;
* the denoiser: for fixed noisy latents ``x_t``, timesteps and LLM hidden states, the original's
  ``ln_pre`` + ``net(x_t, t, context)`` output (the ε prediction that the Ross loss compares).

``check EXPORT`` loads an export of vlmkit's with the original code and compares its logits and its
denoiser output with the recorded ones. Stubs: the SigLIP hub id is redirected to the local tiny tower
(as in llava_original.py); torchvision, which timm 0.6 imports for its data pipeline only, is an inert
stand-in (no CPU build of it exists for this torch). ``diffusers`` is real (the pixel decoder is imported,
not built).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from llava_original import (  # noqa: E402 - the shared batch helpers of the LLaVA fixtures
    TOL,
    _commit,
    batch,
    check_against,
    copy_release_tokenizer,
    fresh_folder,
    generated_and_lengths,
    greedy,
    save_in_shards,
    spliced_logits,
    tokenizer_ids,
)

HUB_TOWER = "google/siglip-so400m-patch14-384"  # Ross-7B's tower

DENOISER_WIDTH, DENOISER_DEPTH = 32, 1
#: FLUX.1-dev's vae/config.json at a tiny width: 4 blocks (8x down), 16 latent channels, no quant convs, FLUX's
#: scale and shift; 32 channels, so that FLUX's 32 norm groups still divide them
TINY_FLUX_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                     up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 32, 32], layers_per_block=1,
                     act_fn="silu", latent_channels=16, norm_num_groups=32, sample_size=64, scaling_factor=0.3611,
                     shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False, force_upcast=True,
                     mid_block_add_attention=True)
#: the released shards: ross-qwen2-7b is ~7.6 B bf16 parameters plus the fp32 VAE, in save_pretrained's 5 GB
#: shards -> four files and an index
RELEASE_SHARDS = 4


def _stub_torchvision() -> None:
    """timm 0.6 imports torchvision for its data pipeline, which the denoiser's PatchEmbed, Attention and
    Mlp never touch; a CPU torchvision for this torch is not on PyPI, so it gets an inert stand-in."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        from inert_modules import install

        install(("torchvision",))


def make_vae(path: Path, seed: int) -> None:
    """The teacher's folder as FLUX.1-dev/vae is laid out (diffusers' save: config.json + safetensors)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed + 7)
    vae = AutoencoderKL(**TINY_FLUX_VAE)
    with torch.no_grad():  # no two norms alike
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    vae.save_pretrained(path, safe_serialization=True)


def import_original(repo: Path, tower: Path):
    sys.path.insert(0, str(repo))
    _stub_torchvision()
    import transformers

    for cls in (transformers.SiglipVisionModel, transformers.SiglipImageProcessor, transformers.SiglipVisionConfig):
        original = cls.from_pretrained.__func__

        def redirected(klass, name, *args, _original=original, **kwargs):
            return _original(klass, str(tower) if name == HUB_TOWER else name, *args, **kwargs)

        cls.from_pretrained = classmethod(redirected)
    from ross.model.language_model.ross_qwen import RossConfig, RossQwen2ForCausalLM
    from ross.model.multimodal_denoiser.denoiser_dit import RossDenoiser

    return RossConfig, RossQwen2ForCausalLM, RossDenoiser


def build_pixel_decoder(repo_config):
    """Ross's own builder of its frozen teacher (``FluxDecoder``: AutoencoderKL.from_pretrained(mm_pixel_decoder))."""
    from ross.model.pixel_decoder.builder import build_pixel_decoder as build

    return build(repo_config)


def make_tower(path: Path, seed: int) -> None:
    """A tiny SigLIP (28 px, patch 7: 16 tokens), saved as transformers 4.43 saves one (with its head)."""
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                             image_size=28, patch_size=7)
    torch.manual_seed(seed)
    tower = SiglipVisionModel(cfg)
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tower.save_pretrained(path, safe_serialization=True)
    SiglipImageProcessor(size={"height": 28, "width": 28}).save_pretrained(path)


def denoiser_inputs(hidden: int, channels: int, n_tokens: int):
    g = torch.Generator().manual_seed(4321)
    side = int(math.sqrt(n_tokens))
    return {"x_t": torch.randn(2, channels, side, side, generator=g),
            "timesteps": torch.tensor([17, 803]),
            "hidden": torch.randn(2, n_tokens, hidden, generator=g) * 3}


def denoiser_output(denoiser, inputs) -> torch.Tensor:
    """What Ross's compute_vm_loss hands its DiT: ln_pre of the hidden states, as a (B, D, h, w) map."""
    from einops import rearrange

    hidden = inputs["hidden"]
    side = int(math.sqrt(hidden.shape[1]))
    with torch.no_grad():
        z = denoiser.ln_pre(hidden)
        z = rearrange(z, "b (h w) c -> b c h w", h=side, w=side)
        return denoiser.net(inputs["x_t"], inputs["timesteps"], z).float().contiguous()


def load_original(model_cls, denoiser_cls, folder: Path):
    """Ross's builder: from_pretrained (the tower is built at init and then overwritten by the checkpoint);
    the denoiser is not built for inference, so it is rebuilt here and loaded from the same file."""
    from safetensors.torch import load_file

    model = model_cls.from_pretrained(str(folder), torch_dtype=torch.float32).eval()
    cfg = model.config
    den = denoiser_cls(x_channel=cfg.mm_inv_hidden_size, z_channel=cfg.hidden_size, embed_dim=DENOISER_WIDTH,
                       depth=DENOISER_DEPTH, learn_sigma=False, timesteps="1000", n_patches=cfg.image_embed_len)
    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update({k.removeprefix("model.mm_inv_projector."): v for k, v in load_file(str(f)).items()
                      if k.startswith("model.mm_inv_projector.")})
    den.load_state_dict(state, strict=True)
    return model, den.eval()


def cmd_make(args) -> None:
    from safetensors.torch import save_file

    out = fresh_folder(args.out)
    tower_dir, model_dir = out / "siglip-tower", out / "model"
    make_tower(tower_dir, seed=args.seed)
    make_vae(out / "pretrained_vae", seed=args.seed)
    config_cls, model_cls, denoiser_cls = import_original(args.repo, tower_dir)
    os.chdir(out)  # mm_pixel_decoder "./pretrained_vae" is relative to where Ross runs
    vocab, pad_id, bos_id, eos_id, vocab_size = tokenizer_ids(args.tokenizer)
    n_tokens = 16
    cfg = config_cls(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
        rope_theta=1000000.0, pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id,
        tie_word_embeddings=False, use_sliding_window=False,
        mm_vision_tower=HUB_TOWER, mm_hidden_size=16, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        mm_projector_type="mlp2x_gelu", mm_patch_merge_type="flat", mm_use_im_start_end=False,
        mm_use_im_patch_token=False, image_aspect_ratio="pad", tokenizer_padding_side="right",
        tokenizer_model_max_length=256, use_mm_proj=True, tune_mm_mlp_adapter=False, freeze_mm_mlp_adapter=False,
        # what Ross's initialize_vision_modules records for the reconstruction branch
        ross_enable=True, mm_pixel_decoder="./pretrained_vae", mm_inv_hidden_size=64, use_mm_inv_proj=True,
        mm_inv_projector_type=f"denoiser_vit{DENOISER_DEPTH}x", image_embed_len=n_tokens, decode_image_size=64,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    model = model_cls(cfg)  # Ross builds (and loads) the tower at init
    model.get_model().pixel_decoder = build_pixel_decoder(cfg)  # as initialize_vision_modules does
    model.get_model().mm_inv_projector = denoiser_cls(
        x_channel=64, z_channel=32, embed_dim=DENOISER_WIDTH, depth=DENOISER_DEPTH, learn_sigma=False,
        timesteps="1000", n_patches=n_tokens)
    with torch.no_grad():  # also the zero-initialised adaLN and output layers, so that a swap shows
        for name, p in model.named_parameters():
            if ".vision_tower." not in name and ".pixel_decoder." not in name and p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    # ZeRO-3's save of Ross's trainer writes the whole model: tower, projector, denoiser AND the frozen VAE
    # (model.pixel_decoder.pixel_decoder.*; Haochen-Wang409/ross#2, #12), in the release's four shards
    save_in_shards(model, model_dir, RELEASE_SHARDS, safe=True)
    copy_release_tokenizer(args.tokenizer, model_dir)

    loaded, den = load_original(model_cls, denoiser_cls, model_dir)
    rows, ids, mask, pixels = batch(vocab, pad_id, 28)
    logits = spliced_logits(loaded, ids, mask, pixels)
    assert torch.equal(logits, spliced_logits(model, ids, mask, pixels)), "reloading changed the model"
    tokens = greedy(loaded, rows, pixels, steps=6, eos=eos_id, start_token=False)
    assert any(k.startswith("model.pixel_decoder.") for k in json.loads(
        (model_dir / "model.safetensors.index.json").read_text())["weight_map"]), "the VAE is not in the shards"
    gen, lengths = generated_and_lengths(tokens, rows, n_tokens)
    inputs = denoiser_inputs(32, 64, n_tokens)
    eps = denoiser_output(den, inputs)
    assert torch.equal(eps, denoiser_output(model.get_model().mm_inv_projector, inputs))
    save_file({"input_ids": ids, "attention_mask": mask, "pixel_values": pixels, "logits": logits,
               "spliced_lengths": lengths, "generated": gen, "denoiser_x_t": inputs["x_t"],
               "denoiser_timesteps": inputs["timesteps"], "denoiser_hidden": inputs["hidden"],
               "denoiser_eps": eps}, str(out / "reference.safetensors"))
    import diffusers
    import transformers

    (out / "reference.json").write_text(json.dumps({
        "made_by": "scripts/seed_fixtures/ross_original.py make", "original": "Haochen-Wang409/ross",
        "commit": _commit(args.repo), "transformers": transformers.__version__, "diffusers": diffusers.__version__,
        "torch": torch.__version__, "variant": "ross", "tower": "siglip-tower", "image_tokens": n_tokens,
        "denoiser": {"width": DENOISER_WIDTH, "depth": DENOISER_DEPTH,
                     "note": "RossDenoiser built directly at width 32; the builder's rule would give 1024"},
        "pixel_decoder": {"folder": "pretrained_vae", "config": TINY_FLUX_VAE,
                          "note": "FLUX.1-dev's VAE layout at width 32; built by Ross's build_pixel_decoder and saved "
                                  "inside the shards, as the release is"},
        "stubs": [f"SigLIP from_pretrained('{HUB_TOWER}') -> siglip-tower",
                  "torchvision (imported by timm's data pipeline) -> an inert stand-in"], "generated_pad": -1,
    }, indent=2) + "\n")
    print(f"wrote {out}: logits {tuple(logits.shape)}, eps {tuple(eps.shape)}, generated {gen.tolist()}")


def cmd_check(args) -> None:
    """Load an export with Ross's own load_pretrained_model (slow tokenizer, RossQwen2ForCausalLM, tower) and
    compare logits, greedy tokens and the denoiser's output with the fixture's."""
    from llava_original import load_with_builder
    from safetensors.torch import load_file

    ref = load_file(str(args.fixture / "reference.safetensors"))
    _, model_cls, denoiser_cls = import_original(args.repo, args.fixture / "siglip-tower")
    export = args.export.resolve()
    tokenizer, model = load_with_builder("ross", export, model_name="ross-qwen2-export")
    _, den = load_original(model_cls, denoiser_cls, export)
    report = check_against(model, ref, start_token=False)
    inputs = {"x_t": ref["denoiser_x_t"], "timesteps": ref["denoiser_timesteps"], "hidden": ref["denoiser_hidden"]}
    eps_diff = (denoiser_output(den, inputs) - ref["denoiser_eps"]).abs().max().item()
    report.update(export=str(export), max_abs_eps_diff=eps_diff, tokenizer=type(tokenizer).__name__,
                  tokenizer_size=len(tokenizer), ok=report["ok"] and eps_diff <= TOL)
    print(json.dumps(report))
    raise SystemExit(0 if report["ok"] else 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--repo", type=Path, required=True)
    m.add_argument("--tokenizer", type=Path, required=True)
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("check")
    c.add_argument("--repo", type=Path, required=True)
    c.add_argument("--fixture", type=Path, required=True)
    c.add_argument("export", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    {"make": cmd_make, "check": cmd_check}[args.cmd](args)


if __name__ == "__main__":
    main()
