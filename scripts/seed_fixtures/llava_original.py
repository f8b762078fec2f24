"""Make (and check) parity fixtures with the ORIGINAL LLaVA-1.5 / ViP-LLaVA / DenseFusion-S2 code.

Run in the seed's own virtual environment, never in vlmkit's: the original code needs transformers
4.37.2. This script imports the original repository from ``--repo`` (a work tree of haotian-liu/LLaVA
@ c121f043, WisconsinAIVision/ViP-LLaVA @ 77079b1e, or baaivision/DenseFusion @ 71c55d3b with
bfshi/scaling_on_scales @ 9c008a37 on ``--extra-path``) and runs its model code unchanged. It copies
none of it. See ``scripts/seed_fixtures/README.md`` for the environment.

``make`` builds a tiny random ``LlavaLlamaForCausalLM`` with the original classes, saves it exactly as
the releases are saved (``save_pretrained`` with pickled ``.bin`` shards for LLaVA-1.5, safetensors with
the tower inside for the ViP variant), reloads it the way the original builder does (``from_pretrained``
then ``vision_tower.load_model()``) and records, from the reloaded model:

* a right-padded batch with images (one and two per row) and a text-only row (which, in the original,
  consumes a dummy image), and the original's fp32 logits over the spliced sequence;
* greedy tokens generated one row at a time by the original ``generate``.

Variants: ``llava`` (LLaVA-1.5: pickled ``.bin`` shards, the tower named by hub id and not in the
checkpoint), ``vip`` (ViP-LLaVA: ``clip_4layers_336``, tower inside, safetensors), ``s2`` (DenseFusion's
LLaVA-S2: ``s2: true``, scales 28/56/84 for the tiny tower, a tuned tower inside the checkpoint and in
the folder ``mm_vision_tower`` names, as its stage 3 loads it; ``clip-tower-base`` is the untuned one).

``check EXPORT`` loads a folder that vlmkit exported in the original format with the original code and
compares its logits on the fixture's batch with the recorded ones (exit status 1 when they differ).

Stubs: ConvLLaVA's encoder builder imports timm for UniRepLKNet, which these fixtures never build (timm
gets placeholder names). And the towers are named as the releases name them (a hub id, ViP-LLaVA's fixed
``openai/clip-vit-large-patch14-336``, DenseFusion's stage-2 folder); the ``from_pretrained`` of CLIP's
classes is redirected from those names to the local tiny tower folder. The math is untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

HUB_TOWER = "openai/clip-vit-large-patch14-336"
#: DenseFusion's stage 3 names the tower that stage 2 tuned and saved by a path (it must exist: its builder
#: checks); the fixture's is relative to the fixture folder, where the original code is run
S2_TOWER = "./clip-tower"
VARIANTS = {
    "llava": {"package": "llava", "tower_ref": HUB_TOWER, "layers": 3, "image": 28},
    "vip": {"package": "llava", "tower_ref": "clip_4layers_336", "layers": 12, "image": 28},
    "s2": {"package": "densefusion", "tower_ref": S2_TOWER, "layers": 3, "image": 84, "s2_scales": "28,56,84"},
    # ConvLLaVA: a 4-stage ConvNeXt (stem patch 2, so 64 px give 2x2 tokens after the added fifth stage)
    "conv": {"package": "llava", "tower_ref": "./vision_tower", "image": 64, "tokens": 4},
}
CONV_TOWER = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], patch_size=2, image_size=64)
IMAGE = -200
TOL = 1e-5


def import_original(repo: Path, tower: Path, package: str = "llava", extra: list[Path] | None = None):
    for path in [repo, *(extra or [])]:
        sys.path.insert(0, str(path))
    import importlib

    import transformers

    redirect = {HUB_TOWER, S2_TOWER}

    for cls in (transformers.CLIPVisionModel, transformers.CLIPImageProcessor, transformers.CLIPVisionConfig):
        original = cls.from_pretrained.__func__

        def redirected(klass, name, *args, _original=original, **kwargs):
            return _original(klass, str(tower) if name in redirect else name, *args, **kwargs)

        cls.from_pretrained = classmethod(redirected)
    _stub_unused_imports()
    module = importlib.import_module(f"{package}.model.language_model.llava_llama")
    return module.LlavaConfig, module.LlavaLlamaForCausalLM


def _stub_unused_imports() -> None:
    """ConvLLaVA's encoder builder imports UniRepLKNet (timm) for a tower it does not build here; timm would
    pull a CUDA torchvision into this environment, so its modules get placeholders that are never called
    (decorators such as ``register_model`` return what they decorate)."""
    try:
        import timm  # noqa: F401
    except ImportError:
        import types

        def placeholder(*args, **_kwargs):
            if len(args) == 1 and callable(args[0]) and not _kwargs:
                return args[0]  # used as a decorator at import time
            raise RuntimeError("timm stub: UniRepLKNet is not used by these fixtures")

        class Stub(types.ModuleType):
            __path__: list[str] = []

            def __getattr__(self, name):
                return placeholder

        for name in ("timm", "timm.models", "timm.models.layers", "timm.models.registry"):
            sys.modules[name] = Stub(name)


def make_tower(path: Path, layers: int, seed: int, safe: bool = False) -> None:
    """A tiny CLIP tower, saved as openai/clip-vit-large-patch14-336 is listed in the originals' predict.py
    (config.json, preprocessor_config.json, pytorch_model.bin); ``safe``: as transformers 4.37 saves a tuned
    tower (DenseFusion's stage 2)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    cfg = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=layers, num_attention_heads=2,
                           image_size=28, patch_size=7, projection_dim=16)
    torch.manual_seed(seed)
    tower = CLIPVisionModel(cfg)
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tower.save_pretrained(path, safe_serialization=safe)
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(path)


