"""Training recipes of the papers' stage tables (components.md §0.8, §1.7, §2.7, §3.6, §4.5, §5.2).

Each recipe is the dict ``vlmkit.training.recipe.parse_recipe`` reads: a model preset and the stages
with their data, trainable parts, learning rates and batch. Data paths are placeholders; point them at
your files with ``--set stages.0.data.args.path=/data/...`` (and ``image_root``). Batch sizes are per
device for the papers' GPU counts (8 GPUs, DenseFusion 16): global batch = ``batch_size x grad_accum x
GPUs``; with fewer GPUs raise ``grad_accum`` to keep it. Every function returns a fresh dict.

Where a paper's code differs from its text, the recipe follows the intent and the docs say so
(docs/data.md): ConvLLaVA stage 1 does not train ``lm_head`` (a code quirk), ConvLLaVA stage 2 uses the
README's LR 2e-5 (the script says 1e-3).
"""

from __future__ import annotations

from typing import Any

#: settings every paper shares (LLaVA-1.5 heritage): cosine schedule, 3% warmup, no weight decay, 1 epoch
COMMON: dict[str, Any] = {"epochs": 1.0, "schedule": "cosine", "warmup_ratio": 0.03, "weight_decay": 0.0,
                          "precision": "bf16"}
LLAVA_558K = "data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json"
LLAVA_665K = "data/LLaVA-Instruct/llava_v1_5_mix665k.json"
IMAGES = "data/images"


def _data(path: str, *, template: str, resize: str | None = None, dataset: str = "llava-json",
          transforms: list[Any] | None = None, image_root: str = IMAGES, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"dataset": dataset, "args": {"path": path, "image_root": image_root, **extra},
                         "template": template}
    if resize is not None:
        d["resize"] = resize
    if transforms:
        d["transforms"] = transforms
    return d


def _stage(name: str, data: dict[str, Any], trainable: list[str], lr: float, batch_size: int, grad_accum: int = 1,
           **extra: Any) -> dict[str, Any]:
    return {"name": name, "data": data, "trainable": trainable, "lr": lr, "batch_size": batch_size,
            "grad_accum": grad_accum, **COMMON, **extra}


def densefusion() -> dict[str, Any]:
    """DenseFusion-1M (§5.2), S2 variant (``--set model.preset=llava-1.5`` for the low-res one).

    1 pre-align on DenseFusion-1M (plain, projector, 1e-3); 2 pretrain on the same captions (plain,
    LLM + projector + CLIP layers 12-23, 2e-5); 3 finetune on LLaVA-665K (v1, LLM + projector, 2e-5).
    16 GPUs: global batch 256 / 256 / 128; ZeRO-3. Stages 1-2 resize ``square``, stage 3 pads.
    """
    df = "data/DenseFusion-1M/DenseFusion-1M.jsonl"
    return {
        "model": {"preset": "vlmkit-encoders:llava-1.5-s2"},
        "output_dir": "runs/densefusion",
        "stages": [
            _stage("prealign", _data(df, dataset="densefusion", template="plain", resize="square"),
                   ["connector"], 1e-3, 16, 1, max_length=2000, deepspeed="zero3"),
            _stage("pretrain", _data(df, dataset="densefusion", template="plain", resize="square"),
                   ["llm", "connector", "encoder.0:layers>=12"], 2e-5, 8, 2, max_length=2100, deepspeed="zero3"),
            _stage("finetune", _data(LLAVA_665K, template="vicuna_v1", resize="pad"),
                   ["llm", "connector"], 2e-5, 8, 1, max_length=2048, deepspeed="zero3"),
        ],
    }


def vip_llava() -> dict[str, Any]:
    """ViP-LLaVA (§4.5): 1 feature alignment on LLaVA-558K (plain, projector incl. its LayerNorm, 1e-3);
    2 the stage-2 mix (665K + region data, ``vip`` transform, LLM + projector, 2e-5); 3 the GPT-4V mix
    (2e-7). Vision frozen; 8 GPUs: global batch 256 / 128 / 128; ZeRO-2; pad in stages 2-3."""
    vip = [{"name": "vip"}]
    return {
        "model": {"preset": "vlmkit-encoders:vip-llava"},
        "output_dir": "runs/vip-llava",
        "stages": [
            _stage("align", _data(LLAVA_558K, template="plain", resize="square"),
                   ["connector"], 1e-3, 32, 1, max_length=2048, deepspeed="zero2"),
            _stage("visual-instruct", _data("data/ViP-LLaVA/vip-llava_stage2_mix.json", dataset="vip-regions",
                                            template="vicuna_v1", resize="pad", transforms=vip),
                   ["llm", "connector"], 2e-5, 16, 1, max_length=2048, deepspeed="zero2"),
            _stage("gpt4v-finetune", _data("data/ViP-LLaVA/vip-llava_stage3_mix.json", dataset="vip-regions",
                                           template="vicuna_v1", resize="pad", transforms=vip),
                   ["llm", "connector"], 2e-7, 16, 1, max_length=2048, deepspeed="zero2"),
        ],
    }


