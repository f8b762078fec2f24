"""The benchmark scripts run (``--quick``) and write well-formed results; the page renders from them.

Timings are never asserted (the machine is shared); what is asserted is behaviour the benchmarks rely
on or report: both LLaVA implementations compute the same loss and tokens, the CLI imports no torch,
the data benchmark indexes every record, the GPU script exits cleanly without CUDA, and the FLOP
formula is the documented one.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(BENCH))
    return mod


common = _module("common")


def run_quick(script: str, out: Path, *extra: str, timeout: int = 240) -> dict:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    common.validate_result(result)
    assert result["quick"] is True
    return result


def by_name(result: dict) -> dict[str, dict]:
    return {m["name"]: m for m in result["metrics"]}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-results")


def test_cli_startup_quick_imports_no_torch(results):
    r = run_quick("bench_cli_startup.py", results / "cli_startup.json", "--runs", "2")
    m = by_name(r)
    for cmd in ("vlmkit --help", "vlmkit plugins"):
        timing = m[f"`{cmd}` wall time"]
        assert timing["value"] > 0 and timing["reference"] > 0 and timing["ratio"] > 0
        heavy = m[f"`{cmd}` heavy modules imported"]
        assert heavy["detail"]["modules"] > 50  # the import list really was read
        assert heavy["detail"]["heavy_imported"] == [] and heavy["value"] == 0


def test_data_quick_indexes_every_record(results):
    r = run_quick("bench_data.py", results / "data.json")
    m = by_name(r)
    n = r["config"]["index_records"]
    for fmt in ("jsonl", "json array"):
        t = m[f"index {n:,} records ({fmt}): time"]
        mem = m[f"index {n:,} records ({fmt}): peak RSS above baseline"]
        assert t["value"] > 0 and mem["detail"]["process_peak_rss_MiB"]["vlmkit"] > 0
    assert m["sequential throughput (with image decode)"]["better"] == "higher"
    assert {"random access latency, image records", "random access latency, text-only records"} <= set(m)


def test_llava_parity_quick_same_loss_and_tokens(results):
    r = run_quick("bench_llava_parity.py", results / "llava_parity.json")
    m = by_name(r)
    assert m["loss |vlmkit - hf| on the benchmark batch"]["value"] <= 1e-4
    assert m["greedy generation throughput"]["detail"]["identical_tokens"] is True
    mem = m["steady-state train step peak memory (RSS high-water delta)"]
    assert mem["value"] > 0 and mem["reference"] > 0  # a step allocates: the high-water reset worked
    assert r["config"]["trainable"] < r["config"]["parameters"]  # the CLIP tower is frozen on both sides


def test_seed_parity_quick_records_the_differences(results):
    r = run_quick("bench_seed_parity.py", results / "seed_parity.json")
    (metric,) = r["metrics"]
    assert metric["name"].startswith("llava-1.5") and 0 <= metric["value"] <= 1e-5 and metric["met"] is True
    assert metric["detail"]["greedy_tokens_equal"] is True and metric["detail"]["export_import_max_abs_diff"] == 0.0


def test_gpu_script_without_cuda_skips_cleanly(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the skip path does not apply (the full script is the GPU benchmark)")
    r = run_quick("bench_gpu_train.py", tmp_path / "gpu.json")
    assert r["extra"]["status"] == "skipped" and r["metrics"] == []
    assert "not run on a GPU yet" in r["notes"][0] and "CUDA is not available" in r["notes"][0]


def test_gpu_script_code_path_runs_on_cpu(tmp_path):
    """``--quick --cpu``: the GPU benchmark's own code (bf16 autocast step, MFU fields) runs where no GPU is lent."""
    r = run_quick("bench_gpu_train.py", tmp_path / "gpu.json", "--cpu")
    m = by_name(r)
    assert m["loss |vlmkit - hf| (bf16 autocast)"]["value"] <= 1e-3  # same weights, same loss
    assert m["samples/s"]["value"] > 0 and m["tokens/s"]["value"] > m["samples/s"]["value"]