def load_original(model_cls, folder: Path):
    """As llava.model.builder.load_pretrained_model does it, in fp32 on the CPU."""
    model = model_cls.from_pretrained(str(folder), torch_dtype=torch.float32, low_cpu_mem_usage=True)
    tower = model.get_vision_tower()
    if not tower.is_loaded:
        tower.load_model()
    model.get_model().vision_tower.to(torch.float32)
    return model.eval()


def batch(tok_ids: dict[str, int], pad_id: int, image: int):
    """Rows: one image, two images, text only (the original consumes a dummy image for it)."""
    def w(*names):
        return [tok_ids[n] for n in names]

    bos = [tok_ids["<s>"]] if "<s>" in tok_ids else []  # Qwen2 (Ross) has no BOS
    rows = [
        bos + w("what", "color", "is") + [IMAGE] + w("the", "circle", "?"),
        bos + w("count") + [IMAGE] + w("and") + [IMAGE] + w("how", "many", "shapes"),
        bos + w("is", "there", "a", "red", "square", "in", "the", "picture", "?", "yes"),
    ]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    torch.manual_seed(1234)
    pixels = torch.randn(4, 3, image, image)  # 4th: the dummy image of the text-only row
    return rows, ids, mask, pixels


def spliced_logits(model, ids, mask, pixels):
    # labels as in training: DenseFusion's splice (LLaVA v1's) only aligns the masks of rows of different
    # lengths when it has labels; the logits do not depend on them
    labels = ids.masked_fill(mask == 0, -100).masked_fill(ids == IMAGE, -100)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, images=pixels, labels=labels, return_dict=True)
    return out.logits.float()


def fresh_folder(out: Path) -> Path:
    """``out``, emptied and resolved (fixtures are always written whole)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out.resolve()


def tokenizer_ids(tokenizer: Path) -> tuple[dict[str, int], int, int | None, int, int]:
    """The slow tokenizer's single-token ids of the fixture words (``"<s>"`` too when it has a BOS), its pad,
    bos and eos ids, and its size (the LLM's vocabulary). Read with ``use_fast=False``, as the originals do."""
    from slow_tokenizers import word_ids
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer), use_fast=False)
    ids = word_ids(tokenizer)
    if tok.bos_token_id is not None:
        ids["<s>"] = tok.bos_token_id
    return ids, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, len(tok)


