"""Lazy LLaVA data loading (vlmkit_data.llava_json) against LLaVA's eager ``json.load`` of the whole file.

LLaVA's ``LazySupervisedDataset`` reads the whole JSON list into Python objects at start-up; vlmkit keeps
a byte-offset index (20 bytes a record) and parses a record when it is read. One synthetic LLaVA-style
file (records shaped like llava_v1_5_mix665k: id, image, two to six turns of text) is written as a JSON
array and as JSONL, and measured in one run:

* memory held after opening: the index's ``nbytes`` against the bytes ``json.load``'s result holds
  (tracemalloc, which numpy also reports to); target ratio <= 0.05;
* peak memory while opening (tracemalloc peak: the index build reads 4 MiB chunks);
* time to open: index build (no cache) against ``json.load`` (JSONL: ``json.loads`` per line),
  interleaved and alternated, median of per-round ratios; target <= 1.0 (numpy does the per-byte work,
  Python only touches records). Reopening with the on-disk index cache is timed too (target <= 0.1).
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import tempfile
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from vlmkit_data.json_index import build_index  # noqa: E402
from vlmkit_data.llava_json import LlavaJsonDataset  # noqa: E402

WORDS = ("the a image shows person dog street car red blue what is on left right of with and there "
         "are two people table {braces} \"quoted\" caf\u00e9 \u65e5\u672c").split()


def make_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        turns = []
        for t in range(rng.choice((2, 2, 4, 6))):
            words = rng.choices(WORDS, k=rng.randint(4, 60))
            turns.append({"from": "human" if t % 2 == 0 else "gpt", "value": " ".join(words)})
        turns[0]["value"] = "<image>\n" + turns[0]["value"]
        recs.append({"id": f"{i:09d}", "image": f"coco/train2017/{i:012d}.jpg", "conversations": turns})
    return recs


def traced(fn):
    """(result, bytes still held by the result, peak bytes while running) via tracemalloc."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    out = fn()
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, held - base, peak - base


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "data_index.json")
    p.add_argument("--records", type=int, default=100_000)
    args = p.parse_args()
    n = 2_000 if args.quick else args.records
    repeats = 3 if args.quick else 7
    mon = common.LoadMonitor()
    metrics = []
    with tempfile.TemporaryDirectory() as tmp:
        recs = make_records(n)
        paths = {"json": os.path.join(tmp, "data.json"), "jsonl": os.path.join(tmp, "data.jsonl")}
        with open(paths["json"], "w") as f:
            json.dump(recs, f, indent=1, ensure_ascii=False)
        with open(paths["jsonl"], "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
        del recs
        sizes = {k: os.path.getsize(v) for k, v in paths.items()}

        def eager(path: str):
            with open(path) as f:
                return json.load(f) if path.endswith(".json") else [json.loads(line) for line in f]

        for fmt, path in paths.items():
            mon.sample()
            index, held_idx, peak_idx = traced(lambda path=path: build_index(path, progress=False))
            loaded, held_eager, peak_eager = traced(lambda path=path: eager(path))
            assert len(index) == len(loaded) == n
            del loaded
            gc.collect()
            metrics.append(common.metric(f"{fmt}: memory held after opening", held_idx, "bytes", reference=held_eager,
                                         ratio=held_idx / held_eager, target="<= 0.05",
                                         detail={"index_nbytes": index.nbytes, "file_bytes": sizes[fmt]}))
            metrics.append(common.metric(f"{fmt}: peak memory while opening", peak_idx, "bytes", reference=peak_eager,
                                         ratio=peak_idx / peak_eager))
            times = common.interleave({"index": lambda path=path: build_index(path, progress=False),
                                       "json.load": lambda path=path: eager(path)}, repeats)
            mon.sample()
            metrics.append(common.metric(f"{fmt}: time to open (index build vs json.load)",
                                         common.median(times["index"]), "s",
                                         reference=common.median(times["json.load"]),
                                         ratio=common.paired_ratio(times["index"], times["json.load"]),
                                         target="<= 1.0", detail={"index": common.spread(times["index"]),
                                                 "json.load": common.spread(times["json.load"]),
                                                 "index_MB_per_s": sizes[fmt] / 1e6 / common.median(times["index"])}))
            LlavaJsonDataset(path, index_cache=True, boxes=False, regions=False, progress=False)  # writes the cache
            cached = common.interleave({"cached": lambda path=path: LlavaJsonDataset(path, index_cache=True, boxes=False,
                                                                          regions=False, progress=False),
                                        "json.load": lambda path=path: eager(path)}, repeats)
            metrics.append(common.metric(f"{fmt}: time to reopen with the index cache vs json.load",
                                         common.median(cached["cached"]), "s",
                                         reference=common.median(cached["json.load"]),
                                         ratio=common.paired_ratio(cached["cached"], cached["json.load"]),
                                         target="<= 0.1"))
    out = common.write_result(
        args.out, "data_index", title="Lazy LLaVA JSON/JSONL index vs eager json.load", quick=args.quick,
        command=common.command_line("bench_data_index.py", sys.argv[1:]),
        config={"records": n, "file_bytes": sizes, "repeats": repeats}, metrics=metrics, load=mon.summary(),
        method=__doc__ or "")
    print(out.read_text())


if __name__ == "__main__":
    main()
