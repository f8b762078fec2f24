"""Make (and check) the LLaVA-1.6 (LLaVA-NeXT) parity fixture with the ORIGINAL code, haotian-liu/LLaVA.

Run in the seed environment (``/work/seedenv-llava``: transformers 4.37.2), never in vlmkit's. The model is
``LlavaLlamaForCausalLM`` from the LLaVA work tree on ``--repo`` with LLaVA-1.6's settings as its released
``config.json`` has them: ``image_aspect_ratio: anyres``, ``mm_patch_merge_type: spatial_unpad``,
``image_grid_pinpoints`` (LLaVA-1.6's five, scaled to the tiny 28 px tower: each is [width, height], as the
code reads them), a tuned tower (``unfreeze_mm_vision_tower``) saved inside the checkpoint, and the learned
``model.image_newline``. None of the original code is copied; its own ``process_images`` makes the pixels,
its own ``forward`` the logits and its own ``generate`` the greedy tokens.

The batch: a 2:1 image; a 1:3 image and a square one in the same row; a text-only row (the original consumes
a dummy image for it). Images of three aspect ratios pick three different grids.

    $S llava_next_original.py make --repo repos/llava --tokenizer /tmp/tok-llama --out tests/fixtures/seeds/llava-1.6
    LLAVA_NEXT_VARIANT=mistral $S llava_next_original.py make ... --out tests/fixtures/seeds/llava-1.6-mistral
    $S llava_next_original.py check --repo repos/llava --fixture tests/fixtures/seeds/llava-1.6 EXPORT

``check`` loads a vlmkit export with the original ``load_pretrained_model`` and compares logits and greedy
tokens with the fixture (exit status 1 when they differ).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llava_original import (  # noqa: E402  (the shared helpers of the seed fixtures)
    HUB_TOWER,
    IMAGE,
    TOL,
    _commit,
    anyres_main,
    copy_release_tokenizer,
    fresh_folder,
    greedy_with_sizes,
    import_original,
    load_original,
    load_with_builder,
    make_tower,
    real_rows,
    same_tokens,
    save_in_shards,
    tokenizer_ids,
)

TILE = 28
#: LLaVA-1.6's pinpoints ([[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]) at 28 px tiles
PINPOINTS = [[TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE], [3 * TILE, TILE], [TILE, 3 * TILE]]
#: (width, height): 2:1, 1:3, square, and the dummy image of the text-only row
SIZES = [(100, 50), (40, 120), (60, 60), (30, 30)]


def pil_images(seed: int = 7):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    return [Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()) for w, h in SIZES]


def rows_of(tok_ids: dict[str, int]) -> list[list[int]]:
    def w(*names):
        return [tok_ids[n] for n in names]

    bos = [tok_ids["<s>"]]
    return [
        bos + w("what", "color", "is") + [IMAGE] + w("the", "circle", "?"),
        bos + w("count") + [IMAGE] + w("and") + [IMAGE] + w("how", "many", "shapes"),
        bos + w("is", "there", "a", "red", "square", "in", "the", "picture", "?", "yes"),
    ]


def padded(rows, pad_id):
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def forward_logits(model, ids, mask, images, sizes):
    labels = ids.masked_fill(mask == 0, -100).masked_fill(ids == IMAGE, -100)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, images=images, image_sizes=sizes, labels=labels,
                    return_dict=True)
    return out.logits.float()


def cmd_make(args) -> None:
    from safetensors.torch import save_file

    out = fresh_folder(args.out)
    tower_dir, model_dir = out / "clip-tower", out / "model"
    vocab, pad_id, bos_id, eos_id, vocab_size = tokenizer_ids(args.tokenizer)
    make_tower(tower_dir, layers=3, seed=args.seed)
    config_cls, model_cls = import_original(args.repo, tower_dir, "llava")
    mistral = os.environ.get("LLAVA_NEXT_VARIANT", "vicuna") == "mistral"
    extra: dict = {}
    if mistral:  # LLaVA-1.6-Mistral: the original's LlavaMistralForCausalLM over Mistral-7B-Instruct-v0.2's shape
        from llava.model.language_model.llava_mistral import LlavaMistralConfig, LlavaMistralForCausalLM

        config_cls, model_cls = LlavaMistralConfig, LlavaMistralForCausalLM
        extra = {"sliding_window": None, "rope_theta": 1000000.0}
    from llava.mm_utils import process_images

    cfg = config_cls(**extra,
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5, pad_token_id=pad_id,
        bos_token_id=bos_id, eos_token_id=eos_id, tie_word_embeddings=False,
        mm_vision_tower=HUB_TOWER, mm_hidden_size=16, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        mm_projector_type="mlp2x_gelu", mm_patch_merge_type="spatial_unpad", image_aspect_ratio="anyres",
        image_grid_pinpoints=PINPOINTS, image_crop_resolution=224, image_split_resolution=224,
        mm_use_im_start_end=False, mm_use_im_patch_token=False, unfreeze_mm_vision_tower=True,
        mm_vision_tower_lr=2e-6, mm_projector_lr=None, mm_resampler_type=None, tokenizer_padding_side="right",
        tokenizer_model_max_length=512, use_mm_proj=True, tune_mm_mlp_adapter=False, freeze_mm_mlp_adapter=False,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    model = model_cls(cfg)  # unfreeze_mm_vision_tower: the tower is loaded here, as in the release's training
    with torch.no_grad():
        model.get_model().image_newline.copy_(torch.randn(cfg.hidden_size))  # created with torch.empty
        for p in model.parameters():  # the tower is tuned too, so it differs from clip-tower's weights
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    # LLaVA's train.py saves with trainer.save_model: transformers 4.37's save_pretrained (safetensors, 5 GB
    # shards: 3 for a 7B in fp16), the tuned tower inside
    save_in_shards(model, model_dir, 3, safe=True)
    copy_release_tokenizer(args.tokenizer, model_dir)

    loaded = load_original(model_cls, model_dir)
    processor = loaded.get_vision_tower().image_processor
    images = pil_images()
    pixels = process_images(images, processor, loaded.config)  # the original's anyres preprocessing
    pixels = list(pixels) if isinstance(pixels, torch.Tensor) else pixels
    sizes = [im.size for im in images]  # (width, height), as the original passes them
    rows = rows_of(vocab)
    ids, mask = padded(rows, pad_id)
    logits = forward_logits(loaded, ids, mask, pixels, sizes)
    assert torch.equal(logits, forward_logits(model, ids, mask, pixels, sizes)), "reloading changed the model"
    tokens = greedy_with_sizes(loaded, rows, pixels, sizes, steps=6, eos=eos_id, prompt_echoed=True)
    lengths = _spliced_lengths(loaded, ids, mask, pixels, sizes)
    width = max(len(t) for t in tokens)
    crops = max(p.shape[0] for p in pixels)
    stacked = torch.zeros(len(pixels), crops, 3, TILE, TILE)
    for i, p in enumerate(pixels):
        stacked[i, :p.shape[0]] = p
    save_file({"input_ids": ids, "attention_mask": mask, "pixel_values": stacked,
               "num_crops": torch.tensor([p.shape[0] for p in pixels]),
               "image_sizes_wh": torch.tensor(sizes), "logits": logits, "spliced_lengths": lengths,
               "generated": torch.tensor([t + [-1] * (width - len(t)) for t in tokens])},
              str(out / "reference.safetensors"))
    for i, im in enumerate(images):  # the images themselves, so vlmkit's processor is checked too
        im.save(out / f"image-{i}.png")
    import PIL
    import transformers

    (out / "reference.json").write_text(json.dumps({
        "made_by": "scripts/seed_fixtures/llava_next_original.py make", "original": "haotian-liu/LLaVA",
        "commit": _commit(args.repo), "transformers": transformers.__version__, "torch": torch.__version__,
        "pillow": PIL.__version__,
        "variant": "llava-1.6-mistral" if mistral else "llava-1.6", "tower": "clip-tower", "image_sizes_wh": SIZES,
        "pinpoints_wh": PINPOINTS,
        "stubs": [f"CLIP from_pretrained('{HUB_TOWER}') -> clip-tower"], "generated_pad": -1,
    }, indent=2) + "\n")
    print(f"wrote {out}: crops {[p.shape[0] for p in pixels]}, spliced {lengths.tolist()}, generated {tokens}")


def _spliced_lengths(model, ids, mask, pixels, sizes) -> torch.Tensor:
    """Each row's real length after the original spliced its images in."""
    with torch.no_grad():
        _, _, attn, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(ids, None, mask, None, None, pixels,
                                                                               image_sizes=sizes)
    return attn.sum(1)


