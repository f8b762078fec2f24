"""Make ``tests/fixtures/checkpoints/convnext-pre-0.2/``: a checkpoint written by vlmkit before 0.2, when the
``convnext``/``convnext5`` towers held transformers' ConvNeXt modules, and the logits it gave.

Run it with the sources of a release before 0.2 first on the path, e.g. from a worktree of commit 252e576:

    git worktree add /tmp/old 252e576
    PYTHONPATH=$(ls -d /tmp/old/vlmkit-*/src | paste -sd:) python scripts/checkpoint_fixtures/make_pre_0_2.py \
        tests/fixtures/checkpoints/convnext-pre-0.2

Two towers, so both layouts are covered: MG-LLaVA's four-stage ``convnext`` and ConvLLaVA's ``convnext5``
(``concat`` by channel over their common 2x2 grid). Every weight is perturbed off its init so that a
tensor read into the wrong place cannot go unnoticed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(out: Path) -> None:
    import vlmkit_encoders.convnext as convnext
    from vlmkit.model.assembly import build_model
    from vlmkit.model.checkpoint import save_checkpoint
    from vlmkit.model.config import ModelConfig

    assert hasattr(convnext, "load_trunk"), "run with the sources of a release before 0.2 first on PYTHONPATH"
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict({
        "encoders": [{"name": "convnext", "args": {"config": "tiny", "image_size": 64}},
                     {"name": "convnext5", "args": {"config": "tiny", "image_size": 128, "stage5_width": 24,
                                                    "stage5_depth": 1, "view": "base"}}],
        "fusion": [{"name": "concat"}], "connector": "mlp2x_gelu", "llm": "tiny-llama"})
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out / "checkpoint")
    torch.manual_seed(1)
    pixels = {"hires": torch.randn(1, 3, 64, 64), "base": torch.randn(1, 3, 128, 128)}
    with torch.no_grad():
        feats = [enc(pixels[enc.view.name]) for enc in model.encoders]
    (out / "reference.json").write_text(json.dumps({
        "seed": 1, "pixels": {k: list(v.shape) for k, v in pixels.items()},
        "tokens": [f.tokens.tolist() for f in feats]}) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
