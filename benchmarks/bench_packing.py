"""Real tokens per second for three ways of batching a LLaVA-like length mix: padding, length grouping
and packing.

One fixed set of samples is trained on (forward + backward) three times per round, batched as

* ``padding``: random order, each batch padded to its longest sample (the reference);
* ``length-grouped``: the order of transformers' ``LengthGroupedSampler`` (``group_by_length``):
  mega-batches of up to 50 batches sorted by length (here all samples form one), padded;
* ``packing``: random order, each batch's samples packed into rows of ``max_tokens``
  (``vlmkit.data.packing``: first-fit decreasing, no attention across samples).

Every variant sees the same samples, so the same real (non-padding) tokens; the metric is real tokens
per second of wall time, and the claim is the ratio to ``padding`` (median of per-round ratios, rounds
interleaved in alternating order by ``common.interleave``). The padding share of the computed token
slots is reported too.

The length mix follows LLaVA-1.5's instruction data at 1/4 scale (its images are 576 tokens, its
``model_max_length`` 2048; here 64 and 512): 60% single-turn image questions with short answers,
25% multi-turn image conversations, 15% text-only conversations (ShareGPT), which are the longest.
The model is CPU-sized (a 4-layer Llama of width 256 behind the tiny conv encoder), so attention is a
small share of the cost; packed rows use sdpa with a block-diagonal mask built by transformers, which
computes the full row x row attention (flash-attention's variable-length kernels would skip the
masked blocks on a GPU).

    python benchmarks/bench_packing.py            # writes docs/benchmarks/packing.md
    python benchmarks/bench_packing.py --quick    # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleave, machine_info, paired_ratio, spread  # noqa: E402

from vlmkit.data.packing import collate_packed, spliced_length  # noqa: E402
from vlmkit.data.processing import Features, collate  # noqa: E402
from vlmkit.model.assembly import build_model  # noqa: E402
from vlmkit.model.config import ModelConfig  # noqa: E402
from vlmkit.model.contracts import IGNORE_INDEX, IMAGE_PLACEHOLDER  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "llava-mix-quarter": {"image": 128, "width": 64, "hidden": 256, "layers": 4, "heads": 4, "ffn": 688,
                          "max_length": 512, "samples": 48, "batch": 16},
    "quick": {"image": 32, "width": 32, "hidden": 64, "layers": 1, "heads": 2, "ffn": 128,
              "max_length": 128, "samples": 16, "batch": 8},
}
#: (share, has image, text tokens: log-normal median, spread, clip range) at 1/4 of LLaVA-1.5's lengths
MIX = [
    (0.60, True, 30, 0.5, (8, 120)),  # single-turn VQA-style questions, short answers
    (0.25, True, 120, 0.5, (40, 440)),  # multi-turn image conversations
    (0.15, False, 220, 0.6, (30, 500)),  # text-only ShareGPT conversations
]


def make_samples(n: int, cfg: dict[str, Any], visual: int, vocab: int, seed: int = 0) -> list[Features]:
    rng = random.Random(seed)
    scale = cfg["max_length"] / 512
    out = []
    for _ in range(n):
        r, acc, kind = rng.random(), 0.0, MIX[-1]
        for kind in MIX:
            acc += kind[0]
            if r <= acc:
                break
        _, image, med, sigma, (lo, hi) = kind
        budget = cfg["max_length"] - (visual if image else 0)
        text = int(min(max(rng.lognormvariate(0, sigma) * med * scale, lo * scale), hi * scale, budget))
        ids = [rng.randrange(3, vocab) for _ in range(max(4, text))]
        cut = max(1, len(ids) // 3)  # the first third is the (unsupervised) question
        labels = [IGNORE_INDEX] * cut + ids[cut:]
        pix: dict[str, list[torch.Tensor]] = {}
        if image:
            ids = [IMAGE_PLACEHOLDER] + ids
            labels = [IGNORE_INDEX] + labels
            pix = {"base": [torch.randn(3, cfg["image"], cfg["image"])]}
        out.append(Features(ids, labels, pix, None, 1 if image else 0))
    return out


def batches(samples: list[Features], model: Any, strategy: str, cfg: dict[str, Any], seed: int = 0) -> list[dict]:
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths = [spliced_length(f, model.visual_tokens) for f in samples]
    order = list(range(len(samples)))
    if strategy == "length-grouped":
        # the sampler behind `group_by_length`, with its mega-batch of up to 50 batches; its own default
        # shrinks the mega-batch to len/(4 x batch) batches, which for this few samples is one batch
        mult = min(50, -(-len(samples) // cfg["batch"]))
        order = get_length_grouped_indices(lengths, cfg["batch"], mega_batch_mult=mult,
                                           generator=torch.Generator().manual_seed(seed))
    else:
        random.Random(seed).shuffle(order)
    out = []
    views = list(model.views)
    for i in range(0, len(order), cfg["batch"]):
        chunk = [samples[j] for j in order[i:i + cfg["batch"]]]
        if strategy == "packing":
            b = collate_packed(chunk, [lengths[j] for j in order[i:i + cfg["batch"]]], cfg["max_length"],
                               model.tokenizer.pad_token_id, views)
            b.pop("packed_rows")
        else:
            b = collate(chunk, model.tokenizer.pad_token_id, "right", views)
        out.append(b)
    return out


def run(batch_list: list[dict], model: Any) -> tuple[int, int]:
    """Forward + backward over every batch; returns (real tokens, computed token slots)."""
    real = slots = 0
    for b in batch_list:
        out = model(**b)
        out.loss.backward()
        real += int(out.attention_mask.sum())
        slots += out.attention_mask.numel()
    model.zero_grad(set_to_none=True)
    return real, slots


def measure(name: str, cfg: dict[str, Any], repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_dict({
        "encoders": [{"name": "tiny-conv", "args": {"image_size": cfg["image"], "width": cfg["width"]}}],
        "connector": "mlp2x_gelu",
        "llm": {"name": "tiny-llama", "args": {"hidden_size": cfg["hidden"], "num_layers": cfg["layers"],
                                                "num_heads": cfg["heads"], "intermediate_size": cfg["ffn"]}},
        "max_length": cfg["max_length"]})).train()
    samples = make_samples(cfg["samples"], cfg, model.visual_tokens_per_image(), len(model.tokenizer))
    strategies = ("padding", "length-grouped", "packing")
    plans = {s: batches(samples, model, s, cfg) for s in strategies}
    counts = {s: run(plans[s], model) for s in strategies}  # also the warm-up
    reals = {c[0] for c in counts.values()}
    assert len(reals) == 1, f"the strategies saw different real tokens: {counts}"
    times = interleave({s: (lambda s=s: run(plans[s], model)) for s in strategies}, repeats, warmup=0)
    real = reals.pop()
    rows = {}
    for s in strategies:
        tps = [real / t for t in times[s]]
        rows[s] = {"rows_per_epoch": sum(b["input_ids"].shape[0] for b in plans[s]),
                   "pad_fraction": 1 - real / counts[s][1], "tokens_per_s": spread(tps),
                   "ratio_vs_padding": paired_ratio(times["padding"], times[s])}
    lengths = [spliced_length(f, model.visual_tokens) for f in samples]
    return {"name": name, "config": cfg, "real_tokens": real, "rows": rows,
            "lengths": {"mean": sum(lengths) / len(lengths), "max": max(lengths), "min": min(lengths),
                        "text_only": sum(1 for f in samples if not f.num_images) / len(samples)}}


def render(results: list[dict[str, Any]], args: argparse.Namespace, machine: dict[str, Any]) -> str:
    out = ["# Sequence packing vs padding vs length grouping", "",
           f"Generated by `python benchmarks/bench_packing.py{' --quick' if args.quick else ''}` "
           f"({args.repeats} interleaved rounds). Method: see the script's docstring.", "",
           f"Machine: {machine.get('cpu')}, {machine.get('cores_visible')} cores visible, "
           f"torch threads {machine.get('torch_threads')}, load average at start {machine.get('load_avg_1_5_15')} "
           "(a shared machine: compare the ratios, not the absolute numbers).", ""]
    for r in results:
        c, ln = r["config"], r["lengths"]
        out += [f"## {r['name']}", "",
                f"{c['samples']} samples, batches of {c['batch']}, rows of at most {c['max_length']} tokens; "
                f"Llama width {c['hidden']} x {c['layers']} layers; sample length after splicing: mean "
                f"{ln['mean']:.0f}, min {ln['min']}, max {ln['max']}; {ln['text_only']:.0%} text-only; "
                f"{r['real_tokens']} real tokens per pass.", "",
                "| batching | rows per pass | padding share | real tokens/s (median) | spread (rel. IQR) | speed vs padding |",
                "|---|---:|---:|---:|---:|---:|"]
        for s, row in r["rows"].items():
            t = row["tokens_per_s"]
            out.append(f"| {s} | {row['rows_per_epoch']} | {row['pad_fraction']:.1%} | {t['median']:.0f} | "
                       f"{t['rel_iqr']:.1%} | {row['ratio_vs_padding']:.2f}x |")
        out.append("")
    out += ["Reading: the speed-up follows the padding removed; packing also keeps the samples of each step "
            "(loss and gradients equal the padded batch's, see `tests/test_scale_packing.py`), so it changes "
            "nothing but the compute. Length grouping removes padding too but changes which samples share a "
            "step (batches of similar length), packing does not.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny config, few repeats (checks the script runs)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "packing.md"))
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    torch.set_num_threads(args.threads)
    machine = machine_info()
    names = ["quick"] if args.quick else ["llava-mix-quarter"]
    results = [measure(n, CONFIGS[n], args.repeats) for n in names]
    text = render(results, args, machine)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