def test_gpu_flop_formula():
    gpu = _module("bench_gpu_train")
    cfg = {"vision": {"image_size": 28, "patch_size": 14, "num_hidden_layers": 3, "hidden_size": 8},
           "text": {"num_hidden_layers": 2, "hidden_size": 16}, "batch": 2}
    f = gpu.step_flops(cfg, n_llm_no_embed=1000, n_proj=100, n_vit_used=50, tokens=30, seq_len=20)
    assert f["llm"] == 6 * 1000 * 30 + 12 * 2 * 16 * 20 * 30
    assert f["projector"] == 6 * 100 * 4 * 2  # 4 patches per image, 2 images
    assert f["vision"] == 2 * 50 * 5 * 2 + 4 * 2 * 8 * 5 ** 2 * 2  # 2 of 3 layers run (feature layer -2)
    assert f["total"] == f["llm"] + f["projector"] + f["vision"]
    assert gpu.peak_flops("NVIDIA H100 80GB HBM3", None) == 989e12 and gpu.peak_flops("x", 100) == 1e14


def test_anyres_quick_checks_pixels_then_times_both_resamplers(results):
    """The script asserts equal crops before it times anything; both pairs are reported."""
    r = run_quick("bench_anyres.py", results / "anyres.json")
    names = set(by_name(r))
    assert {"images/s, vlmkit-pil vs transformers hf-pil", "images/s, vlmkit-torch vs transformers hf-torchvision"} == names
    assert all(m["ratio"] > 0 and m["reference"] > 0 for m in r["metrics"])


def test_render_page_from_results(results, tmp_path):
    """Runs after the quick benchmarks above (module order); renders whatever results exist."""
    run_all = _module("run_all")
    present = run_all.load_results(results)
    assert {r["name"] for r in present} >= {"cli_startup", "data", "llava_parity"}
    page = run_all.render(present, tmp_path / "no-other-pages")
    assert page.startswith("# Benchmarks")
    for r in present:
        assert f"## {r['title']}" in page
        for m in r["metrics"]:  # each metric has a row in its section ('|' escaped inside a cell)
            assert f"| {m['name'].replace('|', chr(92) + '|')} |" in page
    assert "quick mode" in page


def test_validate_rejects_bad_results():
    good = {"schema": 1, "name": "x", "title": "x", "quick": True, "command": "c", "machine": {}, "config": {},
            "metrics": [{"name": "t", "value": 1.0, "unit": "s", "ratio": 0.9}], "notes": []}
    common.validate_result(good)
    for bad in ({**good, "metrics": [{"name": "t", "value": math.nan, "unit": "s"}]},
                {**good, "metrics": [{"name": "t", "value": 1.0, "unit": "s", "ratio": "fast"}]},
                {k: v for k, v in good.items() if k != "command"}):
        with pytest.raises(ValueError):
            common.validate_result(bad)
    assert common.meets(0.9, "<= 1.0") and not common.meets(1.6, "<= 1.5") and common.meets(2, ">= 0.67")
    assert common.paired_ratio([2, 4, 9], [1, 2, 3]) == 2.0


def test_ross_evidence_quick_measures_every_predictor_and_renders(results, tmp_path):
    r = run_quick("bench_ross_evidence.py", results / "ross_evidence.json", "--work", str(tmp_path / "work"),
                  timeout=600)
    (seed,) = r["extra"]["per_seed"]
    assert set(seed["recon"]["latent_mse"]) == {"ross", "zero", "train_mean", "shuffled"}
    assert set(seed["recon"]["pixel_mse"]) == {"teacher", "ross", "zero", "train_mean", "shuffled"}
    assert all(math.isfinite(v) and v >= 0 for v in seed["recon"]["pixel_mse"].values())
    assert seed["recon"]["pixel_mse"]["teacher"] < seed["recon"]["pixel_mse"]["zero"]  # the teacher decodes images
    assert set(seed["accuracy"]) == {"lm", "lm+ross"}
    page = _module("bench_ross_evidence").render(r)
    assert page.startswith("<!-- ross-evidence:start -->") and page.rstrip().endswith("<!-- ross-evidence:end -->")
    assert "| zero latent |" in page and "lm + ross" in page


def test_threads_quick_measures_both_policies(tmp_path):
    r = run_quick("bench_threads.py", tmp_path / "threads.json")
    names = [m["name"] for m in r["metrics"]]
    assert any(n.startswith("torch default") for n in names) and any(n.startswith("vlmkit") for n in names)
    assert all(m["value"] > 0 for m in r["metrics"])


def test_import_dtype_quick_compares_fp16_with_fp32(tmp_path):
    r = run_quick("bench_import_dtype.py", tmp_path / "dtype.json")
    diff = r["metrics"][0]
    assert diff["detail"]["fp32"] == 0.0 and 0 < diff["value"] < 1e-1  # fp16 compute is off; fp32 is the reference
