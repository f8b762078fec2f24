"""Training-step cost of the ``ross`` objective: the same model with and without it, interleaved.

Three models per config, built from the same seed: ``lm`` only (reference), ``lm + ross`` (VAE encoder
every step) and ``lm + ross`` with a latent cache built beforehand by ``build_latent_cache``. Each step
is forward + backward + AdamW step on one fixed batch of synthetic images; the variants run in
alternating order (``common.interleave``) and the claim is the median of per-round ratios.

Measured configs are CPU-sized (no GPU in this environment). At those sizes the LLM is tiny, so the
ross overhead is far larger than at paper scale; the paper-scale overhead is therefore also given as a
FLOP count (``torch.utils.flop_counter`` on the meta device: exact FLOPs of the real modules, not a
timing), clearly labelled as an estimate.

    python benchmarks/bench_ross.py                  # writes docs/benchmarks/ross-overhead.md
    python benchmarks/bench_ross.py --quick          # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleave, machine_info, paired_ratio, spread  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    # the embedded tiny model: 4x4 tokens, Llama d=128 x 2 layers (0.5M), ross width 128 x 2
    "tiny": {
        "encoders": [{"name": "tiny-conv"}], "connector": "mlp2x_gelu", "llm": "tiny-llama",
        "ross": {"vae_config": "tiny", "width": 128, "depth": 2, "heads": 4}, "image": 64,
    },
    # paper proportions at CPU size: 8x8 tokens, Llama d=512 x 6 layers (~19M), a depth-3 denoiser
    # with ~1% of the LLM's parameters (the paper's 64M / 6.7B)
    "scaled": {
        "encoders": [{"name": "tiny-conv", "args": {"image_size": 128, "width": 128}}], "connector": "mlp2x_gelu",
        "llm": {"name": "tiny-llama", "args": {"hidden_size": 512, "num_layers": 6, "num_heads": 8,
                                               "intermediate_size": 1376}},
        "ross": {"vae_config": "tiny", "width": 64, "depth": 3, "heads": 4}, "image": 128,
    },
}
QUICK = {"tiny": CONFIGS["tiny"]}


def build(cfg: dict[str, Any], ross: dict[str, Any] | None):
    from vlmkit.model.assembly import build_model
    from vlmkit.model.config import ModelConfig

    objectives: list[Any] = ["lm"] + ([{"name": "ross", "args": ross}] if ross is not None else [])
    torch.manual_seed(0)
    return build_model(ModelConfig.from_dict({"encoders": cfg["encoders"], "connector": cfg["connector"],
                                              "llm": cfg["llm"], "objectives": objectives, "max_length": 512}))


def dataset(n: int, size: int):
    from PIL import Image, ImageDraw

    from vlmkit.data.samples import Sample
    from vlmkit.data.templates import Turn

    colours = [(220, 30, 30), (30, 190, 60), (40, 60, 220), (230, 210, 40)]
    out = []
    for i in range(n):
        img = Image.new("RGB", (size, size), (128, 128, 128))
        x, y, s = (i % 2) * size // 2, (i // 2 % 2) * size // 2, size // 2
        ImageDraw.Draw(img).rectangle([x + 4, y + 4, x + s - 5, y + s - 5], fill=colours[i % 4])
        out.append(Sample(id=f"s{i}", turns=[Turn("user", "<image>\nDescribe the picture."),
                                              Turn("assistant", f"a square of colour {i % 4} in corner {i // 2 % 2}")],
                          images=[img]))
    return out


def step_flops(model, batch) -> float:
    """FLOPs of one forward + backward (the optimizer step is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def trainer(model, batch):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> None:
        out = model(**batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    return step


def measure(name: str, cfg: dict[str, Any], batch_size: int, repeats: int) -> dict[str, Any]:
    from vlmkit.data.processing import MultimodalProcessor, collate
    from vlmkit_objectives.latent_cache import build_latent_cache

    base, ross = build(cfg, None), build(cfg, cfg["ross"])
    data = dataset(batch_size, cfg["image"])
    proc = MultimodalProcessor.for_model(base)
    batch = collate([proc(s.turns, s.images) for s in data], base.tokenizer.pad_token_id, views=list(base.views))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = build_latent_cache(ross, data, Path(tmp) / "latents", progress=False)
        cache_build_s = time.perf_counter() - t0
        cached = build(cfg, {**cfg["ross"], "latent_cache": str(path)})
        steps = {"lm": trainer(base, batch), "lm+ross": trainer(ross, batch),
                 "lm+ross (cached latents)": trainer(cached, batch)}
        times = interleave(steps, repeats, warmup=2)
        flops = {"lm": step_flops(base, batch), "lm+ross": step_flops(ross, batch),
                 "cached": step_flops(cached, batch)}
        tokens = int(base(**batch).attention_mask.sum())
    params = {k: sum(p.numel() for p in m.parameters() if p.requires_grad)
              for k, m in (("lm", base), ("lm+ross", ross))}
    return {
        "config": name, "batch": batch_size, "tokens": tokens,
        "flop_ratio": flops["lm+ross"] / flops["lm"], "flop_ratio_cached": flops["cached"] / flops["lm"],
        "trainable": params, "cache_build_s": cache_build_s,
        "times": {k: spread(v) for k, v in times.items()},
        "ratio": paired_ratio(times["lm+ross"], times["lm"]),
        "ratio_cached": paired_ratio(times["lm+ross (cached latents)"], times["lm"]),
    }


def paper_flops(seq_lens: tuple[int, ...] = (640, 1024)) -> dict[str, float]:
    """FLOPs per sample of each part of a CLIP-L/336 + Vicuna-7B + Ross step, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from vlmkit.model.assembly import build_model
    from vlmkit.model.config import ModelConfig
    from vlmkit.plugins.registry import registry

    model = build_model(ModelConfig.from_dict(registry.load("preset", "ross")), meta=True)
    obj = model.objectives["ross"]
    d = model.llm.hidden_size

    def count(fn) -> float:
        with FlopCounterMode(display=False) as fc:
            fn()
        return float(fc.get_total_flops())

    def llm_step(seq_len: int) -> None:
        emb = torch.zeros(1, seq_len, d, device="meta", requires_grad=True)
        logits, _, _ = model.llm(emb, None, torch.arange(seq_len, device="meta")[None])
        logits.float().sum().backward()

    pixels = torch.zeros(1, 3, 336, 336, device="meta")
    out: dict[str, float] = {}
    with torch.no_grad():
        out["clip (frozen, forward)"] = count(lambda: model.encoders[0](pixels))
    for n in seq_lens:
        model.llm.requires_grad_(True)
        out[f"llm fwd+bwd, {n} tokens (fine-tune: LLM trains)"] = count(lambda n=n: llm_step(n))
        model.llm.requires_grad_(False)
        out[f"llm fwd+bwd, {n} tokens (pretrain: LLM frozen)"] = count(lambda n=n: llm_step(n))
    out["vae encoder (384 px, fp32)"] = count(lambda: obj.latent_moments(pixels, (24, 24)))
    hidden = torch.zeros(1, 576, d, device="meta", requires_grad=True)
    x0 = torch.zeros(1, 64, 24, 24, device="meta")
    out["denoiser fwd+bwd (K=4 draws)"] = count(lambda: obj.denoising_losses(x0, hidden).sum().backward())
    return out


def render(results: list[dict[str, Any]], flops: dict[str, float] | None, args: argparse.Namespace,
           machine: dict[str, Any], elapsed: float) -> str:
    lines = [
        "# Ross objective: training-step overhead",
        "",
        f"Generated by `python benchmarks/bench_ross.py{' --quick' if args.quick else ''}` "
        f"on {time.strftime('%Y-%m-%d', time.gmtime())} in {elapsed:.0f} s.",
        "",
        f"Machine: {machine.get('cpu')}, {machine.get('torch_threads')} torch threads, "
        f"GPU: {machine.get('cuda') or 'none'}; load average at start {machine.get('load_avg_1_5_15')} "
        "(a shared machine: other jobs ran at the same time, which is why only interleaved ratios are claimed).",
        "",
        "## Measured (CPU, fp32)",
        "",
        "One training step = forward + backward + AdamW on a fixed batch of synthetic images (coloured squares),",
        "all parameters trainable except the frozen VAE teacher. The three variants are built from the same seed",
        f"and run interleaved, alternating order, {args.repeats} rounds after 2 warm-up rounds; ratio = median of",
        "per-round ratios against `lm` alone.",
        "",
        "| config | batch | tokens (spliced) | trainable lm / lm+ross | lm step (ms) | lm+ross (ms) | cached (ms) "
        "| **time ratio** | **time ratio, cached** | FLOP ratio (cached) | cache build (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["times"]
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['tokens']} | {r['trainable']['lm']:,} / {r['trainable']['lm+ross']:,} "
            f"| {t['lm']['median'] * 1e3:.1f} | {t['lm+ross']['median'] * 1e3:.1f} "
            f"| {t['lm+ross (cached latents)']['median'] * 1e3:.1f} | **{r['ratio']:.2f}** | **{r['ratio_cached']:.2f}** "
            f"| {r['flop_ratio']:.2f} ({r['flop_ratio_cached']:.2f}) | {r['cache_build_s']:.2f} |")
    lines += ["", "Relative inter-quartile ranges of the step times (noise): " + "; ".join(
        f"{r['config']}: " + ", ".join(f"{k} {v['rel_iqr']:.0%}" for k, v in r["times"].items()) for r in results) + "."]
    lines += ["", "Configs: " + "; ".join(f"`{k}`: {describe(CONFIGS[k])}" for k in [r["config"] for r in results]) + "."]
    if flops:
        clip, vae = flops["clip (frozen, forward)"], flops["vae encoder (384 px, fp32)"]
        den = flops["denoiser fwd+bwd (K=4 draws)"]
        stages = []
        for key, llm in flops.items():
            if key.startswith("llm"):
                n = key.split(", ")[1].split(" ")[0]
                stage = ("fine-tune (LLM trains)" if "fine-tune" in key
                         else "pretrain (LLM frozen; the loss still flows through it)")
                stages.append(f"| {stage}, {n}-token sample | {(clip + llm + vae + den) / (clip + llm):.3f} "
                              f"| {(clip + llm + den) / (clip + llm):.3f} |")
        lines += [
            "",
            "## Paper scale: FLOP estimate (not a timing)",
            "",
            "CLIP-L/336 + Vicuna-7B (`ross` preset) built on the meta device; FLOPs per sample counted by",
            "`torch.utils.flop_counter.FlopCounterMode` over the real modules, for a sample of 640 tokens (576 image",
            "tokens + 64 text, pretrain-like) or 1024 tokens (fine-tune-like). The projector is negligible and left out.",
            "",
            "| part | TFLOP / sample |",
            "|---|---|",
        ] + [f"| {k} | {v / 1e12:.3f} |" for k, v in flops.items()] + [
            "",
            "| stage | FLOP ratio lm+ross / lm | with cached latents |",
            "|---|---|---|",
        ] + stages + [
            "",
            "FLOPs are not time: the VAE and, by default, the denoiser run in fp32 (as the original) while the LLM",
            "runs in bf16, so on a GPU their share of the step time is larger than their FLOP share unless TF32",
            "is enabled (or `denoiser_dtype: model` lets the denoiser follow the bf16 autocast).",
        ]
    lines += ["", "## Reading the numbers", ""] + notes(results, flops) + [""]
    return "\n".join(lines)


def describe(cfg: dict[str, Any]) -> str:
    llm = cfg["llm"] if isinstance(cfg["llm"], str) else f"tiny-llama {cfg['llm']['args']}"
    return f"tiny-conv {cfg['image']} px, {llm}, ross {cfg['ross']}"


def notes(results: list[dict[str, Any]], flops: dict[str, float] | None) -> list[str]:
    out = []
    for r in results:
        out.append(f"- `{r['config']}`: lm+ross costs {r['ratio']:.2f}x the lm-only step "
                   f"({'meets' if r['ratio'] <= 1.10 else 'misses'} the 1.10 target) and {r['ratio_cached']:.2f}x with "
                   f"cached latents ({'meets' if r['ratio_cached'] <= 1.03 else 'misses'} the 1.03 target).")
    out += [
        "- In `tiny` the denoiser is larger than the 0.5M-parameter LLM, so ross dominates the step; `scaled`",
        "  keeps roughly the paper's denoiser/LLM proportion (1.5% of the parameters; paper ~1%).",
        "  The targets (<= 1.10, <= 1.03 cached) are about paper scale and are not demonstrated by a timing",
        "  here (no GPU was available to this run).",
        "- The FLOP ratio column (FlopCounterMode over the same step) shows how far the CPU times follow FLOPs;",
        "  the paper-scale FLOP estimate above relies on that.",
        "- The cache removes the VAE encoder from the step; what remains is the denoiser on K=4 draws per image,",
        "  the LayerNorm/projection of the hidden states, and the content hash of each image (one device-to-host",
        "  copy per batch; batches that carry `sample_ids` skip it).",
    ]
    if flops:
        out.append("- The FLOP estimate is what the design predicts on a GPU; confirm it with a timing on real hardware.")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny config, few repeats (checks the script runs)")
    p.add_argument("--configs", nargs="*", default=None, help=f"subset of {', '.join(CONFIGS)}")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is the most stable on a shared machine)")
    p.add_argument("--no-flops", action="store_true", help="skip the paper-scale FLOP count")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "ross-overhead.md"))
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 15
    names = args.configs or list(QUICK if args.quick else CONFIGS)
    torch.set_num_threads(args.threads)
    machine = machine_info()
    t0 = time.perf_counter()
    results = []
    for name in names:
        r = measure(name, copy.deepcopy(CONFIGS[name]), args.batch, args.repeats)
        print(f"{name}: ratio {r['ratio']:.3f}, cached {r['ratio_cached']:.3f}", flush=True)
        results.append(r)
    flops = None if args.no_flops else paper_flops()
    text = render(results, flops, args, machine, time.perf_counter() - t0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
