"""Dataset access at DenseFusion-1M scale: bounded memory and time to open, scan, convert; random-access latency.

A synthetic DenseFusion JSONL (``{image_id, url, caption}``, captions of 40-120 words like the release's
dense captions, 1M records by default) is written once. Each measurement runs in a fresh interpreter so
its memory is its own (peak RSS over the phase, measured as ``VmHWM`` after resetting the mark post-import):

* open (``DenseFusionDataset``: byte-offset index) vs reading every record into a list (``json.loads`` per
  line, what an eager loader such as LLaVA's ``json.load`` holds): time, peak RSS, ratio;
* a sequential scan of every caption (``iter_caption_records``) and ``convert_densefusion`` to LLaVA JSONL
  with 1 record in 100 having its image on disk (the other 99 go to the missing-records report): time, peak RSS;
* random access: ``DenseFusionDataset.caption_record(i)`` and ``LlavaJsonDataset.record(i)`` (on a 1M-record
  LLaVA JSONL written from the same captions) at random ``i``, vs indexing the eager in-memory list:
  median latency. The lazy reads cost a seek and a parse (microseconds), the eager list holds gigabytes.

Result: ``benchmarks/results/dataset_access.json``; ``docs/data.md`` (Benchmarks) quotes it.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

WORDS = ("the a image shows person dog street car red blue sign with text reading OPEN on left right of and there "
         "are two people table window building sky cloud green tree bright light shadow wooden metal").split()


def write_densefusion(path: str, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            caption = " ".join(rng.choices(WORDS, k=rng.randint(40, 120))) + "."
            f.write(json.dumps({"image_id": f"{i:08d}", "url": f"https://example.com/{i:08d}.jpg",
                                "caption": caption}) + "\n")


def write_llava(src: str, dst: str) -> None:
    with open(src, encoding="utf-8") as fi, open(dst, "w", encoding="utf-8") as fo:
        for line in fi:
            r = json.loads(line)
            fo.write(json.dumps({"id": r["image_id"], "image": f"{r['image_id']}.png",
                                 "conversations": [{"from": "human", "value": "<image>"},
                                                   {"from": "gpt", "value": r["caption"]}]}) + "\n")


# -- phases, each run in a fresh interpreter: python bench_dataset_access.py --phase NAME ARGS ---------------
def phase(name: str, path: str, extra: str, samples: int) -> dict:
    import gc

    from vlmkit_data.densefusion import DenseFusionDataset, convert_densefusion, iter_caption_records
    from vlmkit_data.llava_json import LlavaJsonDataset

    gc.collect()
    base = common.rss_bytes()
    common.reset_peak_rss()
    t0 = time.perf_counter()
    out: dict = {}
    if name == "open_lazy":
        ds = DenseFusionDataset(path, progress=False)
        out["records"] = len(ds)
        out["held_index_bytes"] = ds.index.nbytes
    elif name == "open_eager":
        with open(path, encoding="utf-8") as f:
            data = [json.loads(line) for line in f]
        out["records"] = len(data)
    elif name == "scan":
        out["records"] = sum(1 for _ in iter_caption_records(path, progress=False))
    elif name == "convert":
        rep = convert_densefusion(path, os.path.join(extra, "out.jsonl"), os.path.join(extra, "images"),
                                  progress=False)
        out.update(records=rep.written + rep.missing, written=rep.written, missing=rep.missing)
    elif name == "random_lazy":
        ds = DenseFusionDataset(path, progress=False)
        out.update(latency=_latency(lambda i: ds.caption_record(i).caption, len(ds), samples))
        lj = LlavaJsonDataset(extra, boxes=False, regions=False, progress=False, index_cache=False)
        out.update(latency_llava=_latency(lambda i: lj.record(i)["conversations"], len(lj), samples))
    elif name == "random_eager":
        with open(path, encoding="utf-8") as f:
            data = [json.loads(line) for line in f]
        out.update(latency=_latency(lambda i: data[i]["caption"], len(data), samples))
    out["seconds"] = time.perf_counter() - t0
    peak = common.peak_rss_bytes()
    out["peak_rss_over_base"] = (peak - base) if peak is not None else None
    out["rss_after_over_base"] = common.rss_bytes() - base
    return out


def _latency(fn, n: int, samples: int) -> dict:
    rng = random.Random(1)
    idx = [rng.randrange(n) for _ in range(samples)]
    for i in idx[:100]:
        fn(i)
    times = []
    for i in idx:
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    times.sort()
    return {"median_us": times[len(times) // 2] * 1e6, "p99_us": times[int(len(times) * 0.99)] * 1e6}


def run_phase(name: str, path: str, extra: str = "", samples: int = 20000) -> dict:
    return common.run_json_subprocess([__file__, "--phase", name, path, extra, str(samples)], timeout=1800)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--phase":
        print(json.dumps(phase(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
        return
    p = common.parser(__doc__.splitlines()[0], "dataset_access.json")
    p.add_argument("--records", type=int, default=1_000_000)
    args = p.parse_args()
    n = 20_000 if args.quick else args.records
    samples = 2_000 if args.quick else 20_000
    mon = common.LoadMonitor()
    metrics = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "DenseFusion-1M.jsonl")
        t = time.perf_counter()
        write_densefusion(path, n)
        llava = os.path.join(tmp, "llava.jsonl")
        write_llava(path, llava)
        images = os.path.join(tmp, "images")
        os.makedirs(images)
        for i in range(0, n, 100):  # 1 record in 100 has its image
            open(os.path.join(images, f"{i:08d}.png"), "wb").close()
        setup_s = time.perf_counter() - t
        size = os.path.getsize(path)
        mon.sample()
        lazy, eager = run_phase("open_lazy", path), run_phase("open_eager", path)
        assert lazy["records"] == eager["records"] == n
        metrics.append(common.metric("open: peak RSS, byte index vs every record in a list",
                                     lazy["peak_rss_over_base"], "bytes", reference=eager["peak_rss_over_base"],
                                     ratio=lazy["peak_rss_over_base"] / eager["peak_rss_over_base"], target="<= 0.1",
                                     detail={"held_index_bytes": lazy["held_index_bytes"], "file_bytes": size}))
        metrics.append(common.metric("open: time, byte index vs every record in a list", lazy["seconds"], "s",
                                     reference=eager["seconds"], ratio=lazy["seconds"] / eager["seconds"]))
        mon.sample()
        scan = run_phase("scan", path)
        assert scan["records"] == n
        metrics.append(common.metric("sequential scan of every caption: peak RSS", scan["peak_rss_over_base"], "bytes",
                                     reference=eager["peak_rss_over_base"],
                                     ratio=scan["peak_rss_over_base"] / eager["peak_rss_over_base"], target="<= 0.1",
                                     detail={"seconds": scan["seconds"], "records_per_s": n / scan["seconds"]}))
        mon.sample()
        conv = run_phase("convert", path, tmp)
        assert conv["written"] == len(range(0, n, 100)) and conv["missing"] == n - conv["written"]
        metrics.append(common.metric("convert to LLaVA JSONL (+ missing report): peak RSS", conv["peak_rss_over_base"],
                                     "bytes", reference=eager["peak_rss_over_base"],
                                     ratio=conv["peak_rss_over_base"] / eager["peak_rss_over_base"], target="<= 0.1",
                                     detail={"seconds": conv["seconds"], "records_per_s": n / conv["seconds"],
                                             "written": conv["written"], "missing": conv["missing"]}))
        mon.sample()
        rl, re_ = run_phase("random_lazy", path, llava, samples), run_phase("random_eager", path, "", samples)
        metrics.append(common.metric("random access: DenseFusion caption_record(i) median latency",
                                     rl["latency"]["median_us"], "us", reference=re_["latency"]["median_us"],
                                     ratio=rl["latency"]["median_us"] / re_["latency"]["median_us"],
                                     detail={"p99_us": rl["latency"]["p99_us"]}))
        metrics.append(common.metric("random access: LlavaJsonDataset.record(i) median latency",
                                     rl["latency_llava"]["median_us"], "us", reference=re_["latency"]["median_us"],
                                     ratio=rl["latency_llava"]["median_us"] / re_["latency"]["median_us"],
                                     target="<= 1000", detail={"p99_us": rl["latency_llava"]["p99_us"]}))
    out = common.write_result(
        args.out, "dataset_access", title="Dataset access at DenseFusion-1M scale", quick=args.quick,
        command=common.command_line("bench_dataset_access.py", sys.argv[1:]),
        config={"records": n, "file_bytes": size, "random_samples": samples, "setup_seconds": round(setup_s, 1)},
        metrics=metrics, load=mon.summary(), method=__doc__ or "",
        notes=["Peak RSS is VmHWM minus the RSS after imports, in a fresh interpreter per phase.",
               "The eager reference holds every record as Python objects; the latency ratio (lazy/eager) is >> 1 "
               "by construction: a seek + json.loads against a list lookup. The claim is that random access "
               "stays in microseconds while memory stays bounded."])
    for m in metrics:
        print(f"{m['name']}: {m['value']:.4g} {m['unit']} (reference {m.get('reference', float('nan')):.4g}, "
              f"ratio {m.get('ratio', float('nan')):.3g})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
