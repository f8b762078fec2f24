"""Parity with transformers' LlavaForConditionalGeneration: import-hf, export-hf, and their errors.

The reference is a tiny random HF Llava (CLIP 56 px / patch 14 -> 16 patch tokens, a 2-layer Llama).
vlmkit marks each image by one IMAGE_PLACEHOLDER that splicing expands; HF repeats the image token once
per visual token. Both layouts put every real token at the same spliced position, which the tests check
(through the image spans) before comparing logits at every non-pad position.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    AutoProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from vlmkit.errors import CheckpointError, ConfigError
from vlmkit.interop.hf_llava import export_hf, import_hf
from vlmkit.model.assembly import build_model
from vlmkit.model.checkpoint import load_checkpoint, save_checkpoint
from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.model.contracts import IMAGE_PLACEHOLDER
from vlmkit.model.llm import TINY_LLAMA
from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer

TOL = 1e-5
ATTN = "sdpa"  # the implementation vlmkit's LLM uses by default; HF is loaded with the same


# -- reference model and batches -----------------------------------------------------------------
def tiny_hf_llava(tok, seed: int = 0, config_cls=LlavaConfig, model_cls=LlavaForConditionalGeneration,
                  vision_layers: int = 3, **llava_kwargs):
    """A tiny random transformers Llava (or, with ``config_cls``/``model_cls``, VipLlava) with the tiny
    tokenizer's image token; every weight perturbed so that a swapped tensor shows in the logits."""
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=vision_layers,
                              num_attention_heads=4, image_size=56, patch_size=14, projection_dim=32)
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=256,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = config_cls(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                     image_seq_length=16, **llava_kwargs)
    cfg._attn_implementation = ATTN
    torch.manual_seed(seed)
    model = model_cls(cfg)
    with torch.no_grad():  # no two norms alike (init sets them all to 1/0), so a swapped tensor shows in logits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def words(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def sample_rows(tok) -> list[list[int]]:
    """Two samples with images (one and two) and a text-only one, of different lengths."""
    bos, ph = tok.bos_token_id, IMAGE_PLACEHOLDER
    return [
        [bos] + words(tok, "what color is") + [ph] + words(tok, "the circle ?"),
        [bos] + words(tok, "count") + [ph] + words(tok, "and") + [ph] + words(tok, "how many shapes"),
        [bos] + words(tok, "is there a red square in the picture ? yes"),
    ]


