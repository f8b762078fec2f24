"""LLaVA JSON data loading: random access, sequential throughput, and indexing a 1M-record file.

``vlmkit_data.llava_json.LlavaJsonDataset`` reads records lazily through a byte-offset index. Measured
against references that do the same work by hand, in the same run:

* random-access latency of ``dataset[i]`` (record parse, checks, image decode to RGB) against the floor
  of that work: seek + read the same bytes, ``json.loads``, PIL open + ``convert("RGB")`` of the same
  image. Image records and text-only records separately; interleaved, median and p95 (ratio target <= 1.5);
* sequential throughput, records/s over the whole file in order, against a plain loop over the file's
  lines doing ``json.loads`` + the same image decode (ratio of records/s, target >= 0.67);
* indexing a synthetic 1,000,000-record file, JSON lines and a JSON array (LLaVA's own format), each in a
  fresh subprocess: wall time to construct the dataset (index + the 64-record scan) and peak RSS. The
  RSS high-water mark is reset after imports (``/proc/self/clear_refs``), so the delta is the index's own
  cost; the process's whole peak (VmHWM) is reported too. References, also in fresh subprocesses: for JSON
  lines a pure-Python offset index (a list of line offsets, the naive lazy loader; time ratio target
  <= 1.0), and LLaVA's eager loading (``json.load`` / ``json.loads`` of every record into memory; the
  memory ratio, and the time reference for the JSON array, where no line trick applies).

Images are 640x480 JPEGs (COCO-like), 64 distinct files shared round-robin, so the page cache holds them
and decode rather than disk speed is measured.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SIZES = {
    "full": dict(records=1000, images=64, index_records=1_000_000, random_reads=300, rounds=9),
    "quick": dict(records=60, images=4, index_records=20_000, random_reads=20, rounds=2),
}
WORDS = ("what is the color of the object in the picture describe image shape left right top bottom there "
         "are two three red blue green circle square large small").split()


# -- synthetic data ------------------------------------------------------------------------------------
def make_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` 640x480 JPEGs with smooth gradients and shapes plus noise (compresses like a photo-ish image)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    yy, xx = np.mgrid[0:480, 0:640]
    for k in range(n):
        base = np.stack([(xx * (k + 1)) % 256, (yy * 2 + k * 7) % 256, (xx + yy + 13 * k) % 256], -1)
        arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr)
        draw = ImageDraw.Draw(im)
        for _ in range(6):
            x, y = rng.integers(0, 560), rng.integers(0, 400)
            draw.ellipse([x, y, x + 80, y + 80], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        name = f"img_{k:03d}.jpg"
        im.save(folder / name, quality=90)
        names.append(f"images/{name}")
    return names


def make_record(i: int, rng: random.Random, image: str | None) -> dict[str, Any]:
    q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16)))
    a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40)))
    rec: dict[str, Any] = {"id": f"{i:08d}"}
    if image is not None:
        rec["image"] = image
        q = "<image>\n" + q
    rec["conversations"] = [{"from": "human", "value": q + " ?"}, {"from": "gpt", "value": a + "."}]
    return rec


def write_dataset(root: Path, n: int, n_images: int) -> tuple[Path, list[int], list[int]]:
    """A JSONL file: 3 of 4 records with an image, 1 of 4 text-only. Returns path, image and text indices."""
    images = make_images(root / "images", n_images)
    rng = random.Random(0)
    with_image, text_only = [], []
    path = root / "data.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            img = images[i % n_images] if i % 4 else None
            (with_image if img else text_only).append(i)
            f.write(json.dumps(make_record(i, rng, img)) + "\n")
    return path, with_image, text_only


def write_big(root: Path, n: int) -> tuple[Path, Path]:
    """``n`` records as JSON lines and as a JSON array (tiny image refs, like LLaVA's mix file)."""
    rng = random.Random(1)
    jsonl, array = root / "big.jsonl", root / "big.json"
    # build a few hundred distinct records and vary only the id: fast to write, realistic sizes
    templates = [json.dumps(make_record(0, rng, f"coco/train2017/{k:012d}.jpg" if k % 4 else None))[len('{"id": "00000000"'):]
                 for k in range(512)]
    with open(jsonl, "w") as fl, open(array, "w") as fa:
        fa.write("[\n")
        for i in range(n):
            body = f'{{"id": "{i:08d}"{templates[i % len(templates)]}'
            fl.write(body + "\n")
            fa.write(body + (",\n" if i < n - 1 else "\n"))
        fa.write("]\n")
    return jsonl, array


# -- subprocess workers ------------------------------------------------------------------------------
def index_worker(kind: str, path: str) -> dict[str, Any]:
    """Run in a fresh process: build one index and report time and memory.

    Memory comes from VmHWM (per address space, fresh at exec), not ``ru_maxrss``: Linux carries a
    parent's ``ru_maxrss`` into a forked-and-exec'd child, so a child's own figure can be the parent's.
    """
    if kind == "vlmkit":
        from vlmkit_data.llava_json import LlavaJsonDataset  # imports before the memory baseline
    import gc

    gc.collect()
    base = common.rss_bytes()
    if not common.reset_peak_rss():
        raise RuntimeError("cannot reset the RSS high-water mark (/proc/self/clear_refs)")
    t0 = time.perf_counter()
    if kind == "vlmkit":
        ds = LlavaJsonDataset(path, index_cache=False, progress=False)
        n = len(ds)
    elif kind == "python-offsets":  # the naive lazy loader: a Python list of line offsets
        offsets = []
        pos = 0
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    offsets.append(pos)
                pos += len(line)
        n = len(offsets)
    elif kind == "eager":  # LLaVA's loader: every record parsed and kept in memory
        if path.endswith(".jsonl"):
            with open(path) as f:
                records = [json.loads(line) for line in f if line.strip()]
        else:
            with open(path) as f:
                records = json.load(f)
        n = len(records)
    else:
        raise ValueError(kind)
    elapsed = time.perf_counter() - t0
    peak = common.peak_rss_bytes()
    return {"kind": kind, "records": n, "seconds": elapsed, "base_rss": base, "peak_delta": peak - base,
            "peak_rss": peak}


# -- in-process measurements -------------------------------------------------------------------------
def floor_read(path: Path, start: int, end: int, image_root: Path):
    """The minimum work behind ``dataset[i]``: read the bytes, parse, decode the image."""
    from PIL import Image

    with open(path, "rb") as f:
        f.seek(start)
        rec = json.loads(f.read(end - start))
    img = rec.get("image")
    if img is not None:
        with Image.open(image_root / img) as im:
            im.load()
            return rec, im.convert("RGB")
    return rec, None


def random_access(ds, path: Path, picks: list[int], rounds: int) -> dict[str, list[float]]:
    """Per-read latencies of ``ds[i]`` and of the floor, interleaved read by read."""
    root = path.parent
    lat: dict[str, list[float]] = {"vlmkit": [], "floor": []}
    for r in range(rounds):
        for i in picks:
            s, e = int(ds.index.starts[i]), int(ds.index.ends[i])
            order = ("vlmkit", "floor") if (r + i) % 2 == 0 else ("floor", "vlmkit")
            for side in order:
                t0 = time.perf_counter()
                if side == "vlmkit":
                    ds[i]
                else:
                    floor_read(path, s, e, root)
                lat[side].append(time.perf_counter() - t0)
    return lat


def sequential(ds, path: Path) -> dict[str, Any]:
    from PIL import Image

    def ours():
        for i in range(len(ds)):
            ds[i]

    def plain():
        root = path.parent
        with open(path, "rb") as f:
            for line in f:
                rec = json.loads(line)
                if "image" in rec:
                    with Image.open(root / rec["image"]) as im:
                        im.load()
                        im.convert("RGB")

    return {"vlmkit": ours, "plain-loop": plain}


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "data.json")
    p.add_argument("--index-worker", nargs=2, metavar=("KIND", "PATH"), help=argparse_hidden())
    args = p.parse_args()
    if args.index_worker:
        print(json.dumps(index_worker(*args.index_worker)))
        return
    size = SIZES["quick" if args.quick else "full"]
    monitor = common.LoadMonitor()
    monitor.sample()
    machine = common.machine_info()
    from vlmkit_data.llava_json import LlavaJsonDataset

    metrics: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vlmkit-bench-data-") as tmp:
        root = Path(tmp)
        # -- access -----------------------------------------------------------------------------------
        path, with_image, text_only = write_dataset(root, size["records"], size["images"])
        ds = LlavaJsonDataset(str(path), progress=False, index_cache=False)
        assert len(ds) == size["records"]
        rng = random.Random(2)
        for label, pool in (("image records", with_image), ("text-only records", text_only)):
            picks = [rng.choice(pool) for _ in range(size["random_reads"])]
            lat = random_access(ds, path, picks, rounds=1)
            ratio = common.paired_ratio(lat["vlmkit"], lat["floor"])
            metrics.append(common.metric(
                f"random access latency, {label}", common.median(lat["vlmkit"]) * 1e6, "us",
                reference=common.median(lat["floor"]) * 1e6, ratio=ratio, target="<= 1.5",
                detail={"vlmkit_p95_us": p95(lat["vlmkit"]) * 1e6, "floor_p95_us": p95(lat["floor"]) * 1e6,
                        "reads": len(picks)}))
            monitor.sample()
        seq = common.interleave(sequential(ds, path), repeats=size["rounds"], warmup=1)
        n = len(ds)
        metrics.append(common.metric(
            "sequential throughput (with image decode)", n / common.median(seq["vlmkit"]), "records/s",
            reference=n / common.median(seq["plain-loop"]),
            ratio=1 / common.paired_ratio(seq["vlmkit"], seq["plain-loop"]), target=">= 0.67", better="higher",
            detail={"vlmkit_s": common.spread(seq["vlmkit"]), "plain_loop_s": common.spread(seq["plain-loop"])}))
        monitor.sample()

        # -- indexing ---------------------------------------------------------------------------------
        t0 = time.perf_counter()
        jsonl, array = write_big(root, size["index_records"])
        gen_s = time.perf_counter() - t0
        runs: dict[str, dict[str, list[dict]]] = {}
        for fmt, f in (("jsonl", jsonl), ("json array", array)):
            # the offset list needs one record per line: it is the naive lazy loader of JSON lines only
            kinds = ("vlmkit", "python-offsets", "eager") if fmt == "jsonl" else ("vlmkit", "eager")
            time_ref = kinds[1]
            runs[fmt] = {k: [] for k in kinds}
            for r in range(1 if args.quick else 2):
                for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                    res = common.run_json_subprocess([__file__, "--index-worker", kind, str(f)])
                    assert res["records"] == size["index_records"], res
                    runs[fmt][kind].append(res)
                    monitor.sample()
            med = {k: {"seconds": common.median([x["seconds"] for x in v]),
                       "peak_delta": common.median([x["peak_delta"] for x in v]),
                       "peak_rss": common.median([x["peak_rss"] for x in v])} for k, v in runs[fmt].items()}
            mib = 2 ** 20
            metrics.append(common.metric(
                f"index {size['index_records']:,} records ({fmt}): time", med["vlmkit"]["seconds"], "s",
                reference=med[time_ref]["seconds"], ratio=med["vlmkit"]["seconds"] / med[time_ref]["seconds"],
                target="<= 1.0",
                detail={"reference": time_ref, "eager_load_s": med["eager"]["seconds"],
                        "runs_s": {k: [round(x["seconds"], 3) for x in v] for k, v in runs[fmt].items()},
                        "file_MiB": round(f.stat().st_size / mib, 1)}))
            metrics.append(common.metric(
                f"index {size['index_records']:,} records ({fmt}): peak RSS above baseline",
                med["vlmkit"]["peak_delta"] / mib, "MiB", reference=med["eager"]["peak_delta"] / mib,
                ratio=med["vlmkit"]["peak_delta"] / med["eager"]["peak_delta"], target="<= 0.25",
                detail={"reference": "eager", "delta_MiB": {k: round(v["peak_delta"] / mib, 2) for k, v in med.items()},
                        "process_peak_rss_MiB": {k: round(v["peak_rss"] / mib, 1) for k, v in med.items()}}))
    config = {"access_records": size["records"], "distinct_images": size["images"], "image": "640x480 JPEG q90",
              "image_fraction": 0.75, "random_reads_per_kind": size["random_reads"], "sequential_rounds": size["rounds"],
              "index_records": size["index_records"], "index_file_generation_s": round(gen_s, 1),
              "dataset_args": "index_cache=False, progress=False (default boxes/regions scan of 64 records)"}
    method = ("Random access: each read of the dataset is paired with the floor read of the same record (order "
              "alternates), ratio = median of per-read ratios. Sequential: whole-file passes interleaved with the "
              "plain loop, one warm-up pass each. Indexing: one fresh subprocess per measurement, two per kind in "
              "alternating order (one in --quick), RSS high-water mark reset after imports (/proc/self/clear_refs); "
              "the index time ratio is against the pure-Python offset list (JSON lines) or eager json.load (JSON array), "
              "the memory ratio against eager loading.")
    out = common.write_result(args.out, "data", title="LLaVA JSON data: access, throughput, indexing",
                              quick=args.quick, command=common.command_line("bench_data.py", sys.argv[1:]),
                              config=config, metrics=metrics, notes=[], method=method, load=monitor.summary(),
                              machine=machine)
    print(f"wrote {out}")
    for m in metrics:
        print(f"  {m['name']}: {m['value']:.4g} {m['unit']}  ref={m.get('reference', float('nan')):.4g}  "
              f"ratio={m.get('ratio', float('nan')):.3f}  target {m.get('target')}")


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