def copy_release_tokenizer(tokenizer: Path, model_dir: Path) -> None:
    """The slow tokenizer's files, as the release ships them (no tokenizer.json)."""
    for f in sorted(p for p in tokenizer.iterdir() if p.is_file()):
        shutil.copy(f, model_dir / f.name)


def save_in_shards(model, folder: Path, shards: int, safe: bool, state=None) -> None:
    """``save_pretrained`` split into exactly ``shards`` files, as the release is (the smallest shard size
    that gives that many; a tiny model in 5 GB shards would be one file)."""
    import math

    tensors = state if state is not None else model.state_dict()
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    size = math.ceil(total / shards / 1000)  # in KB: transformers 4.37 reads a number with a unit
    while True:
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(folder, state_dict=state, safe_serialization=safe, max_shard_size=f"{size}KB")
        got = len(list(folder.glob("*.safetensors" if safe else "pytorch_model-*.bin")))
        if got == shards:
            return
        if got < shards or size * 1000 > total:
            raise SystemExit(f"cannot split the model into {shards} shards (got {got} at {size} KB)")
        size += 1


def generated_and_lengths(tokens: list[list[int]], rows: list[list[int]], tokens_per_image: int):
    """The greedy tokens padded with -1, and each row's length after splicing its images in."""
    width = max(len(t) for t in tokens)
    gen = torch.tensor([t + [-1] * (width - len(t)) for t in tokens])
    lengths = torch.tensor([len(r) - r.count(IMAGE) + r.count(IMAGE) * tokens_per_image for r in rows])
    return gen, lengths


def greedy(model, rows, pixels, steps: int, eos: int, start_token: bool = True):
    """The original's greedy tokens per row (each row alone, its images in order; a text-only row skips the
    dummy image the batch holds for it). ``start_token``: LLaVA-1.5's generate starts from inputs_embeds and
    returns a start token + the new tokens (Ross's returns the new tokens alone); DenseFusion's (LLaVA v1's)
    returns the prompt + the new tokens. Only the new tokens are kept."""
    tokens, image = [], 0
    for r in rows:
        n = r.count(IMAGE)
        ims = pixels[image:image + n] if n else None
        image += max(n, 1)
        with torch.no_grad():
            out = model.generate(torch.tensor([r]), images=ims, max_new_tokens=steps, do_sample=False,
                                 eos_token_id=eos, pad_token_id=eos, use_cache=True)
        seq = out[0].tolist()
        tokens.append(seq[len(r):] if seq[:len(r)] == r else seq[1:] if start_token else seq)
    return tokens


