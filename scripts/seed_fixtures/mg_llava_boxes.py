"""What MG-LLaVA keeps of a detector's boxes, made with its own code: the reference for ``vlmkit data boxes``.

MG-LLaVA (PhoenixZ810/MG-LLaVA @ 3237152d) makes its boxes in two places, in this order:

1. ``mg_llava/bbox_generation/image_offline_to_bbox.py`` (a script): per image, OWLv2 queried with
   ``"a photo of {tag}"`` for the image's tags, ``post_process_object_detection(threshold=0.2,
   target_sizes=[[max_wh, max_wh]])`` (OWLv2 pads to a square), then ``boxes.int()``: truncated, NOT clamped;
   written as the box file.
2. ``mg_llava/module/mg_llava_dataset.py``: the box file's boxes go through ``bbox_nms`` (its function in
   ``mg_llava/dataset/utils.py``: torchvision ``batched_nms`` per label, IoU 0.2), then its cap (per label, only
   when more than ``limit_num`` boxes remain; the tiny cases here stay under it).

This script runs step 1's calls as the script makes them (it is a ``main`` with a GPU model, so the same calls
are made here on a tiny random OWLv2 on the CPU) and imports step 2's ``bbox_nms`` unchanged from ``--repo``
(the modules its file imports for video and training are inert stand-ins; ``bbox_nms`` uses torch and
torchvision only). It writes ``tests/fixtures/seeds/mg-llava/boxes_reference.json``: per image, the kept boxes,
labels and scores, best first. Run it in vlmkit's own environment (it needs torchvision and transformers 5,
the same as the test), never copying MG-LLaVA's code::

    python scripts/seed_fixtures/mg_llava_boxes.py --repo repos/mgllava --out tests/fixtures/seeds/mg-llava
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import inert_modules  # noqa: E402

TAGS = ["cat", "dog", "car"]
#: image sizes (w, h): wide, square, tall, and one whose detections spill into OWLv2's padding
SIZES = [(80, 50), (64, 64), (40, 90), (96, 24)]


def tiny_owlv2(root: Path) -> Path:
    """A tiny random OWLv2 (no download), its class head shifted so that every query scores ~0.9: the threshold,
    NMS and caps have work to do. Saved with the fixture (``owlv2-tiny/``), which the tests load: a seeded init
    differs between transformers releases."""
    import tempfile

    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    root.mkdir(parents=True, exist_ok=True)
    # id 0 stays unused: OWL masks out a query whose first token id is 0 (its padding convention)
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        tok = CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), pad_token="<|endoftext|>")
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                  patch_size=16)
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)).eval()
    with torch.no_grad():
        model.class_head.logit_shift.bias.fill_(4.0)
        # boxes near OWL's per-patch prior (one cell each), enlarged and jittered so that neighbours overlap:
        # NMS has boxes to drop, and border cells reach into OWLv2's padding, where the clamp matters
        model.box_head.dense2.weight.mul_(0.05)
        model.box_head.dense2.bias.copy_(torch.tensor([0.0, 0.0, 1.2, 1.2]))
    model.save_pretrained(root)
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tok).save_pretrained(
        root)
    return root


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


def tags_of(k: int) -> list[str]:
    return TAGS[:k % len(TAGS) + 1]


def original_bbox_nms(repo: Path):
    # the video and training helpers MG-LLaVA's utils.py imports beside bbox_nms
    inert_modules.install(("cv2", "requests", "mmengine", "xtuner", "pytorchvideo", "decord"),
                          exact=("torchvision.transforms._transforms_video",))
    spec = importlib.util.spec_from_file_location("mg_llava_dataset_utils", repo / "mg_llava" / "dataset" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.bbox_nms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, required=True, help="a work tree of PhoenixZ810/MG-LLaVA")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    # the detector is kept with the fixture: a seeded init is not the same across transformers releases
    folder = tiny_owlv2(args.out / "owlv2-tiny")
    processor = AutoProcessor.from_pretrained(str(folder))
    owl_model = AutoModelForZeroShotObjectDetection.from_pretrained(str(folder)).eval()
    bbox_nms = original_bbox_nms(args.repo)
    out = []
    for k, image in enumerate(images()):
        tags = tags_of(k)
        # step 1, as image_offline_to_bbox.py makes it (on the CPU)
        prompt_tags = ["a photo of " + tag for tag in tags]
        with torch.no_grad():
            inputs = processor(text=[prompt_tags], images=image, return_tensors="pt")
            outputs = owl_model(**inputs)
        max_wh = max(image.size)
        results = processor.image_processor.post_process_object_detection(
            outputs=outputs, threshold=0.2, target_sizes=torch.Tensor([[max_wh, max_wh]]))
        boxes, scores, labels = results[0]["boxes"], results[0]["scores"], results[0]["labels"]
        boxes = boxes.int().cpu().numpy().tolist()
        scores = scores.cpu().numpy().tolist()
        labels = [tags[label] for label in labels.cpu().numpy().tolist()]
        # step 2, its own function
        kept, kept_labels, kept_scores = bbox_nms(boxes, labels, scores, 0.2)
        out.append({"id": f"i{k}", "size": list(image.size), "tags": tags, "detected": len(boxes),
                    "boxes": kept.int().tolist(), "labels": kept_labels,
                    "scores": [round(float(s), 4) for s in kept_scores]})
        print(f"i{k} {image.size}: {len(boxes)} detected, {len(kept_labels)} kept by bbox_nms")
    from llava_original import _commit

    commit = _commit(args.repo)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "boxes_reference.json").write_text(json.dumps({
        "made_by": "scripts/seed_fixtures/mg_llava_boxes.py", "original": "PhoenixZ810/MG-LLaVA", "commit": commit,
        "steps": ["image_offline_to_bbox.py: threshold 0.2 on the padded square, boxes.int() (no clamp)",
                  "mg_llava/dataset/utils.py bbox_nms (batched_nms per label, IoU 0.2), run unchanged"],
        "images": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
