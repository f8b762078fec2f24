"""Which prompt goes on which region: a shape from the dataset's allowed list, a colour, an opacity.

Shapes are drawn i.i.d. from the allowed list (ViP-LLaVA's ``get_color_shape``). A shape used on
several regions gets a *named* colour per region, all different, so "the red rectangle" and "the
blue rectangle" can be told apart; a shape used once is named from the pool or a random RGB (50/50),
in which case the text calls it just "the rectangle". ViP-LLaVA's refcocog/vg_rel path instead shares
one colour across boxes, so two rectangles on one vg_rel image could both be "the red rectangle";
here every dataset type uses the unambiguous rule.
"""

from __future__ import annotations

import collections
import random
from typing import Sequence

from .drawing import VisualPrompt, sample_alpha
from .phrases import COLOR_POOL, SHAPES


def assign_prompts(n: int, shapes: Sequence[str], rng: random.Random, *, alpha: int | None = None,
                   color: str | None = None) -> list[VisualPrompt]:
    """``n`` prompts. ``alpha`` fixes the opacity (evaluation uses 128); ``color`` fixes a named colour.

    Raises ``ValueError`` when ``n`` regions cannot get distinct references (more than 9 per shape).
    """
    if not shapes:
        raise ValueError("no visual prompt shapes allowed")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise ValueError(f"unknown visual prompt shape(s) {unknown}; shapes: {', '.join(SHAPES)}")
    names = list(COLOR_POOL)
    if color is None and n > len(names) * len(set(shapes)):
        raise ValueError(f"{n} regions cannot be told apart with {len(set(shapes))} shape(s) x {len(names)} colours")
    chosen = [rng.choice(list(shapes)) for _ in range(n)]
    if color is None:
        _spread(chosen, list(dict.fromkeys(shapes)), len(names), rng)
    counts = collections.Counter(chosen)
    used: dict[str, set[str]] = collections.defaultdict(set)
    prompts = []
    for shape in chosen:
        if color is not None:
            name: str | None = color
            rgb = COLOR_POOL[color]
        elif counts[shape] > 1:
            name = rng.choice([c for c in names if c not in used[shape]])
            rgb = COLOR_POOL[name]
        elif rng.random() < 0.5:
            name = rng.choice(names)
            rgb = COLOR_POOL[name]
        else:
            name, rgb = None, (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        if name is not None:
            used[shape].add(name)
        prompts.append(VisualPrompt(shape, rgb, alpha if alpha is not None else sample_alpha(shape, rng), name))
    return prompts


def _spread(chosen: list[str], shapes: list[str], per_shape: int, rng: random.Random) -> None:
    """Move regions off a shape used more than ``per_shape`` times (in place), so colours suffice."""
    counts = collections.Counter(chosen)
    for i, shape in enumerate(chosen):
        if counts[shape] > per_shape:
            free = [s for s in shapes if counts[s] < per_shape]
            new = rng.choice(free)
            counts[shape] -= 1
            counts[new] += 1
            chosen[i] = new
