"""Make (and check) the LLaVA-OneVision parity fixture with the ORIGINAL code, LLaVA-VL/LLaVA-NeXT.

Run in the Ross seed environment (``/work/seedenv-ross``: transformers 4.43.1, which has Qwen2), never in
vlmkit's. The model is ``LlavaQwenForCausalLM`` from the LLaVA-NeXT work tree on ``--repo``, with OneVision's
settings as llava-onevision-qwen2-*-ov's ``config.json`` has them: ``image_aspect_ratio: anyres_max_N``,
``mm_patch_merge_type: spatial_unpad``, explicit ``image_grid_pinpoints`` ([width, height], the (1x1)..(3x3)
grid of 384 px tiles), LLaVA-NeXT's own SigLIP tower (``google/siglip-so400m-patch14-384``: its class drops the
last layer and asserts 729 tokens per crop, so the tiny tower keeps 384 px / patch 14 at width 16) tuned and
saved inside the shards (``mm_tunable_parts`` holds ``mm_vision_tower``), and the learned ``image_newline``.
The cap is ``anyres_max_2`` instead of the release's 9, the same code path: it runs on images of a few hundred
pixels, so that the sequences stay CPU-sized.

The batch: a 2:1 image, then a row with two images (1:3 and square) that LLaVA-NeXT's training data code
processes as ``pad`` (one crop each, OneVision's multi-image convention), then a 1:1 image tiled and capped,
and a text-only row. Pixels come from the original ``process_images``, logits from its ``forward``, greedy
tokens from its ``generate``. None of its code is copied.

    $S onevision_original.py make --repo repos/llavanext --tokenizer /tmp/tok-qwen --out tests/fixtures/seeds/onevision
    $S onevision_original.py check --repo repos/llavanext --fixture tests/fixtures/seeds/onevision EXPORT

``check`` loads a vlmkit export as LLaVA-NeXT's ``load_pretrained_model`` does on its qwen branch (the fast
tokenizer, ``LlavaQwenForCausalLM.from_pretrained``, ``resize_token_embeddings``, the tower's ``load_model``; the
builder itself moves the tower to CUDA, so its steps are taken here on the CPU) and compares logits and greedy
tokens (exit status 1 when they differ). Stub: the SigLIP hub id is redirected to the local tiny tower.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llava_original import (  # noqa: E402  (the shared helpers of the seed fixtures)
    IMAGE,
    TOL,
    _commit,
    anyres_main,
    fresh_folder,
    greedy_with_sizes,
    real_rows,
    same_tokens,
    tokenizer_ids,
)

HUB_TOWER = "google/siglip-so400m-patch14-384"
TILE = 384
CAP = 2
PINPOINTS = [[i * TILE, j * TILE] for i in range(1, 4) for j in range(1, 4)]  # as LLaVA-NeXT expands (1x1)..(3x3)
#: (width, height): row 0 one 2:1 image; row 1 two images (1:3, square: padded, not tiled); row 2 a 1:1 image
#: (3 x 3 tiles, capped); row 3 text only (its dummy image)
SIZES = [(400, 200), (200, 600), (300, 300), (500, 500), (100, 100)]
MULTI = (1, 2)  # the images of the two-image row
#: the logits kept: every text position, and every IMAGE_STRIDE-th visual one (all of them would be 30 MB)
IMAGE_STRIDE = 50


def import_original(repo: Path, tower: Path):
    sys.path.insert(0, str(repo))
    from llava.model.multimodal_encoder import siglip_encoder

    original = siglip_encoder.SigLipVisionModel.from_pretrained.__func__

    def redirected(klass, name, *args, _original=original, **kwargs):
        return _original(klass, str(tower) if name == HUB_TOWER else name, *args, **kwargs)

    siglip_encoder.SigLipVisionModel.from_pretrained = classmethod(redirected)
    from llava.mm_utils import process_images
    from llava.model.language_model.llava_qwen import LlavaQwenConfig, LlavaQwenForCausalLM

    return LlavaQwenConfig, LlavaQwenForCausalLM, process_images


def make_tower(path: Path, seed: int) -> None:
    """A tiny SigLIP at OneVision's 384 px / patch 14 (27 x 27 = 729 tokens, which LLaVA-NeXT's tower asserts),
    3 layers of width 16, saved as transformers 4.43 saves one."""
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                             image_size=TILE, patch_size=14)
    torch.manual_seed(seed)
    tower = SiglipVisionModel(cfg)
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tower.save_pretrained(path, safe_serialization=True)
    SiglipImageProcessor(size={"height": TILE, "width": TILE}).save_pretrained(path)


def pil_images(seed: int = 11):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    out = []
    for w, h in SIZES:  # coarse noise in 10 px blocks: small as a PNG, and its edges exercise the resampler
        small = (torch.rand(max(1, h // 10), max(1, w // 10), 3, generator=g) * 255).to(torch.uint8).numpy()
        out.append(Image.fromarray(small).resize((w, h), Image.NEAREST))
    return out


def digest(crops: torch.Tensor) -> str:
    """sha256 of a float32 crop tensor's bytes: equal digests, equal pixels (the crops themselves are 20 MB)."""
    import hashlib

    return hashlib.sha256(crops.contiguous().float().numpy().tobytes()).hexdigest()


