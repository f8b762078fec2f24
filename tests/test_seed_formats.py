"""Seed checkpoint formats: import with parity against fixtures made by the ORIGINAL code, export, errors.

The fixtures under ``tests/fixtures/seeds/`` were written by ``scripts/seed_fixtures/llava_original.py make``
running haotian-liu/LLaVA @ c121f043 and WisconsinAIVision/ViP-LLaVA @ 77079b1e unchanged, in their own
environment (transformers 4.37.2, torch 2.13 CPU): a tiny random ``LlavaLlamaForCausalLM`` saved in the
release's exact file layout (``scripts/seed_fixtures/release_layouts.json`` records every folder's file list
and where it comes from; a test below holds each fixture to it): slow tokenizers only (``tokenizer.model``),
pickled shards where the release has them, Ross's VAE inside its shards. Each holds a right-padded batch
(one image, two images, text only) with the original's fp32 logits and greedy tokens per row.

Where the seed environment is present (``VLMKIT_SEED_PYTHON`` and ``VLMKIT_SEED_REPOS``), the exports are
also loaded back through the original code's own ``load_pretrained_model`` (``llava_original.py check``);
elsewhere those tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmkit.errors import CheckpointError, ConfigError
from vlmkit.interop.catalogue import checkpoint_formats, detect_format, export_checkpoint, import_checkpoint
from vlmkit.interop.formats import ImportOptions
from vlmkit.model.checkpoint import load_checkpoint
from vlmkit.model.contracts import IMAGE_PLACEHOLDER

FIXTURES = Path(__file__).parent / "fixtures" / "seeds"
ROOT = Path(__file__).parent.parent
TOL = 1e-5
#: fixture -> the original repository's work tree under VLMKIT_SEED_REPOS
SEEDS = {"llava-1.5": "llava", "vip-llava": "vip", "llava-s2": "densefusion", "convllava": "convllava", "ross": "ross"}
#: the tower folder given as --vision-tower: for S2 the untuned base tower, so that the tuned weights
#: inside the checkpoint must win for the logits to match
TOWERS = {"llava-1.5": "clip-tower", "vip-llava": "clip-tower", "llava-s2": "clip-tower-base",
          "convllava": "vision_tower", "ross": "siglip-tower"}
#: Ross's teacher (FLUX.1-dev's VAE) comes from the release's own shards: nothing to set
SETS: dict[str, list[str]] = {}
LAYOUTS = json.loads((ROOT / "scripts" / "seed_fixtures" / "release_layouts.json").read_text())
#: the fixture script and the environment variable naming the seed's Python, per fixture
SCRIPTS = {name: ("llava_original.py", "VLMKIT_SEED_PYTHON") for name in SEEDS}
SCRIPTS["ross"] = ("ross_original.py", "VLMKIT_SEED_PYTHON_ROSS")


def reference(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / name / "reference.safetensors"))


@pytest.fixture(scope="module", params=sorted(SEEDS))
def imported(request, tmp_path_factory):
    name = request.param
    out = import_checkpoint(FIXTURES / name / "model", tmp_path_factory.mktemp(name) / "ckpt",
                            options=ImportOptions(vision_tower=str(FIXTURES / name / TOWERS[name]),
                                                  sets=SETS.get(name, [])))
    return name, out


def vlmkit_logits(model, ref):
    """vlmkit's logits for the fixture's batch; the text-only row's dummy image (4th) is the original's quirk."""
    ids, mask = ref["input_ids"], ref["attention_mask"]
    n_images = int((ids == IMAGE_PLACEHOLDER).sum())
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values={"base": ref["pixel_values"][:n_images]})
    return out


def test_every_fixture_folder_holds_exactly_the_release_files_on_record():
    """A fixture stands for a release only with the release's exact file set (slow tokenizer files, shards,
    the VAE in Ross's shards); the record says where each list comes from."""
    fixtures = {p.name for p in FIXTURES.iterdir() if p.is_dir()}
    assert fixtures == {k for k in LAYOUTS if not k.startswith("_")}
    for name, folders in ((k, v) for k, v in LAYOUTS.items() if not k.startswith("_")):
        present = {p.name for p in (FIXTURES / name).iterdir() if p.is_dir()}
        assert present == {f for f in folders if f != "."}, name
        for folder, record in folders.items():
            files = sorted(p.name for p in (FIXTURES / name / folder).iterdir() if p.is_file())
            if folder == ".":  # MG-LLaVA's is not a release: the record lists the whole fixture folder
                assert files == sorted(record["files"]), name
            else:
                assert files == sorted(record["files"]), f"{name}/{folder}: {files} != {record['files']}"
            assert record["source"]
    model = FIXTURES / "llava-1.5" / "model"
    assert not (model / "tokenizer.json").exists() and (model / "tokenizer.model").is_file()
    index = json.loads((FIXTURES / "ross" / "model" / "model.safetensors.index.json").read_text())["weight_map"]
    assert sum(k.startswith("model.pixel_decoder.pixel_decoder.") for k in index) > 20