def convllava() -> dict[str, Any]:
    """ConvLLaVA-1536 (§1.7): 1 stage 5 + projector on captions (3e-4); 2 LLM + projector + ConvNeXt
    stages >= 2 (2e-5, the README's LR); 3 LLM + projector on LLaVA-665K (2e-5). 8 GPUs: global batch
    256 / 256 / 128; ZeRO-2 then ZeRO-3; pad throughout. Templates: plain for the caption stages 1-2
    (not stated by the source facts), vicuna_v1 for stage 3."""
    captions = "data/ConvLLaVA/stage1_captions.json"
    return {
        "model": {"preset": "vlmkit-encoders:convllava-1536"},
        "output_dir": "runs/convllava",
        "stages": [
            _stage("projector-init", _data(captions, template="plain", resize="pad"),
                   ["encoder.0:stage5", "connector"], 3e-4, 32, 1, max_length=2048, deepspeed="zero2"),
            _stage("vl-pretrain", _data("data/ConvLLaVA/stage2_mix.json", template="plain", resize="pad"),
                   ["llm", "connector", "encoder.0:stages>=2"], 2e-5, 32, 1, max_length=2048, deepspeed="zero3"),
            _stage("instruct", _data(LLAVA_665K, template="vicuna_v1", resize="pad"),
                   ["llm", "connector"], 2e-5, 16, 1, max_length=2048, deepspeed="zero3"),
        ],
    }


def mg_llava() -> dict[str, Any]:
    """MG-LLaVA (§2.7): 1 pretrain on 558K + ALLaVA captions (projector, box projector and Conv-Gate
    fusion, 1e-3, batch 32/GPU); 2 SFT (+ LLM, 2e-5, 16/GPU). fp16 AMP, grad clip 1.0, pad, vicuna
    template in both stages. Records need ``boxes`` (MG-LLaVA's detections joined by id)."""
    return {
        "model": {"preset": "vlmkit-fusion:mg-llava"},
        "output_dir": "runs/mg-llava",
        "stages": [
            _stage("pretrain", _data("data/MG-LLaVA/pretrain_with_boxes.json", template="vicuna_v1", resize="pad",
                                     boxes=True),
                   ["connector", "fusion"], 1e-3, 32, 1, precision="fp16", max_grad_norm=1.0),
            _stage("sft", _data("data/MG-LLaVA/sft_with_boxes.json", template="vicuna_v1", resize="pad", boxes=True),
                   ["llm", "connector", "fusion"], 2e-5, 16, 1, precision="fp16", max_grad_norm=1.0),
        ],
    }


def ross() -> dict[str, Any]:
    """Ross (§3.6), CLIP-L/336 + Vicuna-7B: 1 pretrain on LLaVA-558K (plain, projector + denoiser, 1e-3,
    16 x 2 per GPU); 2 finetune on Cambrian-737K (v1, LLM + projector + denoiser, 2e-5, 4 x 4 per GPU,
    pad). The VAE teacher and the vision tower stay frozen. ZeRO-2 then ZeRO-3."""
    return {
        "model": {"preset": "vlmkit-objectives:ross"},
        "output_dir": "runs/ross",
        "stages": [
            _stage("pretrain", _data(LLAVA_558K, template="plain", resize="square"),
                   ["connector", "objective.ross:denoiser"], 1e-3, 16, 2, max_length=8192, deepspeed="zero2"),
            _stage("finetune", _data("data/Cambrian/cambrian737k.json", template="vicuna_v1", resize="pad"),
                   ["llm", "connector", "objective.ross:denoiser"], 2e-5, 4, 4, max_length=32768, deepspeed="zero3"),
        ],
    }


def ross_tiny() -> dict[str, Any]:
    """Ross at CPU scale, everything embedded: the ``ross-tiny`` model (tiny-conv 64 px -> 4x4 tokens,
    2-layer Llama of width 128, the ``builtin:shapes-tiny`` VAE teacher) trained on synthetic shapes for
    1,000 steps of batch 32, all parts but the teacher trainable, fp32 (~3 min on 2 CPU cores).

    ``vlmkit train ross-tiny`` runs it; ``vlmkit reconstruct`` then pictures what the LLM's hidden
    states hold about held-out images. ``benchmarks/bench_ross_evidence.py`` runs it over 3 seeds with an
    lm-only twin (``--set model.objectives=[lm] --set stages.0.trainable=[encoders,connector,llm]``).
    """
    return {
        "model": {"preset": "vlmkit-objectives:ross-tiny"},
        "output_dir": "runs/ross-tiny",
        "seed": 0,
        "stages": [{
            "name": "train",
            "data": {"dataset": "vlmkit-data:synthetic-shapes", "args": {"split": "train"}},
            "trainable": ["encoders", "connector", "llm", "objective.ross:denoiser"],
            "lr": 1e-3, "max_steps": 1000, "batch_size": 32, "schedule": "cosine", "warmup_ratio": 0.03,
            "weight_decay": 0.0, "logging_steps": 25, "save_steps": 500,
        }],
    }