def kept_positions(ids, mask, lengths, counts) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the logits kept: each row's text positions and every IMAGE_STRIDE-th visual position."""
    rows, cols, k = [], [], 0
    for r in range(ids.shape[0]):
        at = 0
        for t in ids[r][mask[r].bool()].tolist():
            if t == IMAGE:
                n = counts[k]
                k += 1
                for j in range(0, n, IMAGE_STRIDE):
                    rows.append(r)
                    cols.append(at + j)
                at += n
            else:
                rows.append(r)
                cols.append(at)
                at += 1
        assert at == int(lengths[r]), (r, at, int(lengths[r]), counts)
        if not (ids[r] == IMAGE).any():
            k += 1  # the text-only row's dummy image
    return torch.tensor(rows), torch.tensor(cols)


def pixels_of(process_images, images, processor, config):
    """The original's preprocessing: tiled (anyres_max) for an image alone in its row, ``pad`` for the images
    of a multi-image row (LLaVA-NeXT's train.py: ``process_image(f, "pad")`` when a sample has several)."""
    pad_cfg = copy.copy(config)
    pad_cfg.image_aspect_ratio = "pad"
    out = []
    for i, im in enumerate(images):
        cfg = pad_cfg if i in MULTI else config
        px = process_images([im], processor, cfg)
        px = px[0] if isinstance(px, list) else px[0]
        out.append(px if px.dim() == 4 else px[None])
    return out


def rows_of(tok_ids: dict[str, int]) -> list[list[int]]:
    def w(*names):
        return [tok_ids[n] for n in names]

    return [  # Qwen2 has no BOS
        w("what", "color", "is") + [IMAGE] + w("the", "circle", "?"),
        w("count") + [IMAGE] + w("and") + [IMAGE] + w("how", "many", "shapes"),
        w("describe") + [IMAGE] + w("the", "picture"),
        w("is", "there", "a", "red", "square", "in", "the", "picture", "?", "yes"),
    ]


def padded(rows, pad_id):
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def forward_logits(model, ids, mask, images, sizes):
    """``modalities`` one per row: LLaVA-NeXT zips the spliced rows with it (its default, ["image"], keeps one)."""
    labels = ids.masked_fill(mask == 0, -100).masked_fill(ids == IMAGE, -100)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, images=images, image_sizes=sizes, labels=labels,
                    return_dict=True, modalities=["image"] * ids.shape[0])
    return out.logits.float()