def test_every_fixture_is_detected_as_the_llava_codebase_format():
    for name in SEEDS:
        assert detect_format(FIXTURES / name / "model").name == "llava"


def test_imported_logits_match_the_original_code(imported):
    name, ckpt = imported
    ref = reference(name)
    model = load_checkpoint(ckpt).eval()
    out = vlmkit_logits(model, ref)
    lengths = ref["spliced_lengths"]
    assert out.attention_mask.sum(1).tolist() == lengths.tolist()
    # DenseFusion's (LLaVA v1's) splice keeps each row's padding, so its batch can be wider; the real
    # positions are the first ``spliced_lengths`` of each row in both
    width = min(ref["logits"].shape[1], out.logits.shape[1])
    assert int(lengths.max()) <= width
    theirs = ref["logits"][:, :width]
    valid = torch.arange(width)[None, :] < lengths[:, None]
    diff = (out.logits[:, :width] - theirs)[valid].abs().max().item()
    assert diff <= TOL, f"{name}: max |logit diff| {diff:.2e} against the original code"
    # the comparison sees the images: other pixels give other logits
    swapped = dict(ref, pixel_values=ref["pixel_values"].flip(0))
    moved = (vlmkit_logits(model, swapped).logits[:, :width] - theirs)[valid].abs().max().item()
    assert moved > 1e-3


def test_imported_greedy_generation_matches_the_original_code(imported):
    name, ckpt = imported
    ref = reference(name)
    model = load_checkpoint(ckpt).eval()
    ids, mask, pixels = ref["input_ids"], ref["attention_mask"], ref["pixel_values"]
    image = 0
    for row in range(ids.shape[0]):
        r = ids[row][mask[row].bool()][None]
        n = int((r == IMAGE_PLACEHOLDER).sum())
        px = {"base": pixels[image:image + n]} if n else None
        image += max(n, 1)
        ours = model.generate(r, torch.ones_like(r), px, max_new_tokens=6)[0].tolist()
        theirs = [t for t in ref["generated"][row].tolist() if t != -1]
        assert ours[:len(theirs)] == theirs, f"{name} row {row}"


def test_imported_checkpoint_records_its_origin_and_prompts_like_the_authors(imported):
    name, ckpt = imported
    from vlmkit.model.checkpoint import read_checkpoint_config

    origin = read_checkpoint_config(ckpt)["imported_from"]
    assert origin["format"] == "llava" and origin["path"].endswith(f"{name}/model")
    model = load_checkpoint(ckpt)
    assert model.config.template == ("chat_template" if name == "ross" else "vicuna_v1")  # Qwen2: its own
    assert list(model.objectives) == (["lm", "ross"] if name == "ross" else ["lm"])
    assert model.encoders[0].view.resize == "pad"  # image_aspect_ratio: pad
    expected = {"llava-1.5": ("clip", "MLP2xGELU"), "vip-llava": ("clip-multilayer", "ln_mlp2x_gelu"),
                "llava-s2": ("s2", "MLP2xGELU"), "convllava": ("convnext5", "MLP2xGELU"),
                "ross": ("siglip", "MLP2xGELU")}[name]
    assert model.config.encoders[0].name.split(":")[-1] == expected[0]
    assert type(model.connectors[0]).__name__ == expected[1]


