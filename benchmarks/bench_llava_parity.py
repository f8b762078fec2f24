"""vlmkit's assembled LLaVA-1.5 against transformers' ``LlavaForConditionalGeneration``, same weights.

One random HF Llava (CLIP tower, mlp2x_gelu projector, Llama) is saved and imported into vlmkit with
``vlmkit.interop.hf_llava.import_hf``, so both sides hold identical weights. Before timing anything the script
checks both compute the same thing: the training loss on the benchmark batch must agree (|diff| <= 1e-4)
and greedy generation must give the same tokens.

Measured, in one run:

* training step (forward + backward + AdamW step), vision tower frozen as in LLaVA-1.5's fine-tuning
  stage: median seconds per step, runs interleaved and alternated; the ratio is the median of the
  per-round ratios vlmkit / HF (target <= 1.0). The process CPU time of the same steps is reported
  too: on a shared machine time-slicing inflates wall time much more than CPU time;
* peak memory of a steady-state training step: each side in fresh subprocesses (one pair at a time);
  after one warm-up step (AdamW's state exists, memory-mapped weights are paged in) the RSS high-water
  mark is reset (``/proc/self/clear_refs``), two more steps run, and the new high-water mark (VmHWM)
  minus the RSS before is the step's peak. glibc's mmap threshold
  is fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``) so freed tensors go back to the OS and RSS follows the
  live tensor bytes instead of the allocator's caching (target ratio <= 1.0);
* greedy generation: new tokens per second over the batch (prefill included), interleaved (target ratio
  >= 1.0, higher is better).

``--profile`` adds a torch.profiler table (top ops by self CPU time) of one step of each side, and a
breakdown of a step into parts (vision tower + projector, splice, LM loss, whole forward, forward +
backward) by process CPU time with one thread, interleaved, medians.

vlmkit marks each image by one IMAGE_PLACEHOLDER (-200) that splicing expands; HF repeats its image token
once per visual token. The batch is built once in vlmkit's layout and expanded for HF.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

IGNORE = -100
#: ``full`` is big enough that framework overhead does not dominate, small enough for a 2-core CPU
CONFIGS: dict[str, dict[str, Any]] = {
    "full": dict(vision=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                             image_size=224, patch_size=14),
                 text=dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8,
                           num_key_value_heads=8, vocab_size=8192),
                 batch=4, prompt=24, answer=40, new_tokens=16, repeats=9, gen_repeats=5, mem_repeats=2),
    "quick": dict(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=56, patch_size=14),
                  text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=4, vocab_size=512),
                  batch=2, prompt=6, answer=6, new_tokens=4, repeats=1, gen_repeats=1, mem_repeats=1),
}
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
LR = 1e-5


# -- the shared reference ------------------------------------------------------------------------------
def make_models(root: Path, cfg: dict[str, Any], seed: int = 0) -> tuple[Path, Path]:
    """Save a random HF Llava (with tokenizer) under ``root/hf`` and its vlmkit import under ``root/vlmkit``."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from vlmkit.interop.hf_llava import import_hf
    from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    v, t = cfg["vision"], cfg["text"]
    n_img = (v["image_size"] // v["patch_size"]) ** 2
    vision = CLIPVisionConfig(**v, projection_dim=v["hidden_size"])
    text = LlamaConfig(**t, max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    hf_cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                         image_seq_length=n_img, vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(hf_cfg)
    with torch.no_grad():  # break init symmetries (norms all 1) so a mismatch would show in the loss
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hf_dir, vl_dir = root / "hf", root / "vlmkit"
    model.save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    import_hf(hf_dir, vl_dir)
    return hf_dir, vl_dir


def load(impl: str, directory: Path):
    import torch

    if impl == "hf":
        from transformers import LlavaForConditionalGeneration

        model = LlavaForConditionalGeneration.from_pretrained(directory, attn_implementation="sdpa",
                                                              dtype=torch.float32)
        model.model.vision_tower.requires_grad_(False)
    else:
        from vlmkit.model.checkpoint import load_checkpoint

        model = load_checkpoint(directory)
        for enc in model.encoders:
            enc.requires_grad_(False)
    return model


def make_batch(cfg: dict[str, Any], image_id: int, side: str, seed: int = 1, with_answer: bool = True) -> dict[str, Any]:
    """One image per sample, rows of different lengths; vlmkit and HF layouts of the same tokens."""
    import torch

    from vlmkit.model.contracts import IMAGE_PLACEHOLDER
    from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    g = torch.Generator().manual_seed(seed)
    v = cfg["vision"]
    n_img = (v["image_size"] // v["patch_size"]) ** 2
    low, high = 16, min(len(tok), cfg["text"]["vocab_size"])  # ordinary word ids (no special or image ids)
    vl_rows, vl_labels = [], []
    for b in range(cfg["batch"]):
        extra = (b * cfg["prompt"]) // (2 * cfg["batch"])  # rows differ in length: padding is exercised
        prompt = torch.randint(low, high, (cfg["prompt"] + extra,), generator=g).tolist()
        answer = torch.randint(low, high, (cfg["answer"],), generator=g).tolist() if with_answer else []
        row = [tok.bos_token_id] + prompt[:2] + [IMAGE_PLACEHOLDER] + prompt[2:] + answer
        vl_rows.append(row)
        vl_labels.append([IGNORE] * (len(row) - len(answer)) + answer)

    def expand(row, fill=None):
        return [y for x in row for y in ([fill if fill is not None else image_id] * n_img if x == IMAGE_PLACEHOLDER else [x])]

    hf_rows = [expand(r) for r in vl_rows]
    hf_labels = [[y for x, lab in zip(r, lr) for y in ([IGNORE] * n_img if x == IMAGE_PLACEHOLDER else [lab])]
                 for r, lr in zip(vl_rows, vl_labels)]

    def pad(rows, value):
        width = max(len(r) for r in rows)
        out, mask = [], []
        for r in rows:
            fill = [value] * (width - len(r))
            out.append(fill + r if side == "left" else r + fill)
            m = [0] * len(fill) + [1] * len(r) if side == "left" else [1] * len(r) + [0] * len(fill)
            mask.append(m)
        return torch.tensor(out), torch.tensor(mask)

    pixels = torch.randn(cfg["batch"], 3, v["image_size"], v["image_size"], generator=g)
    vl_ids, vl_mask = pad(vl_rows, tok.pad_token_id)
    hf_ids, hf_mask = pad(hf_rows, tok.pad_token_id)
    vl_lab, _ = pad(vl_labels, IGNORE)
    hf_lab, _ = pad(hf_labels, IGNORE)
    return {
        "vlmkit": {"input_ids": vl_ids, "attention_mask": vl_mask, "labels": vl_lab, "pixel_values": {"base": pixels}},
        "hf": {"input_ids": hf_ids, "attention_mask": hf_mask, "labels": hf_lab, "pixel_values": pixels},
        "tokens_per_row": hf_mask.sum(1).tolist(),
        "supervised_tokens": int((hf_lab != IGNORE).sum()),
    }


def train_step(model, batch, opt) -> float:
    opt.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    opt.step()
    return float(loss.detach())


def make_optimizer(model):
    import torch

    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)


def generate(impl: str, model, batch, cfg, tok) -> Any:
    n = cfg["new_tokens"]
    if impl == "hf":
        out = model.generate(**{k: v for k, v in batch.items() if k != "labels"}, max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        return out[:, batch["input_ids"].shape[1]:]
    return model.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], max_new_tokens=n,
                          min_new_tokens=n)


# -- memory worker (a fresh process per measurement) ---------------------------------------------------
def memory_worker(impl: str, root: Path, cfg_name: str) -> dict[str, Any]:
    import torch

    cfg = CONFIGS[cfg_name]
    directory = root / ("hf" if impl == "hf" else "vlmkit")
    model = load(impl, directory).train()
    image_id = json.loads((root / "hf" / "config.json").read_text())["image_token_index"]
    batch = make_batch(cfg, image_id, "right")[impl]
    opt = make_optimizer(model)
    # one step first: creates AdamW's state and pages in weights that from_pretrained may leave memory-mapped
    # (HF's first forward faults its safetensors pages in, which would count as "step" memory)
    train_step(model, batch, opt)
    gc.collect()
    common.release_freed_memory()  # the measured steps allocate afresh (both sides alike)
    base = common.rss_bytes()
    if not common.reset_peak_rss():
        raise RuntimeError("cannot reset the RSS high-water mark (/proc/self/clear_refs); no sound peak measurement")
    for _ in range(2):
        train_step(model, batch, opt)
    peak = common.peak_rss_bytes()
    state = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"impl": impl, "base_rss": base, "peak_rss": peak, "step_peak": peak - base, "weights_bytes": state,
            "threads": torch.get_num_threads()}


