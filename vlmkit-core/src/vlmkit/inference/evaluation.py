"""Exact-match evaluation on short-answer data (any vlmkit dataset of Samples).

The reference is the last assistant turn; the prompt is everything before it. Answers are compared
after lower-casing and stripping surrounding whitespace and final punctuation. Categories come from
``sample.meta["category"]`` when the records have one.
"""

from __future__ import annotations

import string
from collections import defaultdict
from typing import Any

import torch

from vlmkit.errors import DataError
from vlmkit.inference.generation import generate_batch
from vlmkit.model.vlm import VisionLanguageModel


def normalise_answer(text: str) -> str:
    return text.strip().lower().strip(string.punctuation + " ").strip()


@torch.no_grad()
def evaluate(model: VisionLanguageModel, dataset: Any, *, batch_size: int = 32, limit: int | None = None,
             max_new_tokens: int = 8, template: str | None = None, progress: bool = True) -> dict[str, Any]:
    model.eval()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    per_cat: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    examples = []
    it = range(0, n, batch_size)
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="eval", unit="q", leave=False)
        except ImportError:  # pragma: no cover
            bar = None
    for start in it:
        samples = [dataset[i] for i in range(start, min(n, start + batch_size))]
        prompts, refs, imgs = [], [], []
        for s in samples:
            if not s.turns or s.turns[-1].role != "assistant" or not s.turns[-1].text.strip():
                found = ("has no turns" if not s.turns else f"ends with a {s.turns[-1].role} turn"
                         if s.turns[-1].role != "assistant" else "ends with an empty answer")
                raise DataError(f"an eval record must end with the reference answer (a non-empty last assistant "
                                f"turn); this one {found}", file=s.source or None, record_id=s.id, field="conversations",
                                kind="no_reference")
            prompts.append(s.turns[:-1])
            refs.append(s.turns[-1].text)
            imgs.append(s.images)
        preds = generate_batch(model, prompts, imgs, template=template, max_new_tokens=max_new_tokens)
        for s, p, r in zip(samples, preds, refs):
            ok = normalise_answer(p) == normalise_answer(r)
            cat = str(s.meta.get("category", "all"))
            per_cat[cat][0] += int(ok)
            per_cat[cat][1] += 1
            if len(examples) < 20:
                examples.append({"id": s.id, "prediction": p, "reference": r, "correct": ok, "category": cat})
        if bar is not None:
            bar.update(len(samples))
    if bar is not None:
        bar.close()
    correct = sum(c for c, _ in per_cat.values())
    total = sum(t for _, t in per_cat.values())
    return {
        "accuracy": correct / total if total else 0.0, "correct": correct, "total": total,
        "categories": {k: {"accuracy": c / t if t else 0.0, "correct": c, "total": t} for k, (c, t) in per_cat.items()},
        "examples": examples,
    }


def majority_answer_rates(dataset: Any, limit: int | None = None) -> dict[str, float]:
    """The accuracy of always giving each category's most common reference answer, per category and overall
    (``all``, over every record): the chance level a score should be read against. One pass over the records,
    through the dataset's ``text_sample(i)`` where it has one (the text without decoding images)."""
    from collections import Counter

    n = len(dataset) if limit is None else min(limit, len(dataset))
    get = getattr(dataset, "text_sample", None) or dataset.__getitem__
    answers: dict[str, Counter] = defaultdict(Counter)
    for i in range(n):
        s = get(i)
        answers[str(s.meta.get("category", "all"))][normalise_answer(s.turns[-1].text) if s.turns else ""] += 1
    rates = {cat: c.most_common(1)[0][1] / sum(c.values()) for cat, c in answers.items()}
    rates["all"] = sum(c.most_common(1)[0][1] for c in answers.values()) / max(1, n)
    return rates


def evaluate_file(model_dir: str, data: str, *, dataset: str, image_root: str | None = None, batch_size: int = 32,
                  limit: int | None = None, trust_remote_code: bool = False) -> dict[str, Any]:
    """Load a checkpoint and a data file through the registered ``dataset`` component, then evaluate."""
    from pathlib import Path

    from vlmkit.model.checkpoint import load_checkpoint
    from vlmkit.plugins.registry import registry

    ds = registry.load("dataset", dataset)(path=data, image_root=image_root or str(Path(data).parent))
    if len(ds) == 0:
        raise DataError("no records to evaluate (the file is empty)", file=data, kind="empty")
    model = load_checkpoint(model_dir, trust_remote_code=trust_remote_code)
    return evaluate(model, ds, batch_size=batch_size, limit=limit)