def test_export_then_import_is_exact(imported, tmp_path):
    name, ckpt = imported
    exported = export_checkpoint(ckpt, tmp_path / "exported", format="llava")
    config = json.loads((exported / "config.json").read_text())
    if name == "ross":
        assert config["architectures"] == ["RossQwen2ForCausalLM"] and config["model_type"] == "ross_qwen2"
        assert config["mm_inv_projector_type"] == "denoiser_vit1x" and config["mm_inv_hidden_size"] == 64
    else:
        assert config["architectures"] == ["LlavaLlamaForCausalLM"] and config["model_type"] == "llava_llama"
    towers = [p for p in exported.iterdir() if p.is_dir()]
    assert len(towers) == 1 and (towers[0] / "model.safetensors").is_file() and (towers[0] / "config.json").is_file()
    # the tokenizer as the release shipped it (what the original's use_fast=False loader reads), byte for byte
    release = FIXTURES / name / "model"
    slow = {"tokenizer.model", "special_tokens_map.json", "tokenizer_config.json", "vocab.json", "merges.txt",
            "added_tokens.json"}
    shipped = sorted(p.name for p in release.iterdir() if p.name in slow)
    assert sorted(p.name for p in exported.iterdir() if p.name in slow | {"tokenizer.json"}) == shipped
    assert all((exported / f).read_bytes() == (release / f).read_bytes() for f in shipped)
    # the export names its tower so that the import finds it again without --vision-tower
    back = import_checkpoint(exported, tmp_path / "back", options=ImportOptions(sets=SETS.get(name, [])))
    a, b = load_checkpoint(ckpt).state_dict(), load_checkpoint(back).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _seed_env(name: str) -> tuple[str, Path] | None:
    python, repos = os.environ.get(SCRIPTS[name][1]), os.environ.get("VLMKIT_SEED_REPOS")
    if not python or not repos or not Path(python).is_file():
        return None
    return python, Path(repos)