def make_convllava(args, out: Path, llm: dict) -> tuple:
    """ConvLLaVA's stages 1-3 in miniature: its own initialize_vision_modules adds the fifth stage to a 4-stage
    ConvNeXt, everything is tuned, then the checkpoint is saved as its train.py saves it: the tower (without
    ``layernorm.*``) with its config and processor in ``vision_tower/``, the LLM + projector without the tower."""
    from transformers import CLIPImageProcessor, ConvNextConfig, ConvNextModel

    base, tower_dir, model_dir = out / "convnext-base", out / "vision_tower", out / "model"
    torch.manual_seed(args.seed)
    ConvNextModel(ConvNextConfig(**CONV_TOWER)).save_pretrained(base, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(base)
    config_cls, model_cls = import_original(args.repo, base, "llava", args.extra_path)
    os.chdir(out)
    cfg = config_cls(**llm)
    cfg._attn_implementation = "sdpa"
    model = model_cls(cfg)
    model_args = argparse.Namespace(
        vision_tower=str(base), mm_vision_select_layer=-1, mm_vision_select_feature="patch",
        pretrain_mm_mlp_adapter=None, mm_patch_merge_type="flat", mm_projector_type="mlp2x_gelu",
        mm_vision_resolution=64, vision_add_five_stage=1, vision_five_stage_width=48)
    model.get_model().initialize_vision_modules(model_args)
    tower = model.get_vision_tower()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.config.image_aspect_ratio = "pad"
    model.config.tokenizer_padding_side = "right"
    model.config.tokenizer_model_max_length = 256
    model.config.mm_use_im_start_end = model.config.mm_use_im_patch_token = False
    model.eval()
    # train.py's save: processor + tower config + tower weights without layernorm, then the LLM without tower
    tower.image_processor.save_pretrained(tower_dir)
    tower.vision_tower.config.save_pretrained(tower_dir)
    weights = {k: v.detach().clone() for k, v in tower.vision_tower.named_parameters() if not k.startswith("layernorm")}
    torch.save(weights, tower_dir / "pytorch_model.bin")
    model.config.mm_vision_tower = "./vision_tower"  # stage 3 names the stage-2 tower by its path
    state = {k: v for k, v in model.state_dict().items() if ".vision_tower." not in k}
    model.save_pretrained(model_dir, state_dict=state, safe_serialization=True)
    shutil.rmtree(base)
    return model, model_cls, model_dir


def _make_llava(args, variant: dict, out: Path, tower_dir: Path, model_dir: Path, llm: dict) -> tuple:
    """LLaVA-1.5 / ViP-LLaVA / DenseFusion-S2: the original model class built from a config naming the tower."""
    vip, s2 = args.variant == "vip", "s2_scales" in variant
    make_tower(tower_dir, layers=variant["layers"], seed=args.seed, safe=s2)
    if s2:  # the untuned tower; the tuned one (below) replaces clip-tower, as DenseFusion's stage 2 saves it
        shutil.copytree(tower_dir, out / "clip-tower-base")
    config_cls, model_cls = import_original(args.repo, tower_dir, variant["package"], args.extra_path)
    os.chdir(out)  # S2_TOWER is relative to the fixture folder
    cfg = config_cls(
        **llm,
        mm_vision_tower=variant["tower_ref"], mm_hidden_size=16 * (5 if vip else 3 if s2 else 1),
        mm_vision_select_layer=-2, mm_vision_select_feature="patch", mm_projector_type="mlp2x_gelu",
        mm_patch_merge_type="flat", mm_use_im_start_end=False, mm_use_im_patch_token=False,
        image_aspect_ratio="pad", tokenizer_padding_side="right", tokenizer_model_max_length=256,
        use_mm_proj=True, tune_mm_mlp_adapter=False, freeze_mm_mlp_adapter=False,
        **({"s2": True, "s2_scales": variant["s2_scales"]} if s2 else {}),
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    model = model_cls(cfg)
    model.get_vision_tower().load_model()
    with torch.no_grad():  # no two norms alike, so a swapped tensor shows in the logits
        for name, p in model.named_parameters():
            if ".vision_tower." not in name or s2:  # S2: DenseFusion's stage 2 tunes the tower
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    if s2:  # the tuned tower is also saved on its own, where mm_vision_tower points
        tower = model.get_vision_tower()
        tower.vision_tower.save_pretrained(tower_dir, safe_serialization=True)
    if s2:  # DenseFusion's trainer save (transformers 4.37 Trainer: safetensors), the tower inside
        model.save_pretrained(model_dir, safe_serialization=True)
    elif vip:  # as mucai/vip-llava-13b is listed (predict.py): three pickled shards + index, tower inside
        save_in_shards(model, model_dir, 3, safe=False)
    else:  # as liuhaotian/llava-v1.5-13b is listed: three pickled shards + index; the tower only named by path
        state = {k: v for k, v in model.state_dict().items() if ".vision_tower." not in k}
        save_in_shards(model, model_dir, 3, safe=False, state=state)

    return model, model_cls


def cmd_make(args) -> None:
    from safetensors.torch import save_file

    out = fresh_folder(args.out)
    tower_dir, model_dir = out / "clip-tower", out / "model"
    variant = VARIANTS[args.variant]
    vocab, pad_id, bos_id, eos_id, vocab_size = tokenizer_ids(args.tokenizer)
    llm = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
        pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id, tie_word_embeddings=False)
    if args.variant == "conv":
        model, model_cls, model_dir = make_convllava(args, out, llm)
    else:
        model, model_cls = _make_llava(args, variant, out, tower_dir, model_dir, llm)
    copy_release_tokenizer(args.tokenizer, model_dir)

    loaded = load_original(model_cls, model_dir)
    rows, ids, mask, pixels = batch(vocab, pad_id, variant["image"])
    logits = spliced_logits(loaded, ids, mask, pixels)
    same = spliced_logits(model, ids, mask, pixels)
    assert torch.equal(logits, same), "reloading changed the original model"
    tokens = greedy(loaded, rows, pixels, steps=6, eos=eos_id)
    tokens_per_image = variant.get("tokens", (28 // 7) ** 2)  # CLIP: the smallest scale's grid, also for S2
    gen, lengths = generated_and_lengths(tokens, rows, tokens_per_image)
    save_file({"input_ids": ids, "attention_mask": mask, "pixel_values": pixels, "logits": logits,
               "spliced_lengths": lengths, "generated": gen}, str(out / "reference.safetensors"))
    repo_commit = _commit(args.repo)
    import transformers

    (out / "reference.json").write_text(json.dumps({
        "made_by": "scripts/seed_fixtures/llava_original.py make",
        "original": {"llava": "haotian-liu/LLaVA", "vip": "WisconsinAIVision/ViP-LLaVA",
                     "s2": "baaivision/DenseFusion + bfshi/scaling_on_scales", "conv": "alibaba/conv-llava"}[args.variant],
        "commit": repo_commit, "transformers": transformers.__version__, "torch": torch.__version__,
        "variant": args.variant, "tower": "vision_tower" if args.variant == "conv" else "clip-tower",
        "image_tokens": tokens_per_image,
        "stubs": [] if args.variant == "conv" else
        [f"CLIP from_pretrained('{HUB_TOWER if args.variant == 'vip' else variant['tower_ref']}') -> clip-tower"],
        "generated_pad": -1,
    }, indent=2) + "\n")
    print(f"wrote {out}: logits {tuple(logits.shape)}, generated {gen.tolist()}")


def _commit(repo: Path) -> str:
    marker = repo / "COMMIT"
    if marker.is_file():
        return marker.read_text().strip()
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class _Float32Torch:
    """``torch`` as the original builder sees it during the check, with ``float16`` read as ``float32``: its
    ``load_pretrained_model`` casts to fp16 for a GPU, and the comparison is made in fp32 on the CPU."""

    def __getattr__(self, name):
        return torch.float32 if name == "float16" else getattr(torch, name)


def load_with_builder(package: str, folder: Path, model_name: str = "llava-export"):
    """The original's own loading function, ``<package>.model.builder.load_pretrained_model``, on the CPU:
    its tokenizer (``use_fast=False``), its model class, its ``resize_token_embeddings(len(tokenizer))``
    and its tower loading. ``model_name`` holds 'llava', as a release's folder name does (the builder
    picks the multimodal class by it)."""
    import importlib

    if package != "llava" and "llava" not in sys.modules:
        # DenseFusion's builder still imports llava.constants and llava.model (its fork's old name): those
        # names are its own modules
        for name in ("", ".constants", ".model"):
            sys.modules["llava" + name] = importlib.import_module(package + name)
    builder = importlib.import_module(f"{package}.model.builder")
    real = builder.torch
    builder.torch = _Float32Torch()
    try:
        tokenizer, model, _, _ = builder.load_pretrained_model(str(folder), None, model_name, device_map="cpu",
                                                               device="cpu")
    finally:
        builder.torch = real
    return tokenizer, model.float().eval()


def cmd_check(args) -> None:
    """Load an export with the original's load_pretrained_model (tokenizer included) and compare its logits
    and greedy tokens with the fixture's."""
    from safetensors.torch import load_file

    ref = load_file(str(args.fixture / "reference.safetensors"))
    meta = json.loads((args.fixture / "reference.json").read_text())
    variant = VARIANTS[meta["variant"]]
    tower = args.fixture / meta.get("tower", "clip-tower")
    import_original(args.repo, tower, variant["package"], args.extra_path)
    args.export = args.export.resolve()
    os.chdir(args.fixture)  # S2_TOWER is relative to the fixture folder
    tokenizer, model = load_with_builder(variant["package"], args.export)
    report = check_against(model, ref)
    report.update(export=str(args.export), tokenizer=type(tokenizer).__name__, tokenizer_size=len(tokenizer))
    print(json.dumps(report))
    raise SystemExit(0 if report["ok"] else 1)


def check_against(model, ref, start_token: bool = True) -> dict:
    """Logit difference (over the real spliced positions) and greedy-token agreement with a fixture."""
    logits = spliced_logits(model, ref["input_ids"], ref["attention_mask"], ref["pixel_values"])
    if logits.shape != ref["logits"].shape:
        return {"ok": False, "why": f"logits {tuple(logits.shape)} != {tuple(ref['logits'].shape)}"}
    valid = torch.arange(logits.shape[1])[None, :] < ref["spliced_lengths"][:, None]
    diff = (logits - ref["logits"])[valid].abs().max().item()
    rows = [[int(t) for t, m in zip(r, mk) if m] for r, mk in zip(ref["input_ids"].tolist(),
                                                                   ref["attention_mask"].tolist())]
    gen = ref["generated"]
    tokens = greedy(model, rows, ref["pixel_values"], steps=gen.shape[1], eos=int(model.config.eos_token_id),
                    start_token=start_token)
    width = gen.shape[1]
    same = all(t[:width] + [-1] * (width - len(t[:width])) == g for t, g in zip(tokens, gen.tolist()))
    return {"ok": diff <= TOL and same, "max_abs_logit_diff": diff, "greedy_tokens_equal": same}


# -- shared by the AnyRes fixture scripts (llava_next_original.py, onevision_original.py) -------------------------
def real_rows(ref) -> list[list[int]]:
    """A fixture batch's rows without their padding."""
    return [[int(t) for t, m in zip(r, mk) if m] for r, mk in zip(ref["input_ids"].tolist(), ref["attention_mask"].tolist())]


def greedy_with_sizes(model, rows, images, sizes, steps: int, eos: int, prompt_echoed: bool) -> list[list[int]]:
    """The original's greedy tokens per row, each row alone with its images and their (width, height); a text-only
    row skips the dummy image the batch holds for it. ``prompt_echoed``: haotian-liu/LLaVA's generate returns a start
    token (or the prompt) before the new tokens, LLaVA-NeXT's the new tokens alone."""
    tokens, k = [], 0
    for r in rows:
        n = r.count(IMAGE)
        ims, szs = (images[k:k + n], sizes[k:k + n]) if n else (None, None)
        k += max(n, 1)
        with torch.no_grad():
            out = model.generate(torch.tensor([r]), images=ims, image_sizes=szs, max_new_tokens=steps,
                                 do_sample=False, eos_token_id=eos, pad_token_id=eos, use_cache=True)
        seq = out[0].tolist()
        tokens.append((seq[len(r):] if seq[:len(r)] == r else seq[1:]) if prompt_echoed else seq)
    return tokens


def same_tokens(tokens: list[list[int]], generated) -> bool:
    """Whether greedy tokens agree with a fixture's (padded with -1) over its width."""
    w = generated.shape[1]
    return all(t[:w] + [-1] * (w - len(t[:w])) == g for t, g in zip(tokens, generated.tolist()))


def anyres_main(description: str, make, check) -> None:
    """``make --repo --tokenizer --out [--seed]`` and ``check --repo --fixture EXPORT``."""
    p = argparse.ArgumentParser(description=description)
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
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    {"make": make, "check": check}[args.cmd](args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--repo", type=Path, required=True)
    m.add_argument("--variant", choices=tuple(VARIANTS), required=True)
    m.add_argument("--extra-path", type=Path, action="append", help="more import roots (s2wrapper for s2)")
    m.add_argument("--tokenizer", type=Path, required=True)
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("check")
    c.add_argument("--repo", type=Path, required=True)
    c.add_argument("--fixture", type=Path, required=True)
    c.add_argument("--extra-path", type=Path, action="append", help="more import roots (s2wrapper for s2)")
    c.add_argument("export", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    {"make": cmd_make, "check": cmd_check}[args.cmd](args)


if __name__ == "__main__":
    main()
