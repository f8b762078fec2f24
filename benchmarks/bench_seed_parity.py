"""Parity of imported seed checkpoints with the ORIGINAL code: the numbers the README's "Released models in
and out" table states.

Each fixture under ``tests/fixtures/seeds/`` was written by the seed system's own repository, unchanged, in
its own environment (``scripts/seed_fixtures/``): a tiny random model saved as the releases are saved, a
right-padded batch (one image, two images, text only), the original's fp32 logits and greedy tokens. This
script imports each with ``vlmkit import``'s code path and measures, on the fixture's batch:

* the largest absolute logit difference over the real (unpadded) positions;
* whether greedy generation gives the original's tokens, row by row;
* whether export followed by import gives back every tensor exactly (max abs difference over all weights);
* for Ross, the largest absolute difference of the denoiser's predicted noise;
* where the seeds' environments are present (``VLMKIT_SEED_PYTHON``, ``VLMKIT_SEED_PYTHON_ROSS``,
  ``VLMKIT_SEED_REPOS``; see ``scripts/seed_fixtures/README.md``), the export loaded back through the original
  code's own ``load_pretrained_model`` (its slow tokenizer, its class, its tower loading): max |logit diff| and
  greedy tokens against the fixture.

The fixtures are in each release's exact file layout (``scripts/seed_fixtures/release_layouts.json``): slow
tokenizer files only, pickled shards where the release has them, Ross's VAE inside its shards.

The tests assert each difference <= 1e-5 (``tests/test_seed_formats.py``); this script records the values.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FIXTURES = common.ROOT / "tests" / "fixtures" / "seeds"
#: fixture -> (the seed system and commit, its tower folder given as --vision-tower, --set assignments)
SEEDS = {
    "llava-1.5": ("LLaVA-1.5 (haotian-liu/LLaVA c121f043, .bin shards)", "clip-tower", []),
    "vip-llava": ("ViP-LLaVA (77079b1e, .bin shards)", "clip-tower", []),
    "llava-s2": ("DenseFusion-S2 (71c55d3b + s2wrapper 9c008a37)", "clip-tower-base", []),
    "convllava": ("ConvLLaVA (3e7ae574)", "vision_tower", []),
    "ross": ("Ross (20ffc6b7, Qwen2 + SigLIP + denoiser, VAE in the shards)", "siglip-tower", []),
}
#: the fixture script and its environment variable, and the original repository's folder under VLMKIT_SEED_REPOS
ORIGINALS = {"llava-1.5": "llava", "vip-llava": "vip", "llava-s2": "densefusion", "convllava": "convllava",
             "ross": "ross"}
TOL = 1e-5


def _logits(model, ref, pixel_values=None):
    from vlmkit.model.contracts import IMAGE_PLACEHOLDER

    ids, mask = ref["input_ids"], ref["attention_mask"]
    n_images = int((ids == IMAGE_PLACEHOLDER).sum())
    pixels = ref["pixel_values"] if pixel_values is None else pixel_values
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, pixel_values={"base": pixels[:n_images]})


def _logit_diff(model, ref) -> float:
    out = _logits(model, ref)
    lengths = ref["spliced_lengths"]
    width = min(ref["logits"].shape[1], out.logits.shape[1])
    valid = torch.arange(width)[None, :] < lengths[:, None]
    return float((out.logits[:, :width] - ref["logits"][:, :width])[valid].abs().max())


def _greedy_equal(model, ref) -> bool:
    from vlmkit.model.contracts import IMAGE_PLACEHOLDER

    ids, mask, pixels = ref["input_ids"], ref["attention_mask"], ref["pixel_values"]
    image, same = 0, True
    for row in range(ids.shape[0]):
        r = ids[row][mask[row].bool()][None]
        n = int((r == IMAGE_PLACEHOLDER).sum())
        px = {"base": pixels[image:image + n]} if n else None
        image += max(n, 1)
        ours = model.generate(r, torch.ones_like(r), px, max_new_tokens=6)[0].tolist()
        theirs = [t for t in ref["generated"][row].tolist() if t != -1]
        same &= ours[:len(theirs)] == theirs
    return same


def _round_trip_diff(ckpt: Path, work: Path, sets: list[str]) -> float:
    """Export, then import the export as it stands (it ships its tower folder, so no --vision-tower)."""
    from vlmkit.interop.catalogue import export_checkpoint, import_checkpoint
    from vlmkit.interop.formats import ImportOptions
    from vlmkit.model.checkpoint import load_checkpoint

    exported = export_checkpoint(ckpt, work / "exported", format="llava")
    again = import_checkpoint(exported, work / "again", options=ImportOptions(sets=sets))
    a, b = load_checkpoint(ckpt).state_dict(), load_checkpoint(again).state_dict()
    if set(a) != set(b):
        return float("inf")
    return max(float((a[k].float() - b[k].float()).abs().max()) if a[k].numel() else 0.0 for k in a)


def _original_loader(name: str, ckpt: Path, work: Path) -> dict | None:
    """The export loaded through the original's load_pretrained_model (None where its environment is absent)."""
    import json
    import os
    import subprocess

    from vlmkit.interop.catalogue import export_checkpoint

    script, var = ("ross_original.py", "VLMKIT_SEED_PYTHON_ROSS") if name == "ross" else \
        ("llava_original.py", "VLMKIT_SEED_PYTHON")
    python, repos = os.environ.get(var), os.environ.get("VLMKIT_SEED_REPOS")
    if not python or not repos:
        return None
    exported = export_checkpoint(ckpt, work / ("ross-qwen2-export" if name == "ross" else "llava-export"),
                                 format="llava")
    extra = [] if name == "ross" else ["--extra-path", str(Path(repos) / "s2")]
    proc = subprocess.run([python, str(common.ROOT / "scripts" / "seed_fixtures" / script), "check", "--repo",
                           str(Path(repos) / ORIGINALS[name]), *extra, "--fixture", str(FIXTURES / name),
                           str(exported)], capture_output=True, text=True, timeout=900)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    args = common.parser(__doc__.splitlines()[0], "seed_parity.json").parse_args()
    torch.set_num_threads(1)
    from vlmkit.interop.catalogue import import_checkpoint
    from vlmkit.interop.formats import ImportOptions
    from vlmkit.model.checkpoint import load_checkpoint

    names = ["llava-1.5"] if args.quick else list(SEEDS)
    metrics, rows = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            system, tower_dir, sets = SEEDS[name]
            tower = FIXTURES / name / tower_dir
            work = Path(tmp) / name
            common.log(f"{name}: import")
            ckpt = import_checkpoint(FIXTURES / name / "model", work / "ckpt",
                                     options=ImportOptions(vision_tower=str(tower), sets=sets))
            model = load_checkpoint(ckpt).eval()
            ref = load_file(str(FIXTURES / name / "reference.safetensors"))
            row = {"system": system, "max_abs_logit_diff": _logit_diff(model, ref),
                   "greedy_tokens_equal": _greedy_equal(model, ref),
                   "export_import_max_abs_diff": _round_trip_diff(ckpt, work, sets)}
            original = _original_loader(name, ckpt, work)
            if original is not None:
                row["original_loader"] = {k: original[k] for k in ("ok", "max_abs_logit_diff", "greedy_tokens_equal",
                                                                   "tokenizer", "max_abs_eps_diff") if k in original}
            if "denoiser_eps" in ref:
                objective = model.objectives["ross"]
                with torch.no_grad():
                    cond = objective.denoiser.embed_condition(objective.ln_pre(ref["denoiser_hidden"]))
                    eps = objective.denoiser(ref["denoiser_x_t"], ref["denoiser_timesteps"], cond)
                row["denoiser_max_abs_eps_diff"] = float((eps - ref["denoiser_eps"]).abs().max())
            rows[name] = row
            common.log(f"{name}: {row}")
            metrics.append(common.metric(f"{name}: max |logit diff| vs the original", row["max_abs_logit_diff"],
                                         "abs logit", target=f"<= {TOL}", detail=row))
            if "denoiser_max_abs_eps_diff" in row:
                metrics.append(common.metric(f"{name}: max |denoiser eps diff| vs the original",
                                             row["denoiser_max_abs_eps_diff"], "abs", target=f"<= {TOL}"))
    common.write_result(
        args.out, "seed_parity", title="Imported seed checkpoints vs their original code (fp32, CPU)",
        quick=args.quick, command=common.command_line(__file__, sys.argv[1:]),
        config={"fixtures": names, "tolerance": TOL, "torch_threads": 1}, metrics=metrics,
        method=__doc__ or "", extra={"rows": rows},
        notes=["greedy_tokens_equal and export_import_max_abs_diff are in each metric's detail"])


if __name__ == "__main__":
    main()
