"""Which dtype an imported fp16 release should compute in on a CPU: accuracy and speed of fp16 vs fp32.

The LLaVA-1.5 fixture (written by the original code) is stored again in fp16, as liuhaotian/llava-v1.5-7b's
shards are (``torch_dtype: float16``). It is imported twice from that one folder: with ``--dtype float16``
(the stored dtype, what vlmkit did before) and with the CPU default (float32, lossless upcast of the same
fp16 numbers). The reference is the fp32 computation on those fp16 weights, which is what the original code
computes when loaded in fp32 (the seed parity tests show vlmkit's fp32 path equals it within 1e-5).

Measured: max |logit diff| of each import against that reference, and the forward time of each on the
fixture's batch (interleaved rounds; ratio = median of per-round fp16 / fp32 times).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FIXTURE = common.ROOT / "tests" / "fixtures" / "seeds" / "llava-1.5"


def fp16_release(dest: Path) -> Path:
    """The fixture's release folder with every floating-point tensor stored as fp16 (same files, same names)."""
    import json

    shutil.copytree(FIXTURE / "model", dest)
    for shard in dest.glob("pytorch_model-*.bin"):
        tensors = torch.load(str(shard), map_location="cpu", weights_only=True)
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(shard))
    config = json.loads((dest / "config.json").read_text())
    config["torch_dtype"] = "float16"
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest


def main() -> None:
    args = common.parser(__doc__.splitlines()[0], "import_dtype.json").parse_args()
    torch.set_num_threads(1)
    from vlmkit.interop.catalogue import import_checkpoint
    from vlmkit.interop.formats import ImportOptions
    from vlmkit.model.checkpoint import load_checkpoint
    from vlmkit.model.contracts import IMAGE_PLACEHOLDER

    ref = load_file(str(FIXTURE / "reference.safetensors"))
    ids, mask = ref["input_ids"], ref["attention_mask"]
    pixels = {"base": ref["pixel_values"][:int((ids == IMAGE_PLACEHOLDER).sum())]}
    valid = torch.arange(ref["logits"].shape[1])[None, :] < ref["spliced_lengths"][:, None]
    with tempfile.TemporaryDirectory() as tmp:
        src = fp16_release(Path(tmp) / "llava-v1.5-fp16")
        tower = str(FIXTURE / "clip-tower")
        models = {}
        for name, dtype in (("float32 (CPU default)", None), ("float16 (stored dtype)", "float16")):
            ckpt = import_checkpoint(src, Path(tmp) / name.split()[0], options=ImportOptions(vision_tower=tower,
                                                                                            dtype=dtype))
            models[name] = load_checkpoint(ckpt).eval()

        def logits(model):
            with torch.no_grad():
                return model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits.float()

        reference = logits(models["float32 (CPU default)"])
        diffs = {n: float((logits(m) - reference)[valid].abs().max()) for n, m in models.items()}
        repeats = 3 if args.quick else 30
        times = common.interleave({n: (lambda m=m: logits(m)) for n, m in models.items()}, repeats=repeats)
    fp32, fp16 = "float32 (CPU default)", "float16 (stored dtype)"
    ratio = common.paired_ratio(times[fp16], times[fp32])
    metrics = [
        common.metric("max |logit diff|, fp16 compute vs fp32 compute of the same fp16 weights", diffs[fp16],
                      "abs logit", detail={"fp32": diffs[fp32]}),
        common.metric("forward time, fp16 / fp32 (tiny LLaVA-1.5 fixture, batch of 3)", ratio, "ratio",
                      ratio=ratio, detail={n: common.spread(t) for n, t in times.items()}),
    ]
    common.log(f"diffs {diffs}; fp16/fp32 time ratio {ratio:.2f}")
    common.write_result(args.out, "import_dtype", title="fp16 releases on a CPU: computing in fp16 vs fp32",
                        quick=args.quick, command=common.command_line(__file__, sys.argv[1:]),
                        config={"fixture": "llava-1.5", "repeats": repeats, "torch_threads": 1},
                        metrics=metrics, method=__doc__ or "")


if __name__ == "__main__":
    main()
