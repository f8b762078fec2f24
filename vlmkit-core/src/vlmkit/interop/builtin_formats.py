"""Core's own checkpoint formats: transformers' Llava (``hf-llava``), VipLlava (``hf-vip-llava``), LlavaNext
(``hf-llava-next``) and LlavaOnevision (``hf-llava-onevision``), and the LLaVA codebase's (``llava``).

Both convert their vision tower and projector through the plugins' part converters; these classes only
adapt ``vlmkit.interop.hf_llava`` and ``vlmkit.interop.llava_repo`` to the ``CheckpointFormat`` contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmkit.errors import ConfigError
from vlmkit.interop.formats import CheckpointFormat, ImportOptions
from vlmkit.interop.llava_repo import LlavaRepoFormat


class HFLlavaFormat(CheckpointFormat):
    """transformers' Llava-shaped folders; ``family`` is the HF model_type."""

    family = "llava"
    name = "hf-llava"
    description = "transformers' LlavaForConditionalGeneration (LLaVA-1.5 as llava-hf publishes it)"
    detection = "config.json model_type 'llava' with a text_config (LlavaForConditionalGeneration)"
    releases = ("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-13b-hf")
    can_export = True

    def detect(self, folder: Path, config: dict[str, Any]) -> bool:
        return config.get("model_type") == self.family and "mm_vision_tower" not in config

    def import_checkpoint(self, src: Path, out: Path, options: ImportOptions) -> Path:
        from vlmkit.interop.hf_llava import import_hf

        if options.vision_tower:
            raise ConfigError(f"--vision-tower: the {self.name} format carries its vision tower; nothing to point to")
        return import_hf(src, out, options.progress, tokenizer=options.tokenizer, dtype=options.dtype,
                         sets=options.sets, family=self.family)

    def export_problems(self, model: Any) -> list[str]:
        from vlmkit.interop.hf_llava import _export_layout
        from vlmkit.interop.llava_conversion import llava_converters

        return _export_layout(model, llava_converters(), self.family)[1]

    def export_checkpoint(self, model_dir: Path, out: Path) -> Path:
        from vlmkit.interop.hf_llava import export_hf

        return export_hf(model_dir, out, family=self.family)


class HFVipLlavaFormat(HFLlavaFormat):
    family = "vipllava"
    name = "hf-vip-llava"
    description = "transformers' VipLlavaForConditionalGeneration (ViP-LLaVA as llava-hf publishes it)"
    detection = "config.json model_type 'vipllava' (VipLlavaForConditionalGeneration)"
    releases = ("llava-hf/vip-llava-7b-hf", "llava-hf/vip-llava-13b-hf")


class HFLlavaNextFormat(HFLlavaFormat):
    family = "llava_next"
    name = "hf-llava-next"
    description = "transformers' LlavaNextForConditionalGeneration (LLaVA-NeXT / LLaVA-1.6, AnyRes tiling)"
    detection = "config.json model_type 'llava_next' (LlavaNextForConditionalGeneration)"
    releases = ("llava-hf/llava-v1.6-vicuna-7b-hf", "llava-hf/llava-v1.6-mistral-7b-hf")


class HFLlavaOnevisionFormat(HFLlavaFormat):
    family = "llava_onevision"
    name = "hf-llava-onevision"
    description = "transformers' LlavaOnevisionForConditionalGeneration (LLaVA-OneVision, anyres_max tiling)"
    detection = "config.json model_type 'llava_onevision' (LlavaOnevisionForConditionalGeneration)"
    releases = ("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "llava-hf/llava-onevision-qwen2-7b-ov-hf")


def core_formats() -> list[CheckpointFormat]:
    return [HFLlavaFormat(), HFVipLlavaFormat(), HFLlavaNextFormat(), HFLlavaOnevisionFormat(), LlavaRepoFormat()]