def load_original(model_cls, folder: Path):
    """LLaVA-NeXT's load_pretrained_model, qwen branch, on the CPU in fp32 (see the module docstring)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = model_cls.from_pretrained(str(folder), low_cpu_mem_usage=True, attn_implementation="sdpa",
                                      torch_dtype=torch.float32)
    model.resize_token_embeddings(len(tokenizer))
    tower = model.get_vision_tower()
    if not tower.is_loaded:
        tower.load_model(device_map="cpu")
    return tokenizer, model.float().eval()


def _spliced_lengths(model, ids, mask, pixels, sizes) -> torch.Tensor:
    with torch.no_grad():
        _, _, attn, _, _, _ = model.prepare_inputs_labels_for_multimodal(
            ids, None, mask, None, None, pixels, ["image"] * ids.shape[0], image_sizes=sizes)
    return attn.sum(1)


def cmd_make(args) -> None:
    from safetensors.torch import save_file

    out = fresh_folder(args.out)
    tower_dir, model_dir = out / "siglip-tower", out / "model"
    make_tower(tower_dir, seed=args.seed)
    config_cls, model_cls, process_images = import_original(args.repo, tower_dir)
    vocab, pad_id, bos_id, eos_id, vocab_size = tokenizer_ids(args.tokenizer)
    cfg = config_cls(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=1000000.0,
        pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id, tie_word_embeddings=False,
        use_sliding_window=False,
        mm_vision_tower=HUB_TOWER, mm_hidden_size=16, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        mm_projector_type="mlp2x_gelu", mm_patch_merge_type="spatial_unpad", image_aspect_ratio=f"anyres_max_{CAP}",
        image_grid_pinpoints=PINPOINTS, mm_use_im_start_end=False, mm_use_im_patch_token=False,
        mm_tunable_parts="mm_vision_tower,mm_mlp_adapter,mm_language_model", mm_newline_position="grid",
        mm_spatial_pool_mode="bilinear", mm_spatial_pool_stride=2, tokenizer_padding_side="right",
        tokenizer_model_max_length=8192, use_mm_proj=True, tune_mm_mlp_adapter=False, freeze_mm_mlp_adapter=False,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    model = model_cls(cfg)  # mm_tunable_parts holds the tower: it is loaded here, as in the release's training
    with torch.no_grad():
        model.get_model().image_newline.copy_(torch.randn(cfg.hidden_size))  # created with torch.empty
        for p in model.parameters():  # the tower is tuned too
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    # LLaVA-NeXT's train.py saves with the Trainer (transformers' save_pretrained): one model.safetensors for a
    # 0.5B model in bf16 (1.8 GB, under the 5 GB shard size), the tuned tower inside
    model.save_pretrained(model_dir, safe_serialization=True)
    # its train.py loads the tokenizer with AutoTokenizer (the fast one) and the Trainer saves it with
    # save_pretrained: tokenizer.json beside the slow files
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(args.tokenizer)).save_pretrained(model_dir)

    tokenizer, loaded = load_original(model_cls, model_dir)
    images = pil_images()
    pixels = pixels_of(process_images, images, loaded.get_vision_tower().image_processor, loaded.config)
    sizes = [im.size for im in images]  # (width, height), as the original passes them
    rows = rows_of(vocab)
    ids, mask = padded(rows, pad_id)
    logits = forward_logits(loaded, ids, mask, pixels, sizes)
    assert torch.equal(logits, forward_logits(model, ids, mask, pixels, sizes)), "reloading changed the model"
    tokens = greedy_with_sizes(loaded, rows, pixels, sizes, steps=6, eos=eos_id, prompt_echoed=False)
    lengths = _spliced_lengths(loaded, ids, mask, pixels, sizes)
    counts = _image_token_counts(loaded, pixels, sizes)
    kept_rows, kept_cols = kept_positions(ids, mask, lengths, counts)
    width = max(len(t) for t in tokens)
    save_file({"input_ids": ids, "attention_mask": mask, "num_crops": torch.tensor([p.shape[0] for p in pixels]),
               "image_sizes_wh": torch.tensor(sizes), "image_tokens": torch.tensor(counts),
               "logit_rows": kept_rows, "logit_cols": kept_cols, "logits": logits[kept_rows, kept_cols],
               "spliced_lengths": lengths, "generated": torch.tensor([t + [-1] * (width - len(t)) for t in tokens])},
              str(out / "reference.safetensors"))
    for i, im in enumerate(images):
        im.save(out / f"image-{i}.png")
    import PIL
    import transformers

    (out / "reference.json").write_text(json.dumps({
        "made_by": "scripts/seed_fixtures/onevision_original.py make", "original": "LLaVA-VL/LLaVA-NeXT",
        "commit": _commit(args.repo), "transformers": transformers.__version__, "torch": torch.__version__,
        "pillow": PIL.__version__,
        "variant": "onevision", "tower": "siglip-tower", "image_sizes_wh": SIZES, "pinpoints_wh": PINPOINTS,
        "anyres_max": CAP, "multi_image_row": list(MULTI), "tokenizer": type(tokenizer).__name__,
        "pixel_sha256": [digest(p) for p in pixels], "image_stride_of_kept_logits": IMAGE_STRIDE,
        "stubs": [f"LLaVA-NeXT SigLipVisionModel.from_pretrained('{HUB_TOWER}') -> siglip-tower"],
        "generated_pad": -1,
    }, indent=2) + "\n")
    print(f"wrote {out}: crops {[p.shape[0] for p in pixels]}, tokens {counts}, spliced {lengths.tolist()}, "
          f"generated {tokens}")


def _image_token_counts(model, pixels, sizes) -> list[int]:
    """Each image's visual tokens in the original: one text token and the image, spliced alone (a one-token
    input is taken for a generation step and left as it is)."""
    out = []
    for p, s in zip(pixels, sizes):
        ids = torch.tensor([[0, IMAGE]])
        out.append(int(_spliced_lengths(model, ids, torch.ones_like(ids), [p], [s])[0]) - 1)
    return out


def cmd_check(args) -> None:
    from PIL import Image
    from safetensors.torch import load_file

    ref = load_file(str(args.fixture / "reference.safetensors"))
    meta = json.loads((args.fixture / "reference.json").read_text())
    _, model_cls, process_images = import_original(args.repo, args.fixture / "siglip-tower")
    tokenizer, model = load_original(model_cls, args.export.resolve())
    images = [Image.open(args.fixture / f"image-{i}.png").convert("RGB") for i in range(len(SIZES))]
    pixels = pixels_of(process_images, images, model.get_vision_tower().image_processor, model.config)
    assert [digest(p) for p in pixels] == meta["pixel_sha256"], "the export changed the original's preprocessing"
    sizes = [tuple(s) for s in ref["image_sizes_wh"].tolist()]
    logits = forward_logits(model, ref["input_ids"], ref["attention_mask"], pixels, sizes)
    report: dict = {"export": str(args.export), "tokenizer": type(tokenizer).__name__}
    lengths = _spliced_lengths(model, ref["input_ids"], ref["attention_mask"], pixels, sizes)
    if lengths.tolist() != ref["spliced_lengths"].tolist():
        report.update(ok=False, why=f"spliced lengths {lengths.tolist()} != {ref['spliced_lengths'].tolist()}")
    else:
        diff = (logits[ref["logit_rows"], ref["logit_cols"]] - ref["logits"]).abs().max().item()
        tokens = greedy_with_sizes(model, real_rows(ref), pixels, sizes, steps=ref["generated"].shape[1],
                                   eos=int(model.config.eos_token_id), prompt_echoed=False)
        same = same_tokens(tokens, ref["generated"])
        report.update(ok=diff <= TOL and same, max_abs_logit_diff=diff, greedy_tokens_equal=same)
    print(json.dumps(report))
    raise SystemExit(0 if report["ok"] else 1)


def main() -> None:
    anyres_main(__doc__.splitlines()[0], cmd_make, cmd_check)


if __name__ == "__main__":
    main()
