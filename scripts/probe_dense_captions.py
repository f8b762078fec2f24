"""What did a dense-caption stage learn? Score its captions attribute by attribute on held-out images.

For the DenseFusion claim (docs/claims.md): the checkpoint after the caption stage writes a caption for each
of N held-out synthetic-shapes images (``style: dense-caption``, test split); each caption is parsed back
into objects and scored against the generator's truth:

* ``count``: the first word is the right number;
* ``colors``, ``shapes``: the sets of colours and shapes named equal the drawn ones;
* ``places``: the set of places (top/bottom, left/right) named equals the drawn one;
* ``pairs``: the set of (colour, shape) pairs equals the drawn one (attributes bound to the right object);
* ``exact``: the whole caption is the reference.

    python scripts/probe_dense_captions.py RUN/variants/*dense*/run/01-dense/final -n 200 -o probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_caption(text: str) -> tuple[str, set[tuple[str, str]], set[tuple[str, ...]]]:
    """'two shapes. red circle top left. blue square bottom right.' -> ('two', {(red, circle), (blue, square)},
    {(top, left), (bottom, right)})."""
    parts = [p.split() for p in text.strip().split(".") if p.strip()]
    count = parts[0][0] if parts and parts[0] else ""
    pairs = {(p[0], p[1]) for p in parts[1:] if len(p) >= 2}
    places = {tuple(p[2:4]) for p in parts[1:] if len(p) >= 2}
    return count, pairs, places


def probe(checkpoint: str, n: int, batch_size: int = 32) -> dict[str, float]:
    from vlmkit.inference.generation import generate_batch
    from vlmkit.model.checkpoint import load_checkpoint
    from vlmkit_data.synthetic import SyntheticShapesDataset

    model = load_checkpoint(checkpoint)
    model.eval()
    data = SyntheticShapesDataset(split="test", n_train=5000, n_test=max(n, 500), style="dense-caption",
                                  progress=False)
    scores = {"count": 0, "colors": 0, "shapes": 0, "places": 0, "pairs": 0, "exact": 0}
    examples = []
    for start in range(0, n, batch_size):
        samples = [data[i] for i in range(start, min(n, start + batch_size))]
        preds = generate_batch(model, [s.turns[:-1] for s in samples], [s.images for s in samples], max_new_tokens=48)
        for s, p in zip(samples, preds):
            want_count, want, want_places = parse_caption(s.turns[-1].text)
            got_count, got, got_places = parse_caption(p)
            scores["count"] += got_count == want_count
            scores["colors"] += {c for c, _ in got} == {c for c, _ in want}
            scores["shapes"] += {h for _, h in got} == {h for _, h in want}
            scores["places"] += got_places == want_places
            scores["pairs"] += got == want
            scores["exact"] += p.strip() == s.turns[-1].text.strip()
            if len(examples) < 8:
                examples.append({"reference": s.turns[-1].text, "caption": p})
    return {"checkpoint": checkpoint, "images": n, **{k: v / n for k, v in scores.items()}, "examples": examples}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("-o", "--out", type=Path)
    args = ap.parse_args()
    results = [probe(c, args.n) for c in args.checkpoints]
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "examples"}))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