def pad(rows: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids, mask = [], []
    for r in rows:
        fill = [pad_id] * (width - len(r))
        ids.append(fill + r if side == "left" else r + fill)
        mask.append([0] * len(fill) + [1] * len(r) if side == "left" else [1] * len(r) + [0] * len(fill))
    return torch.tensor(ids), torch.tensor(mask)


def expand(rows: list[list[int]], image_id: int, n_tokens: int) -> list[list[int]]:
    """HF Llava layout: each placeholder becomes ``n_tokens`` image-token ids."""
    return [[t for x in r for t in ([image_id] * n_tokens if x == IMAGE_PLACEHOLDER else [x])] for r in rows]


def capture_llm_inputs(model) -> tuple[dict, object]:
    """Record what vlmkit hands its LLM (spliced mask and position ids)."""
    seen: dict = {}

    def hook(_module, args):
        seen["attention_mask"], seen["position_ids"] = args[1], args[2]

    return seen, model.llm.register_forward_pre_hook(hook)


def compare(vl_model, hf_model, tok, side: str, n_tokens: int, image_id: int, seed: int = 0) -> dict:
    """Run the same batch through both; return logits, masks and the max abs diff over non-pad positions."""
    torch.manual_seed(seed)
    pixels = torch.randn(3, 3, 56, 56)
    rows = sample_rows(tok)
    vl_ids, vl_mask = pad(rows, tok.pad_token_id, side)
    hf_ids, hf_mask = pad(expand(rows, image_id, n_tokens), tok.pad_token_id, side)
    vl_model.config.padding_side = side
    seen, handle = capture_llm_inputs(vl_model)
    with torch.no_grad():
        out = vl_model(input_ids=vl_ids, attention_mask=vl_mask, pixel_values={"base": pixels})
    handle.remove()
    # positions match: same spliced mask, and every vlmkit image span sits on HF's image tokens
    assert torch.equal(out.attention_mask, hf_mask)
    assert [s.row for s in out.image_spans] == [0, 1, 1]
    for s in out.image_spans:
        assert s.num_total == n_tokens
        assert (hf_ids[s.row, s.start:s.start + n_tokens] == image_id).all()
    assert int((hf_ids == image_id).sum()) == n_tokens * len(out.image_spans)
    position_ids = seen["position_ids"]
    with torch.no_grad():
        ref = hf_model(input_ids=hf_ids, attention_mask=hf_mask, pixel_values=pixels,
                       position_ids=position_ids if side == "left" else None).logits
        swapped = hf_model(input_ids=hf_ids, attention_mask=hf_mask, pixel_values=pixels.flip(0),
                           position_ids=position_ids if side == "left" else None).logits
    valid = hf_mask.bool()
    assert out.logits.shape[:2] == ref.shape[:2]
    diff = (out.logits[..., :ref.shape[-1]] - ref)[valid].abs().max().item()
    # the comparison is sensitive to the images: other images give clearly different logits
    sensitivity = (out.logits[..., :ref.shape[-1]] - swapped)[valid].abs().max().item()
    return {"diff": diff, "sensitivity": sensitivity, "vl": out.logits, "hf": ref, "mask": valid,
            "position_ids": position_ids}


# -- import --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def hf_reference(tmp_path_factory, tok):
    """A tiny HF Llava saved in shards (with index) plus the tokenizer, and its vlmkit import."""
    root = tmp_path_factory.mktemp("hf_import")
    hf = tiny_hf_llava(tok)
    hf.save_pretrained(root / "hf", max_shard_size="100KB")
    tok.save_pretrained(root / "hf")
    calls: list[tuple[int, int]] = []
    out = import_hf(root / "hf", root / "vlmkit", progress=lambda done, total: calls.append((done, total)))
    return {"hf": hf, "hf_dir": root / "hf", "ckpt": out, "progress": calls, "root": root}


def test_import_reads_sharded_safetensors_with_progress(hf_reference):
    hf_dir = hf_reference["hf_dir"]
    shards = sorted(hf_dir.glob("*.safetensors"))
    assert (hf_dir / "model.safetensors.index.json").is_file() and len(shards) > 1
    n_tensors = len(json.loads((hf_dir / "model.safetensors.index.json").read_text())["weight_map"])
    calls = hf_reference["progress"]
    assert calls[-1] == (n_tensors, n_tensors) and len(calls) == n_tensors


@pytest.mark.parametrize("side", ["right", "left"])
def test_imported_logits_match_hf(hf_reference, tok, side):
    model = load_checkpoint(hf_reference["ckpt"]).eval()
    assert [type(m).__name__ for m in model.connectors] == ["MLP2xGELU"]
    image_id = tok.convert_tokens_to_ids("<image>")
    r = compare(model, hf_reference["hf"], tok, side, n_tokens=16, image_id=image_id)
    assert r["diff"] <= TOL, f"max |logit diff| {r['diff']:.2e} at non-pad positions ({side} padding)"
    assert r["sensitivity"] > 1e-2
    if side == "left":  # explicit position ids count real tokens only, from 0 at each row's first token
        pos, mask = r["position_ids"], r["mask"]
        expected = (mask.long().cumsum(1) - 1).clamp(min=0)
        assert torch.equal(pos[mask], expected[mask])
        assert not mask[:, 0].all()  # the batch really has left padding


def test_imported_greedy_generation_matches_hf(hf_reference, tok):
    """Left-padded batched generation: vlmkit splices left and lets HF generate derive positions."""
    model = load_checkpoint(hf_reference["ckpt"]).eval()
    image_id = tok.convert_tokens_to_ids("<image>")
    rows = sample_rows(tok)
    ids, mask = pad(rows, tok.pad_token_id, "left")
    hf_ids, hf_mask = pad(expand(rows, image_id, 16), tok.pad_token_id, "left")
    torch.manual_seed(0)
    pixels = torch.randn(3, 3, 56, 56)
    ours = model.generate(ids, mask, {"base": pixels}, max_new_tokens=6)
    ref = hf_reference["hf"].generate(input_ids=hf_ids, attention_mask=hf_mask, pixel_values=pixels, max_new_tokens=6,
                                      do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    assert torch.equal(ours, ref[:, hf_ids.shape[1]:])


def _flat_weights(hf_dir) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(hf_dir.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            tensors.update({k: f.get_tensor(k) for k in f.keys()})
    return tensors


def _hf_folder(src, dst, tensors=None, config_patch=None, tokenizer=True):
    """A copy of an HF folder with replaced weights / config fields."""
    dst.mkdir(parents=True)
    config = json.loads((src / "config.json").read_text())
    config.update(config_patch or {})
    (dst / "config.json").write_text(json.dumps(config))
    if tokenizer:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(src / name, dst / name)
    if tensors is not None:
        save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_import_refuses_missing_and_foreign_tensors(hf_reference, tmp_path):
    src = hf_reference["hf_dir"]
    tensors = _flat_weights(src)
    dropped = dict(tensors)
    dropped.pop("multi_modal_projector.linear_2.bias")
    with pytest.raises(CheckpointError, match=r"missing 1 weight\(s\).*connectors\.0\.proj\.2\.bias"):
        import_hf(_hf_folder(src, tmp_path / "a", dropped), tmp_path / "out_a")
    extra = dict(tensors, **{"mystery_head.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match=r"no place in the model, e\.g\. mystery_head\.weight"):
        import_hf(_hf_folder(src, tmp_path / "b", extra), tmp_path / "out_b")
    wrong = dict(tensors, **{"multi_modal_projector.linear_1.bias": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"linear_1\.bias' has shape \[3\]"):
        import_hf(_hf_folder(src, tmp_path / "c", wrong), tmp_path / "out_c")


def test_import_reads_pickles_only_with_the_restricted_unpickler(hf_reference, tmp_path):
    """A .bin of plain tensors imports like safetensors; a pickle that would build an object is refused."""
    src = _hf_folder(hf_reference["hf_dir"], tmp_path / "pickled")
    torch.save(_flat_weights(hf_reference["hf_dir"]), src / "pytorch_model.bin")
    out = import_hf(src, tmp_path / "out")
    model, ref = load_checkpoint(out), load_checkpoint(hf_reference["ckpt"])
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())

    class Payload:  # unpickling this would call os.system
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    evil = _hf_folder(hf_reference["hf_dir"], tmp_path / "evil")
    torch.save({"x": Payload()}, evil / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: refused: torch\.load\(weights_only=True\)"):
        import_hf(evil, tmp_path / "out_evil")
    assert not (tmp_path / "pwned").exists()
    (evil / "pytorch_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: refused"):
        import_hf(evil, tmp_path / "out_evil")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_import_refuses_corrupt_safetensors(hf_reference, tmp_path, damage):
    src = _hf_folder(hf_reference["hf_dir"], tmp_path / "corrupt", _flat_weights(hf_reference["hf_dir"]))
    f = src / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(b"\x07garbage" * 16 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt or truncated safetensors file"):
        import_hf(src, tmp_path / "out")


@pytest.mark.parametrize("patch, message", [
    ({"vision_feature_layer": [-2, -5]}, r"a list of layers \(\[-2, -5\]\) is not supported"),
    ({"projector_hidden_act": "relu"}, r"projector_hidden_act: 'relu' is not 'gelu'"),
    ({"multimodal_projector_bias": False}, r"multimodal_projector_bias: false"),
    ({"model_type": "llava_next"}, r"model_type is 'llava_next'; this import converts only 'llava'"),
])
def test_import_refuses_unmappable_configs(hf_reference, tmp_path, patch, message):
    src = _hf_folder(hf_reference["hf_dir"], tmp_path / "cfg", {"x": torch.zeros(1)}, config_patch=patch)
    with pytest.raises(ConfigError, match=message):
        import_hf(src, tmp_path / "out")


def test_import_requires_a_tokenizer(hf_reference, tmp_path):
    src = _hf_folder(hf_reference["hf_dir"], tmp_path / "notok", _flat_weights(hf_reference["hf_dir"]),
                     tokenizer=False)
    with pytest.raises(ConfigError, match=r"no tokenizer files.*pass tokenizer="):
        import_hf(src, tmp_path / "out")
    # an explicit tokenizer makes it work (single-file weights, not sharded)
    out = import_hf(src, tmp_path / "out", tokenizer=hf_reference["hf_dir"])
    assert len(load_checkpoint(out).tokenizer) == len(build_tiny_tokenizer())


# -- export --------------------------------------------------------------------------------------
def _vlmkit_checkpoint(path, config: dict, seed: int = 1):
    torch.manual_seed(seed)
    model = build_model(ModelConfig.from_dict(config))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_checkpoint(model, path)
    return path


TINY_CLIP_FULL = {"name": "clip", "args": {"config": "tiny", "feature_layer": -1, "select": "cls_patch"}}


def test_export_round_trip(tmp_path, tok):
    ckpt = _vlmkit_checkpoint(tmp_path / "vlmkit", {"encoders": [TINY_CLIP_FULL], "connector": "mlp2x_gelu",
                                                    "llm": "tiny-llama", "max_length": 256})
    out = export_hf(ckpt, tmp_path / "hf")
    hf = LlavaForConditionalGeneration.from_pretrained(out, attn_implementation=ATTN).eval()
    image_id = tok.convert_tokens_to_ids("<image>")
    assert (hf.config.image_token_index, hf.config.image_seq_length) == (image_id, 17)  # 16 patches + CLS
    assert (hf.config.vision_feature_layer, hf.config.vision_feature_select_strategy) == (-1, "full")
    model = load_checkpoint(ckpt).eval()
    r = compare(model, hf, tok, "right", n_tokens=17, image_id=image_id)
    assert r["diff"] <= TOL and r["sensitivity"] > 1e-2
    assert r["vl"].shape[-1] == r["hf"].shape[-1]  # the tokenizer already had <image>: no new rows

    # the processor written beside the model expands <image> to the model's token count
    processor = AutoProcessor.from_pretrained(out)
    from PIL import Image
    enc = processor(images=Image.new("RGB", (40, 30), (200, 10, 10)), text="<image> what color", return_tensors="pt")
    assert int((enc["input_ids"] == image_id).sum()) == 17 and tuple(enc["pixel_values"].shape) == (1, 3, 56, 56)

    # and back: importing the export gives the same logits as the original vlmkit checkpoint
    back = load_checkpoint(import_hf(out, tmp_path / "back")).eval()
    r2 = compare(back, hf, tok, "left", n_tokens=17, image_id=image_id)
    assert r2["diff"] <= TOL


def _word_tokenizer(path, n_words: int):
    """A tokenizer without <image>: 4 specials + ``n_words`` words."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(n_words)])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    t = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                pad_token="<pad>")
    t.save_pretrained(path)
    return t


@pytest.mark.parametrize("vocab_rows, grows", [(40, True), (48, False)])
def test_export_adds_image_token(tmp_path, vocab_rows, grows):
    _word_tokenizer(tmp_path / "tok", 36)  # 40 ids, none of them <image>
    llm_cfg = dict(TINY_LLAMA, hidden_size=64, intermediate_size=128, vocab_size=vocab_rows, bos_token_id=2,
                   eos_token_id=3, pad_token_id=0)
    ckpt = _vlmkit_checkpoint(tmp_path / "vlmkit", {
        "encoders": [{"name": "clip", "args": {"config": "tiny"}}], "connector": "mlp2x_gelu",
        "llm": {"name": "hf", "args": {"config": llm_cfg, "tokenizer": str(tmp_path / "tok")}}})
    out = export_hf(ckpt, tmp_path / "hf")
    hf = LlavaForConditionalGeneration.from_pretrained(out, attn_implementation=ATTN).eval()
    assert hf.config.image_token_index == 40  # the next free id
    rows = hf.get_input_embeddings().weight.shape[0]
    assert rows == (41 if grows else 48)
    assert PreTrainedTokenizerFast.from_pretrained(out).convert_tokens_to_ids("<image>") == 40
    assert (40 in (hf.generation_config.suppress_tokens or [])) == grows

    model = load_checkpoint(ckpt).eval()
    rows_in = [[2, 5, IMAGE_PLACEHOLDER, 6, 7], [2, 8, 9]]
    ids, mask = pad(rows_in, 0, "right")
    hf_ids, hf_mask = pad(expand(rows_in, 40, 16), 0, "right")
    torch.manual_seed(3)
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        vl = model(input_ids=ids, attention_mask=mask, pixel_values={"base": pixels}).logits
        ref = hf(input_ids=hf_ids, attention_mask=hf_mask, pixel_values=pixels).logits
    valid = hf_mask.bool()
    assert (vl - ref[..., :vocab_rows])[valid].abs().max() <= TOL  # every old token's logit is unchanged
    if grows:
        assert torch.all(ref[..., 40] == 0)  # the added row: a constant 0 logit


def test_export_refuses_non_clip_encoder(tmp_path):
    ckpt = _vlmkit_checkpoint(tmp_path / "vlmkit", {"encoders": [{"name": "tiny-conv"}], "connector": "mlp2x_gelu",
                                                    "llm": "tiny-llama"})
    with pytest.raises(ConfigError, match=r"encoder\.0 'tiny-conv': HF Llava export supports only the 'clip', 'siglip' "
                                          r"encoders"):
        export_hf(ckpt, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_export_refuses_fusion(tmp_path):
    clip = {"name": "clip", "args": {"config": "tiny"}}
    ckpt = _vlmkit_checkpoint(tmp_path / "vlmkit", {"encoders": [clip, clip], "fusion": ["concat"],
                                                    "connector": "mlp2x_gelu", "llm": "tiny-llama"})
    with pytest.raises(ConfigError, match=r"fusion: HF Llava has no fusion module; this model has 'concat'") as err:
        export_hf(ckpt, tmp_path / "hf")
    assert "encoders: HF Llava has exactly one vision tower, this model has 2" in str(err.value)


def test_export_refuses_other_connector(tmp_path):
    ckpt = _vlmkit_checkpoint(tmp_path / "vlmkit", {"encoders": [{"name": "clip", "args": {"config": "tiny"}}],
                                                    "connector": "mlp3x_gelu", "llm": "tiny-llama"})
    with pytest.raises(ConfigError, match=r"connector 'mlp3x_gelu': HF Llava's projector is mlp2x_gelu"):
        export_hf(ckpt, tmp_path / "hf")


def test_export_leaves_out_training_objectives(tmp_path, tok):
    from vlmkit.plugins.registry import registry

    if "ross" not in registry.names("objective"):
        pytest.skip("needs an objective with parameters (vlmkit-objectives' 'ross'), which is not installed")
    ckpt = _vlmkit_checkpoint(tmp_path / "vlmkit", {
        "encoders": [{"name": "clip", "args": {"config": "tiny"}}], "connector": "mlp2x_gelu", "llm": "tiny-llama",
        "objectives": ["lm", {"name": "ross", "args": {"vae_config": "tiny", "width": 32, "depth": 1, "heads": 2}}]})
    with pytest.warns(UserWarning, match=r"objective\(s\) ross are training-only"):
        out = export_hf(ckpt, tmp_path / "hf")
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert not any("ross" in k or "denoiser" in k for k in f.keys())
    hf = LlavaForConditionalGeneration.from_pretrained(out, attn_implementation=ATTN).eval()
    r = compare(load_checkpoint(ckpt).eval(), hf, tok, "right", n_tokens=16, image_id=tok.convert_tokens_to_ids("<image>"))
    assert r["diff"] <= TOL


# -- the conversion contract: converters come from plugins, core names no part ------------------------
def _plugin_manager(*plugins):
    """A vlmkit plugin manager holding only ``plugins`` (none: as if no plugin with converters were installed)."""
    import pluggy

    from vlmkit.plugins.hooks import PROJECT, VlmkitHookSpecs

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(VlmkitHookSpecs)
    for p in plugins:
        pm.register(p)
    return pm


def test_converters_are_found_through_the_plugins_hooks():
    from importlib import metadata

    from vlmkit.interop.llava_conversion import llava_converters
    from vlmkit.plugins.hooks import get_plugin_manager
    from vlmkit_encoders.llava import CLIPLlavaVision, CLIPVipLlavaVision, SigLIPLlavaVision
    from vlmkit_fusion.llava import LnMLPVipLlavaProjector, MLP2xGeluLlavaProjector

    eps = {ep.name: ep.value for ep in metadata.entry_points(group="vlmkit.hooks")}
    assert eps["vlmkit-encoders"] == "vlmkit_encoders.hooks" and eps["vlmkit-fusion"] == "vlmkit_fusion.hooks"
    impls = {i.plugin_name for i in get_plugin_manager().hook.vlmkit_llava_converters.get_hookimpls()}
    assert {"vlmkit_encoders.hooks", "vlmkit_fusion.hooks"} <= impls
    found = llava_converters()
    assert [type(c) for c in found.vision] == [CLIPLlavaVision, CLIPVipLlavaVision, SigLIPLlavaVision]
    assert [type(c) for c in found.projector] == [MLP2xGeluLlavaProjector, LnMLPVipLlavaProjector]
    assert found.for_encoder("clip") is found.vision[0] and found.for_encoder("tiny-conv") is None
    assert found.for_encoder("clip-multilayer", "vipllava") is found.vision[1]
    assert found.for_encoder("clip-multilayer") is None  # HF Llava reads one layer
    assert found.for_connector("mlp2x_gelu") is found.projector[0] and found.for_connector("mlp3x_gelu") is None
    assert found.for_connector("ln-mlp2x_gelu", "vipllava") is found.projector[1]


def test_import_names_the_part_no_installed_plugin_converts(hf_reference, tmp_path):
    import vlmkit_encoders.hooks

    src = hf_reference["hf_dir"]
    with pytest.raises(ConfigError, match=r"vision_config\.model_type 'clip_vision_model': no installed plugin "
                                          r"converts this HF vision tower.*no vision converter is installed.*"
                                          r"vlmkit-encoders"):
        import_hf(src, tmp_path / "a", plugin_manager=_plugin_manager())
    with pytest.raises(ConfigError, match=r"multi_modal_projector: no installed plugin converts HF Llava's "
                                          r"projector.*vlmkit-fusion"):
        import_hf(src, tmp_path / "b", plugin_manager=_plugin_manager(vlmkit_encoders.hooks))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # a tower no converter reads is named by its model_type, with the types the installed ones read
    other = _hf_folder(src, tmp_path / "dinov2", config_patch={"vision_config": {"model_type": "dinov2"}})
    with pytest.raises(ConfigError, match=r"model_type 'dinov2'.*installed converters read "
                                          r"'clip_vision_model', 'siglip_vision_model'"):
        import_hf(other, tmp_path / "c")


def test_export_names_the_parts_no_installed_plugin_converts(tmp_path):
    import vlmkit_fusion.hooks

    ckpt = _vlmkit_checkpoint(tmp_path / "vlmkit", {"encoders": [{"name": "clip", "args": {"config": "tiny"}}],
                                                    "connector": "mlp2x_gelu", "llm": "tiny-llama"})
    with pytest.raises(ConfigError) as err:
        export_hf(ckpt, tmp_path / "hf", plugin_manager=_plugin_manager())
    msg = str(err.value)
    assert ("encoder.0 'clip': no installed plugin converts an encoder to HF Llava's vision tower "
            "(install vlmkit-encoders") in msg
    assert ("connector 'mlp2x_gelu': no installed plugin converts a connector to HF Llava's projector "
            "(install vlmkit-fusion") in msg
    with pytest.raises(ConfigError, match=r"encoder\.0 'clip': no installed plugin") as err:
        export_hf(ckpt, tmp_path / "hf", plugin_manager=_plugin_manager(vlmkit_fusion.hooks))
    assert "connector" not in str(err.value)
    assert not (tmp_path / "hf").exists()


def test_a_converter_from_a_hook_decides_the_import(hf_reference, tmp_path, tok):
    """A plugin registered at run time supplies the projector converter: its mapping is what import-hf uses."""
    import vlmkit_encoders.hooks
    from vlmkit.plugins.hooks import hookimpl
    from vlmkit_fusion.llava import MLP2xGeluLlavaProjector

    calls = []

    class ToDepth2Mlp(MLP2xGeluLlavaProjector):
        def component_config(self, hf_config):
            calls.append(hf_config.projector_hidden_act)
            super().component_config(hf_config)
            return ComponentConfig("mlp", {"depth": 2})

    class Plugin:
        @hookimpl
        def vlmkit_llava_converters(self):
            return [ToDepth2Mlp()]

    out = import_hf(hf_reference["hf_dir"], tmp_path / "vlmkit",
                    plugin_manager=_plugin_manager(vlmkit_encoders.hooks, Plugin()))
    assert calls == ["gelu"]
    model = load_checkpoint(out).eval()
    assert model.config.connector.name == "mlp" and model.config.connector.args == {"depth": 2}
    r = compare(model, hf_reference["hf"], tok, "right", n_tokens=16, image_id=tok.convert_tokens_to_ids("<image>"))
    assert r["diff"] <= TOL


def test_a_hook_returning_something_else_is_a_clear_error():
    from vlmkit.interop.llava_conversion import llava_converters
    from vlmkit.plugins.hooks import hookimpl

    class Plugin:
        @hookimpl
        def vlmkit_llava_converters(self):
            return ["not a converter"]

    with pytest.raises(TypeError, match=r"returned builtins\.str, not a LlavaVisionConversion"):
        llava_converters(_plugin_manager(Plugin()))