# -- profile -------------------------------------------------------------------------------------------
def profile_steps(models: dict[str, Any], batches: dict[str, Any], opts: dict[str, Any], rows: int = 18) -> dict[str, str]:
    """torch.profiler table (top ops by self CPU time) of one training step of each side."""
    from torch.profiler import ProfilerActivity, profile

    tables = {}
    for impl, model in models.items():
        with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            train_step(model, batches[impl], opts[impl])
        tables[impl] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)
    return tables


def components(models: dict[str, Any], batches: dict[str, Any], image_id: int, repeats: int) -> list[dict[str, Any]]:
    """Where a step's time goes: process CPU time of its parts, one thread, interleaved, medians.

    CPU time with one intra-op thread is what a shared machine disturbs least, so small differences
    (a few per cent of a step) are visible. HF's merge of image features is re-done as its forward
    does it (embed every id, ``masked_scatter`` the features over the image-token positions).
    """
    import torch

    from vlmkit.model.contracts import ModelOutput
    from vlmkit.model.splice import splice

    vl, hf = models["vlmkit"], models["hf"]
    vb, hb = batches["vlmkit"], batches["hf"]
    px = hb["pixel_values"]
    with torch.no_grad():
        blocks, num_main, _ = vl.encode_images(vb["pixel_values"])
        feats = torch.cat(blocks, 0)
        out = vl(**vb)
        logits, spliced_labels = out.logits.detach(), out.labels  # spliced_labels equal HF's layout of the labels
    logits.requires_grad_(True)
    objective = vl.objectives["lm"]
    vocab = logits.shape[-1]

    def hf_merge():
        emb = hf.get_input_embeddings()(hb["input_ids"])
        mask = (hb["input_ids"] == image_id).unsqueeze(-1).expand_as(emb)
        return emb.masked_scatter(mask, feats)

    def fwd_bwd(impl):
        models[impl](**batches[impl]).loss.backward()
        models[impl].zero_grad(set_to_none=True)

    parts = {
        "vision tower + projector, forward": (
            lambda: vl.encode_images(vb["pixel_values"]),
            lambda: hf.model.get_image_features(pixel_values=px, vision_feature_layer=-2,
                                                vision_feature_select_strategy="default")),
        "image-feature splice / merge, forward": (
            lambda: splice(vb["input_ids"], vb["attention_mask"], vb["labels"], blocks, vl.llm.embed, num_main=num_main),
            hf_merge),
        "LM loss on identical logits, forward + backward": (
            lambda: objective(ModelOutput(loss=None, logits=logits, labels=spliced_labels), {})["lm"].backward(),
            lambda: hf.loss_function(logits=logits, labels=hb["labels"], vocab_size=vocab).backward()),
        "whole model, forward with loss": (lambda: vl(**vb).loss, lambda: hf(**hb).loss),
        "whole model, forward + backward": (lambda: fwd_bwd("vlmkit"), lambda: fwd_bwd("hf")),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for name, (ours, ref) in parts.items():
            cpu: dict[str, list[float]] = {}
            common.interleave({"vlmkit": ours, "hf": ref}, repeats=repeats, warmup=1, cpu_times=cpu)
            rows.append({"part": name, "vlmkit_ms": common.median(cpu["vlmkit"]) * 1e3,
                         "hf_ms": common.median(cpu["hf"]) * 1e3, "ratio": common.paired_ratio(cpu["vlmkit"], cpu["hf"])})
    finally:
        torch.set_num_threads(threads)
    return rows


# -- main ----------------------------------------------------------------------------------------------
def run(args) -> Path:
    import torch
    import transformers

    from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer

    transformers.logging.set_verbosity_error()
    cfg_name = "quick" if args.quick else "full"
    cfg = CONFIGS[cfg_name]
    monitor = common.LoadMonitor()
    monitor.sample()
    machine = common.machine_info()
    tok = build_tiny_tokenizer()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vlmkit-bench-llava-") as tmp:
        root = Path(tmp)
        common.log("building the HF Llava and importing it")
        hf_dir, vl_dir = make_models(root, cfg)
        image_id = json.loads((hf_dir / "config.json").read_text())["image_token_index"]
        models = {"vlmkit": load("vlmkit", vl_dir), "hf": load("hf", hf_dir)}
        n_params = sum(p.numel() for p in models["hf"].parameters())
        n_trainable = sum(p.numel() for p in models["hf"].parameters() if p.requires_grad)
        assert n_trainable == sum(p.numel() for p in models["vlmkit"].parameters() if p.requires_grad)

        # 1. both compute the same thing
        common.log("checking both give the same loss")
        train_batch = make_batch(cfg, image_id, "right")
        for m in models.values():
            m.eval()
        with torch.no_grad():
            losses = {k: float(models[k](**train_batch[k]).loss) for k in models}
        loss_diff = abs(losses["vlmkit"] - losses["hf"])
        if loss_diff > 1e-4:
            raise RuntimeError(f"vlmkit and HF disagree on the loss ({losses}); the comparison would be meaningless")

        # 2. generation (eval mode, untouched weights)
        common.log("generation")
        gen_batch = make_batch(cfg, image_id, "left", seed=2, with_answer=False)
        outs = {k: generate(k, models[k], gen_batch[k], cfg, tok) for k in models}
        same_tokens = bool(torch.equal(outs["vlmkit"], outs["hf"]))
        if not same_tokens:
            notes.append("greedy generation did NOT give identical tokens (fp32 near-ties can flip a token)")
        monitor.sample()
        gen_cpu: dict[str, list[float]] = {}
        gen_times = common.interleave({k: (lambda k=k: generate(k, models[k], gen_batch[k], cfg, tok)) for k in models},
                                      repeats=cfg["gen_repeats"], warmup=0, cpu_times=gen_cpu)
        monitor.sample()
        new_tokens = cfg["batch"] * cfg["new_tokens"]

        # 3. training steps, interleaved
        common.log("training steps")
        for m in models.values():
            m.train()
        opts = {k: make_optimizer(models[k]) for k in models}
        step_cpu: dict[str, list[float]] = {}
        step_times = common.interleave({k: (lambda k=k: train_step(models[k], train_batch[k], opts[k])) for k in models},
                                       repeats=cfg["repeats"], warmup=1, cpu_times=step_cpu)
        monitor.sample()
        if args.profile:
            common.log("profiling")
        profile_tables = profile_steps(models, train_batch, opts) if args.profile else {}
        parts = components(models, train_batch, image_id, repeats=cfg["repeats"]) if args.profile else []
        models.clear()  # free both before the memory subprocesses run
        opts.clear()
        gc.collect()

        # 4. peak memory, fresh processes, one pair at a time
        common.log("memory (subprocesses)")
        # (each pair runs concurrently: a process's RSS high-water mark does not depend on its neighbour)
        mem: dict[str, list[dict[str, Any]]] = {"vlmkit": [], "hf": []}
        for _ in range(cfg["mem_repeats"]):
            pair = common.run_json_subprocesses(
                {impl: [__file__, "--memory-worker", impl, "--root", str(root)] + (["--quick"] if args.quick else [])
                 for impl in mem}, env=MEMORY_ENV)
            for impl, res in pair.items():
                mem[impl].append(res)
            monitor.sample()

    step = {k: common.spread(v) for k, v in step_times.items()}
    gen = {k: common.spread(v) for k, v in gen_times.items()}
    peak = {k: common.median([m["step_peak"] for m in v]) for k, v in mem.items()}
    seq_len = int(train_batch["hf"]["input_ids"].shape[1])
    tokens = int(train_batch["hf"]["attention_mask"].sum())
    metrics = [
        common.metric("train step time", step["vlmkit"]["median"], "s", reference=step["hf"]["median"],
                      ratio=common.paired_ratio(step_times["vlmkit"], step_times["hf"]), target="<= 1.0",
                      detail={"vlmkit": step["vlmkit"], "hf": step["hf"],
                              "vlmkit_tokens_per_s": tokens / step["vlmkit"]["median"],
                              "hf_tokens_per_s": tokens / step["hf"]["median"]}),
        common.metric("train step CPU time (process, all threads)", common.median(step_cpu["vlmkit"]), "s",
                      reference=common.median(step_cpu["hf"]),
                      ratio=common.paired_ratio(step_cpu["vlmkit"], step_cpu["hf"]), target="<= 1.0",
                      detail={"vlmkit": common.spread(step_cpu["vlmkit"]), "hf": common.spread(step_cpu["hf"])}),
        common.metric("steady-state train step peak memory (RSS high-water delta)", peak["vlmkit"] / 2**20, "MiB",
                      reference=peak["hf"] / 2**20, ratio=peak["vlmkit"] / peak["hf"], target="<= 1.0",
                      detail={"runs_MiB": {k: [round(m["step_peak"] / 2**20, 1) for m in v] for k, v in mem.items()},
                              "weights_MiB": round(mem["hf"][0]["weights_bytes"] / 2**20, 1)}),
        common.metric("greedy generation throughput", new_tokens / gen["vlmkit"]["median"], "new tokens/s",
                      reference=new_tokens / gen["hf"]["median"],
                      ratio=1 / common.paired_ratio(gen_times["vlmkit"], gen_times["hf"]), target=">= 1.0",
                      better="higher", detail={"vlmkit_s": gen["vlmkit"], "hf_s": gen["hf"],
                                               "identical_tokens": same_tokens,
                                               "cpu_time_ratio": common.paired_ratio(gen_cpu["vlmkit"], gen_cpu["hf"])}),
        common.metric("loss |vlmkit - hf| on the benchmark batch", loss_diff, "abs", detail=losses),
    ]
    config = {
        "size": cfg_name, "vision": cfg["vision"], "text": cfg["text"], "batch": cfg["batch"],
        "sequence_length_hf_layout": seq_len, "real_tokens_per_step": tokens,
        "supervised_tokens": train_batch["supervised_tokens"], "parameters": n_params, "trainable": n_trainable,
        "trainable_parts": "projector + LLM (CLIP tower frozen, LLaVA-1.5 fine-tuning stage)",
        "dtype": "float32", "attention": "sdpa", "optimizer": f"AdamW lr={LR}",
        "new_tokens_per_row": cfg["new_tokens"], "step_repeats": cfg["repeats"], "gen_repeats": cfg["gen_repeats"],
        "memory_repeats_per_side": cfg["mem_repeats"],
    }
    method = (
        "Same weights (HF Llava saved, then vlmkit.interop.hf_llava.import_hf); the loss on the batch is checked equal first. "
        "Step and generation times: interleaved runs alternating order each round, one warm-up step; the ratio is the "
        "median of per-round vlmkit/HF ratios. Memory: fresh subprocess per measurement; one warm-up step (AdamW state "
        "created, memory-mapped weights paged in), then the RSS high-water mark is reset via /proc/self/clear_refs, "
        "two steps run, peak = VmHWM minus the RSS before; MALLOC_MMAP_THRESHOLD_=131072 so freed tensors leave RSS.")
    extra = {"profile": profile_tables, "components": parts} if args.profile else {}
    return common.write_result(
        args.out, "llava_parity", title="LLaVA-1.5 training step and generation: vlmkit vs transformers Llava",
        quick=args.quick, command=common.command_line("bench_llava_parity.py", sys.argv[1:]), config=config,
        metrics=metrics, notes=notes, method=method, load=monitor.summary(), extra=extra, machine=machine)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "llava_parity.json")
    p.add_argument("--profile", action="store_true", help="add torch.profiler tables of one step of each side")
    p.add_argument("--memory-worker", choices=["vlmkit", "hf"], help=argparse_hidden())
    p.add_argument("--root", help=argparse_hidden())
    args = p.parse_args()
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, Path(args.root), "quick" if args.quick else "full")))
        return
    t0 = time.perf_counter()
    out = run(args)
    print(f"wrote {out} in {time.perf_counter() - t0:.0f} s")
    result = json.loads(Path(out).read_text())
    for m in result["metrics"]:
        print(f"  {m['name']}: {m['value']:.4g} {m['unit']}  ratio={m.get('ratio', float('nan')):.3f}  "
              f"target {m.get('target', '-')}")
    for impl, table in result["extra"].get("profile", {}).items():
        print(f"\n== profile: {impl} ==\n{table}")


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