def test_export_reloads_in_the_original_code_with_equal_logits(imported, tmp_path):
    name, ckpt = imported
    if _seed_env(name) is None:
        pytest.skip(f"needs the seed's own environment (transformers 4.37/4.43 and the original repositories, "
                    f"which CI cannot download): set {SCRIPTS[name][1]} and VLMKIT_SEED_REPOS, see "
                    "scripts/seed_fixtures/README.md")
    python, repos = _seed_env(name)  # type: ignore[misc]
    # through the original's own load_pretrained_model, which picks the class by the folder's name, as a
    # release's ('llava-v1.5-7b', 'ross-qwen2-7b') does
    exported = export_checkpoint(ckpt, tmp_path / ("ross-qwen2-export" if name == "ross" else "llava-export"),
                                 format="llava")
    script, _ = SCRIPTS[name]
    extra = [] if name == "ross" else ["--extra-path", str(repos / "s2")]
    proc = subprocess.run([python, str(ROOT / "scripts" / "seed_fixtures" / script), "check",
                           "--repo", str(repos / SEEDS[name]), *extra,
                           "--fixture", str(FIXTURES / name), str(exported)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["max_abs_logit_diff"] <= TOL and result.get("max_abs_eps_diff", 0.0) <= TOL
    assert result["greedy_tokens_equal"] and result["tokenizer_size"] == reference(name)["logits"].shape[-1]


def test_the_ross_denoiser_predicts_what_the_original_predicts(tmp_path):
    """Ross's mm_inv_projector becomes the ross objective's denoiser: the same eps for the same x_t, t and
    LLM hidden states (after ln_pre), against the original RossDenoiser.net."""
    name = "ross"
    ckpt = import_checkpoint(FIXTURES / name / "model", tmp_path / "ckpt", options=ImportOptions(
        vision_tower=str(FIXTURES / name / TOWERS[name]), sets=SETS.get(name, [])))
    ref = reference(name)
    objective = load_checkpoint(ckpt).eval().objectives["ross"]
    with torch.no_grad():
        cond = objective.denoiser.embed_condition(objective.ln_pre(ref["denoiser_hidden"]))
        eps = objective.denoiser(ref["denoiser_x_t"], ref["denoiser_timesteps"], cond)
    diff = (eps - ref["denoiser_eps"]).abs().max().item()
    assert diff <= TOL, f"max |eps diff| {diff:.2e}"
    assert ref["denoiser_eps"].abs().max() > 1e-2  # the perturbed adaLN-Zero layers make a non-zero output


def test_the_ross_teacher_is_read_from_the_release_shards_and_equals_the_vae_folder(tmp_path, caplog):
    """Ross's release holds its frozen FLUX VAE in the shards (model.pixel_decoder.*): the import makes it the
    ross objective's teacher (no vae_path needed), and it equals AutoencoderKL.from_pretrained(pretrained_vae)."""
    import logging

    from diffusers import AutoencoderKL

    from vlmkit.model.checkpoint import read_checkpoint_config

    src = _copy_model("ross", tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    config["mm_pixel_decoder"] = str(FIXTURES / "ross" / "pretrained_vae")  # where the VAE's own folder is here
    (src / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.INFO, logger="vlmkit_objectives.vae"):
        ckpt = import_checkpoint(src, tmp_path / "ckpt", options=ImportOptions(
            vision_tower=str(FIXTURES / "ross" / "siglip-tower")))
    assert "the VAE in the checkpoint equals" in caplog.text
    args = read_checkpoint_config(ckpt)["model"]["objectives"][1]["args"]
    assert args["vae_path"] == "{checkpoint}/pixel_decoder"  # inside the checkpoint, which can move
    moved = shutil.move(str(ckpt), str(tmp_path / "moved"))
    teacher = load_checkpoint(moved).objectives["ross"]
    assert teacher.teacher_ready
    theirs = AutoencoderKL.from_pretrained(str(FIXTURES / "ross" / "pretrained_vae")).state_dict()
    ours = teacher.vae.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # without the folder (the released config names ./pretrained_vae), the config is read off the tensors
    plain = load_checkpoint(import_checkpoint(FIXTURES / "ross" / "model", tmp_path / "plain", options=ImportOptions(
        vision_tower=str(FIXTURES / "ross" / "siglip-tower")))).objectives["ross"].vae.state_dict()
    assert all(torch.equal(plain[k], theirs[k]) for k in theirs)


def test_a_slow_tokenizer_without_its_packages_is_an_error_naming_them(tmp_path, monkeypatch):
    """transformers falls back to tiktoken when it cannot convert tokenizer.model; vlmkit names the packages."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("sentencepiece", "google.protobuf") else real(name, *a))
    with pytest.raises(ConfigError, match=r"tokenizer\.model is a slow SentencePiece tokenizer .*needs the package\(s\) "
                                          r"sentencepiece, protobuf.*pip install sentencepiece protobuf"):
        import_checkpoint(FIXTURES / "llava-1.5" / "model", tmp_path / "out",
                          options=ImportOptions(vision_tower=str(FIXTURES / "llava-1.5" / "clip-tower")))


def test_an_export_of_a_tokenizer_without_a_slow_form_warns_that_the_original_loader_cannot_read_it(tmp_path):
    from vlmkit.model.assembly import build_model
    from vlmkit.model.checkpoint import save_checkpoint
    from vlmkit.model.config import ComponentConfig, ModelConfig

    cfg = ModelConfig(encoders=[ComponentConfig("clip", {"config": "tiny"})], connector=ComponentConfig("mlp2x_gelu"))
    ckpt = save_checkpoint(build_model(cfg, pretrained=False), tmp_path / "ckpt")
    with pytest.warns(UserWarning, match=r"no slow form.*use_fast=False"):
        out = export_checkpoint(ckpt, tmp_path / "out", format="llava")
    assert (out / "tokenizer.json").is_file() and not (out / "tokenizer.model").exists()


# -- bad input ------------------------------------------------------------------------------------
def _empty_hub_cache(monkeypatch) -> None:
    """As on a machine whose Hugging Face cache lacks the tower (whatever this one's holds)."""
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "cached_file", lambda *args, **kwargs: None)


def _copy_model(name: str, dst: Path) -> Path:
    shutil.copytree(FIXTURES / name / "model", dst)
    return dst


def test_a_tower_named_by_an_uncached_hub_id_is_an_error_naming_the_field_and_the_flag(tmp_path, monkeypatch):
    _empty_hub_cache(monkeypatch)
    with pytest.raises(ConfigError, match=r"mm_vision_tower 'openai/clip-vit-large-patch14-336' is not a local "
                                          r"folder.*--vision-tower PATH"):
        import_checkpoint(FIXTURES / "llava-1.5" / "model", tmp_path / "out")


def test_a_tower_in_the_checkpoint_is_used_when_its_architecture_is_known(tmp_path, monkeypatch):
    """ViP keeps its tower in the checkpoint; without --vision-tower the known CLIP-L/336 architecture is
    assumed, which this tiny tower does not fit: the error names the tensor and both shapes."""
    _empty_hub_cache(monkeypatch)
    with pytest.raises(CheckpointError, match=r"vip-llava/model/pytorch_model-0000\d-of-00003\.bin: tensor '.*' has shape "
                                              r"\[\d+.*needs \[\d+"):
        import_checkpoint(FIXTURES / "vip-llava" / "model", tmp_path / "out")


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    from safetensors.torch import save_file

    from vlmkit.interop.weights import WeightFiles

    src = _copy_model("vip-llava", tmp_path / "src")
    shards = WeightFiles.in_folder(src)  # the release's pickled shards, as one safetensors file to edit
    tensors = dict(shards.read(shards.headers()))
    for f in [*src.glob("pytorch_model*")]:
        f.unlink()

    dropped = dict(tensors)
    dropped.pop("model.mm_projector.clip_layernorm.bias")
    save_file(dropped, str(src / "model.safetensors"))
    opts = ImportOptions(vision_tower=str(FIXTURES / "vip-llava" / "clip-tower"))
    with pytest.raises(CheckpointError, match=r"missing 1 weight\(s\) for vlmkit's connectors\.0\.proj\.0\.bias"):
        import_checkpoint(src, tmp_path / "out", options=opts)
    save_file(dict(tensors, **{"lm_head.mystery": torch.zeros(2)}), str(src / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"no place in the model, e\.g\. lm_head\.mystery"):
        import_checkpoint(src, tmp_path / "out2", options=opts)
    save_file(dict(tensors, **{"model.mystery.weight": torch.zeros(2)}), str(src / "model.safetensors"))
    with pytest.raises(ConfigError, match=r"holds model\.mystery\.\*, which no installed plugin converts"):
        import_checkpoint(src, tmp_path / "out3", options=opts)


def test_an_undetectable_folder_lists_the_known_formats_and_what_was_found(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ConfigError, match=r"found architectures=\['BertModel'\], model_type='bert'.*known formats: "
                                          r".*hf-llava: .*llava: config\.json has mm_vision_tower"):
        import_checkpoint(src, tmp_path / "out")


def test_unsupported_fields_are_refused_by_name(tmp_path, monkeypatch):
    _empty_hub_cache(monkeypatch)
    tower = str(FIXTURES / "llava-1.5" / "clip-tower")
    for field, value, message, given in [
        ("image_aspect_ratio", "crop_split", r"image_aspect_ratio 'crop_split' is not supported", tower),
        ("image_aspect_ratio", "anyres", r"image_aspect_ratio 'anyres' without image_grid_pinpoints", tower),
        ("mm_patch_merge_type", "spatial_unpad", r"mm_patch_merge_type 'spatial_unpad' needs image_aspect_ratio "
                                                 r"'anyres'", tower),
        ("mm_projector_type", "qformer", r"mm_projector_type 'qformer': no installed plugin", tower),
        ("mm_vision_tower", "facebook/dinov2-large", r"mm_vision_tower 'facebook/dinov2-large': no installed", None),
    ]:
        src = _copy_model("llava-1.5", tmp_path / f"{field}-{value.replace('/', '_')}")
        config = json.loads((src / "config.json").read_text())
        config[field] = value
        (src / "config.json").write_text(json.dumps(config))
        with pytest.raises(ConfigError, match=message):
            import_checkpoint(src, tmp_path / f"out-{field}-{value.replace('/', '_')}",
                              options=ImportOptions(vision_tower=given))


def test_a_pickled_shard_that_would_run_code_is_refused(tmp_path):
    src = _copy_model("llava-1.5", tmp_path / "src")

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    shard = sorted(src.glob("pytorch_model-*.bin"))[0]
    torch.save({"model.embed_tokens.weight": Payload()}, shard)
    with pytest.raises(CheckpointError, match=rf"{shard.name}: refused: torch\.load\(weights_only=True\)"):
        import_checkpoint(src, tmp_path / "out",
                          options=ImportOptions(vision_tower=str(FIXTURES / "llava-1.5" / "clip-tower")))
    assert not (tmp_path / "pwned").exists()


def test_export_refuses_what_the_format_cannot_express(tmp_path):
    from vlmkit.model.assembly import build_model
    from vlmkit.model.checkpoint import save_checkpoint
    from vlmkit.model.config import ComponentConfig, ModelConfig

    cfg = ModelConfig(encoders=[ComponentConfig("convnext", {"config": "tiny"})], connector=ComponentConfig("mlp2x_gelu"))
    ckpt = save_checkpoint(build_model(cfg, pretrained=False), tmp_path / "ckpt")
    with pytest.raises(ConfigError, match=r"cannot be written as llava: encoder\.0 'convnext': the LLaVA codebase "
                                          r"format supports only the 'clip', 'clip-multilayer', 'convnext5', 's2'"):
        export_checkpoint(ckpt, tmp_path / "out", format="llava")
    with pytest.raises(ConfigError, match=r"unknown checkpoint format 'nope'; installed: .*hf-llava.*llava"):
        export_checkpoint(ckpt, tmp_path / "out", format="nope")


def test_formats_are_listed_with_their_detection_rules():
    formats = checkpoint_formats()
    assert {"hf-llava", "llava"} <= set(formats)
    for fmt in formats.values():
        s = fmt.summary()
        assert s["detection"] and s["description"] and s["import"] is True


def test_the_fixture_script_is_not_importable_from_vlmkit():
    """The original code stays outside: no vlmkit module imports the seed repositories."""
    import re

    text = "\n".join(p.read_text() for p in ROOT.glob("vlmkit-*/src/**/*.py"))
    assert not re.search(r"^\s*(from llava[. ]|import llava\b)", text, re.MULTILINE)
    assert sys.modules.get("llava") is None


def test_a_tower_named_by_a_hub_id_is_found_in_the_offline_cache(tmp_path):
    """LLaVA-1.5 names openai/clip-vit-large-patch14-336; a copy in the Hugging Face cache is used, offline.
    Run in a fresh process: the hub libraries read the cache location when they are first imported."""
    home = tmp_path / "hf-home"
    snapshot = home / "hub" / "models--openai--clip-vit-large-patch14-336" / "snapshots" / ("0" * 40)
    shutil.copytree(FIXTURES / "llava-1.5" / "clip-tower", snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    proc = subprocess.run([sys.executable, "-m", "vlmkit_cli", "import", str(FIXTURES / "llava-1.5" / "model"),
                           str(tmp_path / "ckpt")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from vlmkit.model.checkpoint import read_checkpoint_config

    assert read_checkpoint_config(tmp_path / "ckpt")["imported_from"]["vision_tower"] == str(snapshot)


def test_code_in_the_folder_is_never_run(tmp_path):
    """auto_map names Python in the folder: the import warns and never imports it (nor the tokenizer's)."""
    src = _copy_model("llava-1.5", tmp_path / "src")
    (src / "modeling_evil.py").write_text(f"open({str(tmp_path / 'pwned')!r}, 'w').write('x')\n")
    config = json.loads((src / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil", "AutoConfig": "modeling_evil.Cfg"}
    (src / "config.json").write_text(json.dumps(config))
    tok = json.loads((src / "tokenizer_config.json").read_text())
    tok["auto_map"] = {"AutoTokenizer": ["modeling_evil.Tok", None]}
    (src / "tokenizer_config.json").write_text(json.dumps(tok))
    with pytest.warns(UserWarning, match=r"auto_map.*never runs it"):
        import_checkpoint(src, tmp_path / "out",
                          options=ImportOptions(vision_tower=str(FIXTURES / "llava-1.5" / "clip-tower")))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name, target, reason", [
    ("convllava", "hf-llava", r"encoder\.0 'convnext5': HF Llava export supports only the 'clip', 'siglip' encoders"),
    ("llava-s2", "hf-llava", r"encoder\.0 's2': HF Llava export supports only the 'clip', 'siglip' encoders"),
    ("ross", "hf-vip-llava", r"encoder\.0 'siglip'"),
    ("vip-llava", "hf-llava", r"encoder\.0 'clip-multilayer'"),
])
def test_exports_a_release_does_not_allow_are_refused_with_the_reason(name, target, reason, tmp_path):
    ckpt = import_checkpoint(FIXTURES / name / "model", tmp_path / "ckpt", options=ImportOptions(
        vision_tower=str(FIXTURES / name / TOWERS[name]), sets=SETS.get(name, [])))
    with pytest.raises(ConfigError, match=rf"cannot be written as {target}: .*({reason})"):
        export_checkpoint(ckpt, tmp_path / "out", format=target)


def test_a_siglip_release_exports_as_transformers_llava_with_its_logits(tmp_path):
    """Ross (a SigLIP tower read at layer -2, no CLS, and a Qwen2 LLM) written as transformers'
    LlavaForConditionalGeneration (strategy 'full', as llava-interleave's SigLIP Llavas are): its denoiser is left
    out with a warning, and transformers gives the original's logits on the fixture's batch."""
    from transformers import LlavaForConditionalGeneration

    ckpt = import_checkpoint(FIXTURES / "ross" / "model", tmp_path / "ckpt",
                             options=ImportOptions(vision_tower=str(FIXTURES / "ross" / "siglip-tower")))
    with pytest.warns(UserWarning, match="ross are training-only"):
        out = export_checkpoint(ckpt, tmp_path / "hf", format="hf-llava")
    hf = LlavaForConditionalGeneration.from_pretrained(out, attn_implementation="sdpa").eval()
    assert hf.config.vision_feature_select_strategy == "full" and hf.config.vision_feature_layer == -2
    ref = reference("ross")
    image_id = int(getattr(hf.config, "image_token_id", None) or hf.config.image_token_index)
    rows = [r[m.bool()].tolist() for r, m in zip(ref["input_ids"], ref["attention_mask"])]
    n_tokens = 16
    expanded = [[t for x in r for t in ([image_id] * n_tokens if x == IMAGE_PLACEHOLDER else [x])] for r in rows]
    width = max(len(r) for r in expanded)
    pad = int(hf.config.text_config.pad_token_id or 0)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in expanded])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in expanded])
    n_images = sum(r.count(IMAGE_PLACEHOLDER) for r in rows)
    with torch.no_grad():
        logits = hf(input_ids=ids, attention_mask=mask, pixel_values=ref["pixel_values"][:n_images]).logits
    w = min(width, ref["logits"].shape[1])
    valid = mask.bool()[:, :w]
    vocab = ref["logits"].shape[-1]
    assert (logits[:, :w, :vocab] - ref["logits"][:, :w])[valid].abs().max().item() <= TOL
