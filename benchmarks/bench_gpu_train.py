"""GPU training throughput of a ~1.4B LLaVA-1.5 (CLIP-L/14-336 + a 1.1B Llama), vlmkit vs transformers Llava.

Needs CUDA. Without it the script says so, writes a result marked ``skipped`` and exits 0 (``--cpu``
runs the tiny ``--quick`` config on the CPU instead, to check the code path where no GPU is lent).

Both sides hold the same random weights: an HF ``LlavaForConditionalGeneration`` is saved and imported
with ``vlmkit.interop.hf_llava.import_hf``; the loss on the batch is checked equal before anything is timed.
Training as in LLaVA-1.5's fine-tuning stage: CLIP frozen, projector + LLM trained, fp32 master weights
under bf16 autocast, fused AdamW, SDPA attention. Steps of the two sides are interleaved (order alternates
every round) and timed with ``torch.cuda.synchronize``; medians are reported, and the ratio is the median
of the per-round ratios.

Reported per side: samples/s, tokens/s (all positions the LLM sees, image tokens included), peak memory
of a step (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the memory
allocated before the step), and model FLOPs utilisation:

    MFU = step FLOPs / (step time * peak bf16 FLOP/s of the device)
    step FLOPs = LLM + projector + vision tower
      LLM:       6 * N_llm * T  +  12 * n_layers * d_model * S * T      (PaLM appendix B; backward = 2 x forward)
      projector: 6 * N_proj * T_img
      vision:    2 * N_vit_used * T_vit + 4 * n_layers_used * d_vit * P^2 * n_images   (forward only: frozen)
    N_llm: LLM parameters without the input embedding table (a lookup, no FLOPs; lm_head counted),
    T: real tokens per step (B x S minus padding), S: padded sequence length, T_img: projected image tokens,
    N_vit_used: parameters of the CLIP layers that run (LLaVA reads layer -2, so the last is skipped by
    vlmkit; HF runs it: both are credited only the work the model needs), P: patches + CLS per image.

Peak bf16 dense FLOP/s: H100/H200 SXM 989e12, A100 312e12, L40S 362e12; ``--peak-tflops`` overrides.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_llava_parity as parity  # noqa: E402
import common  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    # CLIP ViT-L/14-336 and a TinyLlama-1.1B-shaped LLM (LLaMA-2 vocabulary)
    "full": dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                             image_size=336, patch_size=14, hidden_act="quick_gelu"),
                 text=dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, vocab_size=32000),
                 batch=8, prompt=64, answer=384, new_tokens=0, repeats=10, gen_repeats=0, mem_repeats=0),
    "quick": dict(parity.CONFIGS["quick"], repeats=1),
}
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for key, value in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return value
    return None


def step_flops(cfg: dict[str, Any], n_llm_no_embed: int, n_proj: int, n_vit_used: int, tokens: int,
               seq_len: int) -> dict[str, float]:
    """Model FLOPs of one training step (see the module docstring for the formula)."""
    v, t = cfg["vision"], cfg["text"]
    n_patch = (v["image_size"] // v["patch_size"]) ** 2
    images = cfg["batch"]
    layers_used = v["num_hidden_layers"] - 1  # feature layer -2
    llm = 6 * n_llm_no_embed * tokens + 12 * t["num_hidden_layers"] * t["hidden_size"] * seq_len * tokens
    proj = 6 * n_proj * n_patch * images
    vit = 2 * n_vit_used * (n_patch + 1) * images + 4 * layers_used * v["hidden_size"] * (n_patch + 1) ** 2 * images
    return {"llm": float(llm), "projector": float(proj), "vision": float(vit), "total": float(llm + proj + vit)}


def counts(hf_model) -> tuple[int, int, int]:
    """(LLM parameters without input embeddings, projector parameters, parameters of the CLIP layers used)."""
    lm = hf_model.model.language_model
    n_llm = sum(p.numel() for p in lm.parameters()) - lm.get_input_embeddings().weight.numel()
    n_llm += sum(p.numel() for p in hf_model.lm_head.parameters())
    n_proj = sum(p.numel() for p in hf_model.model.multi_modal_projector.parameters())
    vt = hf_model.model.vision_tower
    layers = vt.vision_model.encoder.layers if hasattr(vt, "vision_model") else vt.encoder.layers
    last = sum(p.numel() for p in layers[-1].parameters())
    post = vt.vision_model.post_layernorm if hasattr(vt, "vision_model") else vt.post_layernorm
    n_vit = sum(p.numel() for p in vt.parameters()) - last - sum(p.numel() for p in post.parameters())
    return n_llm, n_proj, n_vit


def write_skip(args, reason: str) -> Path:
    out = common.write_result(
        args.out, "gpu_train", title="GPU training throughput (~1.4B LLaVA-1.5): vlmkit vs transformers Llava",
        quick=args.quick, command=common.command_line("bench_gpu_train.py", sys.argv[1:]), config={"status": "skipped"},
        metrics=[], notes=[f"not run on a GPU yet: {reason}"], method=__doc__.split("\n\n", 1)[1], extra={"status": "skipped"})
    print(f"bench_gpu_train: {reason}; wrote {out} (marked skipped)")
    return out


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "gpu_train.json")
    p.add_argument("--cpu", action="store_true", help="run the --quick config on the CPU (checks the code path)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s of the device (for MFU)")
    args = p.parse_args()
    import torch

    if args.cpu and not args.quick:
        p.error("--cpu runs only the --quick config")
    if not torch.cuda.is_available() and not args.cpu:
        write_skip(args, "CUDA is not available on this machine (torch.cuda.is_available() is False)")
        return
    run(args, torch.device("cpu") if args.cpu else torch.device("cuda"))


def run(args, device) -> Path:
    import torch
    import transformers

    from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer  # noqa: F401 - fails early if vlmkit is missing

    transformers.logging.set_verbosity_error()
    cuda = device.type == "cuda"
    cfg = CONFIGS["quick" if args.quick else "full"]
    monitor = common.LoadMonitor()
    monitor.sample()
    machine = common.machine_info()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    with tempfile.TemporaryDirectory(prefix="vlmkit-bench-gpu-") as tmp:
        hf_dir, vl_dir = parity.make_models(Path(tmp), cfg)
        image_id = json.loads((hf_dir / "config.json").read_text())["image_token_index"]
        models = {impl: parity.load(impl, d).to(device).train() for impl, d in (("vlmkit", vl_dir), ("hf", hf_dir))}
    n_llm, n_proj, n_vit = counts(models["hf"])
    n_params = sum(p.numel() for p in models["hf"].parameters())
    batch = parity.make_batch(cfg, image_id, "right")
    batches = {impl: {k: (v.to(device) if torch.is_tensor(v) else {n: t.to(device) for n, t in v.items()})
                      for k, v in batch[impl].items()} for impl in models}
    fused = {"fused": True} if cuda else {}
    opts = {impl: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=parity.LR, **fused)
            for impl, m in models.items()}

    def step(impl: str) -> float:
        opts[impl].zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = models[impl](**batches[impl]).loss
        loss.backward()
        opts[impl].step()
        return float(loss.detach())  # also synchronises

    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        losses = {impl: float(models[impl](**batches[impl]).loss) for impl in models}
    loss_diff = abs(losses["vlmkit"] - losses["hf"])
    if loss_diff > 2e-2:  # bf16 autocast: the two sides may round differently, but not by much
        raise RuntimeError(f"vlmkit and HF disagree on the loss ({losses})")

    peak_mem: dict[str, int] = {}
    for impl in models:  # first step of each creates AdamW's state; measured alone for a clean peak
        sync()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        step(impl)
        sync()
        if cuda:
            peak_mem[impl] = torch.cuda.max_memory_allocated() - before

    def timed(impl):
        sync()
        step(impl)
        sync()

    times = common.interleave({impl: (lambda i=impl: timed(i)) for impl in models}, repeats=cfg["repeats"], warmup=1)
    monitor.sample()

    tokens = int(batch["hf"]["attention_mask"].sum())
    seq_len = int(batch["hf"]["input_ids"].shape[1])
    flops = step_flops(cfg, n_llm, n_proj, n_vit, tokens, seq_len)
    peak = peak_flops(machine.get("cuda") or "", args.peak_tflops) if cuda else None
    med = {impl: common.median(t) for impl, t in times.items()}
    ratio = common.paired_ratio(times["vlmkit"], times["hf"])
    metrics = [
        common.metric("train step time", med["vlmkit"], "s", reference=med["hf"], ratio=ratio, target="<= 1.0",
                      detail={k: common.spread(v) for k, v in times.items()}),
        common.metric("samples/s", cfg["batch"] / med["vlmkit"], "samples/s", reference=cfg["batch"] / med["hf"],
                      ratio=1 / ratio, better="higher"),
        common.metric("tokens/s", tokens / med["vlmkit"], "tokens/s", reference=tokens / med["hf"], ratio=1 / ratio,
                      better="higher"),
    ]
    if peak:
        metrics.append(common.metric("MFU", flops["total"] / med["vlmkit"] / peak, "fraction",
                                     reference=flops["total"] / med["hf"] / peak, ratio=1 / ratio, better="higher",
                                     detail={"step_flops": flops, "peak_flops": peak}))
    if peak_mem:
        metrics.append(common.metric("train step peak memory (max_memory_allocated delta)", peak_mem["vlmkit"] / 2**30,
                                     "GiB", reference=peak_mem["hf"] / 2**30, ratio=peak_mem["vlmkit"] / peak_mem["hf"],
                                     target="<= 1.0"))
    metrics.append(common.metric("loss |vlmkit - hf| (bf16 autocast)", loss_diff, "abs", detail=losses))
    config = {"size": "quick" if args.quick else "full", "device": str(device), "vision": cfg["vision"],
              "text": cfg["text"], "batch": cfg["batch"], "sequence_length": seq_len, "real_tokens_per_step": tokens,
              "parameters": n_params, "llm_params_no_input_embedding": n_llm, "projector_params": n_proj,
              "vit_params_used": n_vit, "precision": "fp32 master weights, bf16 autocast",
              "optimizer": f"AdamW lr={parity.LR}" + (" fused" if cuda else ""), "attention": "sdpa",
              "trainable_parts": "projector + LLM (CLIP frozen)", "repeats": cfg["repeats"], "step_flops": flops}
    out = common.write_result(
        args.out, "gpu_train", title="GPU training throughput (~1.4B LLaVA-1.5): vlmkit vs transformers Llava",
        quick=args.quick, command=common.command_line("bench_gpu_train.py", sys.argv[1:]), config=config,
        metrics=metrics, notes=[] if cuda else ["--cpu: code-path check on the CPU, not a GPU measurement"],
        method=__doc__.split("\n\n", 1)[1], load=monitor.summary(), machine=machine, extra={"status": "ran"})
    print(f"wrote {out}")
    for m in metrics:
        print(f"  {m['name']}: {m['value']:.4g} {m['unit']}  ratio={m.get('ratio', float('nan')):.3f}")
    return out


if __name__ == "__main__":
    main()
