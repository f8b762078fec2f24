"""lmms-eval model adapter: ``lmms-eval --model vlmkit --model_args pretrained=DIR --tasks ...``.

lmms-eval finds it through the ``lmms_eval.models`` entry point of vlmkit-core (``manifest`` below).
Prompts go through the checkpoint's own chat template and image preprocessing, exactly as in
training and in ``vlmkit generate`` (``vlmkit.inference.generation.generate_batch``); a task's ``<image>`` tags
are kept where the task puts them, otherwise the images go first.

Model arguments (``--model_args key=value,...``): ``pretrained`` (a vlmkit checkpoint folder),
``template`` (default: the checkpoint's), ``max_new_tokens`` (default when a task gives none: 64),
``device`` and ``batch_size`` (also set by lmms-eval's own flags).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image

from vlmkit.data.processing import Features, MultimodalProcessor, collate
from vlmkit.errors import DataError
from vlmkit.inference.generation import build_prompt_turns, generate_batch
from vlmkit.model.checkpoint import load_checkpoint
from vlmkit.model.contracts import IGNORE_INDEX

#: lmms-eval generation settings -> transformers ``generate`` arguments (the rest are ignored)
_SAMPLING = ("temperature", "top_p", "top_k", "num_beams")


def manifest() -> Any:
    """The ``lmms_eval.models`` entry point: how lmms-eval learns the ``vlmkit`` model name."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="vlmkit", simple_class_path=f"{__name__}.VlmkitLmms")


def _images(visuals: Any) -> list[Image.Image]:
    if visuals is None:
        return []
    if not isinstance(visuals, (list, tuple)):
        visuals = [visuals]
    out = []
    for v in visuals:
        if not isinstance(v, Image.Image):
            raise DataError(f"vlmkit takes images; the task gave a {type(v).__name__} (video and audio are not supported)",
                            field="visual", kind="unsupported_visual")
        out.append(v.convert("RGB"))
    return out


def _generation_kwargs(gen: dict[str, Any], default_new_tokens: int) -> tuple[dict[str, Any], list[str]]:
    gen = dict(gen or {})
    until = gen.pop("until", None) or []
    if isinstance(until, str):
        until = [until]
    kwargs: dict[str, Any] = {"max_new_tokens": int(gen.get("max_new_tokens") or default_new_tokens)}
    sample = bool(gen.get("do_sample")) or float(gen.get("temperature") or 0) > 0
    kwargs["do_sample"] = sample
    for key in _SAMPLING:
        value = gen.get(key)
        if value is None or (key != "num_beams" and not sample):
            continue
        kwargs[key] = value
    return kwargs, list(until)


def _cut(text: str, until: Sequence[str]) -> str:
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


class VlmkitLmms(lmms):
    """A vlmkit checkpoint as an lmms-eval "simple" model (generate_until, loglikelihood)."""

    def __init__(self, pretrained: str, template: str | None = None, max_new_tokens: int | str = 64,
                 device: str | None = None, batch_size: int | str | None = 1, **unused: Any) -> None:
        super().__init__()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_checkpoint(pretrained, device=self.device).eval()
        self.processor = MultimodalProcessor.for_model(self.model, template=template)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = max(1, int(batch_size or 1)) if str(batch_size or 1).isdigit() else 1

    # -- requests --------------------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        return self.task_dict[task][split][doc_id]

    def _request(self, req: Instance) -> tuple[str, Any, list[Image.Image]]:
        context, second, doc_to_visual, doc_id, task, split = req.args
        doc = self._doc(task, split, doc_id)
        visuals = _images(doc_to_visual(doc)) if doc_to_visual is not None else []
        return context, second, visuals

    def generate_until(self, requests: list[Instance]) -> list[str]:
        prepared = [self._request(r) for r in requests]
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, (_, gen, _) in enumerate(prepared):
            groups.setdefault(json.dumps(gen or {}, sort_keys=True, default=str), []).append(i)
        for idx in groups.values():
            kwargs, until = _generation_kwargs(prepared[idx[0]][1], self.max_new_tokens)
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start:start + self.batch_size]
                turns = [build_prompt_turns(prepared[i][0], len(prepared[i][2])) for i in chunk]
                texts = generate_batch(self.model, turns, [prepared[i][2] for i in chunk], processor=self.processor,
                                       **kwargs)
                for i, text in zip(chunk, texts):
                    out[i] = _cut(text, until)
                    self.cache_hook.add_partial("generate_until", requests[i].args[:2], out[i])
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """log p(continuation | prompt, images) after the template's assistant prefix, and whether greedy
        decoding would produce exactly those tokens."""
        results = []
        tok = self.model.tokenizer
        for req in requests:
            context, target, images = self._request(req)
            _, _, _, doc_id, task, split = req.args
            continuation = target if isinstance(target, str) else target(self._doc(task, split, doc_id))
            prompt = self.processor(build_prompt_turns(context, len(images)), images, generation=True)
            cont = tok(continuation, add_special_tokens=False)["input_ids"]
            feats = Features(prompt.input_ids + cont, [IGNORE_INDEX] * len(prompt.input_ids) + cont,
                             prompt.pixel_values, None, prompt.num_images, image_sizes=prompt.image_sizes)
            batch = collate([feats], tok.pad_token_id, "right", list(self.model.views))
            pv = batch.get("pixel_values")
            if pv is not None:
                pv = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else [t.to(self.device) for t in v])
                      for k, v in pv.items()}
            out = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                             labels=batch["labels"].to(self.device), pixel_values=pv, compute_loss=False,
                             image_sizes=batch.get("image_sizes"))
            logits, labels = out.logits[0, :-1].float(), out.labels[0, 1:]
            scored = labels != IGNORE_INDEX
            logprobs = torch.log_softmax(logits[scored], dim=-1)
            wanted = labels[scored]
            total = float(logprobs.gather(1, wanted[:, None]).sum())
            greedy = bool((logprobs.argmax(-1) == wanted).all())
            results.append((total, greedy))
            self.cache_hook.add_partial("loglikelihood", req.args[:2], (total, greedy))
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("vlmkit: multi-round generation is not supported")