def _unstack(ref):
    return [ref["pixel_values"][i, :n] for i, n in enumerate(ref["num_crops"].tolist())]


def cmd_check(args) -> None:
    from safetensors.torch import load_file

    ref = load_file(str(args.fixture / "reference.safetensors"))
    import_original(args.repo, args.fixture / "clip-tower", "llava")
    args.export = args.export.resolve()
    os.chdir(args.fixture)
    # the builder picks LlavaMistralForCausalLM by 'mistral' in the folder's name, as for llava-v1.6-mistral-7b
    name = "llava-v1.6-mistral-export" if "mistral" in args.fixture.name else "llava-export"
    tokenizer, model = load_with_builder("llava", args.export, model_name=name)
    pixels, sizes = _unstack(ref), [tuple(s) for s in ref["image_sizes_wh"].tolist()]
    logits = forward_logits(model, ref["input_ids"], ref["attention_mask"], pixels, sizes)
    report: dict = {"export": str(args.export), "tokenizer": type(tokenizer).__name__}
    if logits.shape != ref["logits"].shape:
        report.update(ok=False, why=f"logits {tuple(logits.shape)} != {tuple(ref['logits'].shape)}")
    else:
        valid = torch.arange(logits.shape[1])[None, :] < ref["spliced_lengths"][:, None]
        diff = (logits - ref["logits"])[valid].abs().max().item()
        tokens = greedy_with_sizes(model, real_rows(ref), pixels, sizes, steps=ref["generated"].shape[1],
                                   eos=int(model.config.eos_token_id), prompt_echoed=True)
        same = same_tokens(tokens, ref["generated"])
        report.update(ok=diff <= TOL and same, max_abs_logit_diff=diff, greedy_tokens_equal=same)
    print(json.dumps(report))
    raise SystemExit(0 if report["ok"] else 1)


def main() -> None:
    anyres_main(__doc__.splitlines()[0], cmd_make, cmd_check)


if __name__ == "__main__":
    main()
