"""Shared pieces of the benchmark scripts: noise-aware timing, memory high-water marks, result files.

The machine these run on is shared and noisy, so every claim is a ratio against a reference measured
in the same run: candidate and reference runs are interleaved (A B A B ..., or B A B A in alternate
rounds), repeated, and summarised by their medians. Absolute numbers are reported too but only the
ratios are meant to be compared across machines.

Result files are JSON (one per script, see ``write_result``); ``run_all.py`` renders them as
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
SCHEMA_VERSION = 1


# -- command line --------------------------------------------------------------------------------
def parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """Every script takes ``--quick`` (seconds, for the smoke test) and ``--out`` (the JSON file)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (checks the script runs)")
    p.add_argument("--out", default=str(RESULTS_DIR / default_out), help="where to write the JSON result")
    return p


_T0 = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr, with seconds since start (long runs on a loaded machine need it)."""
    print(f"[{Path(sys.argv[0]).stem} +{time.perf_counter() - _T0:.0f}s] {message}", file=sys.stderr, flush=True)


# -- statistics ----------------------------------------------------------------------------------
def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def spread(xs: Sequence[float]) -> dict[str, float]:
    """Median, min, max and the relative inter-quartile range (how noisy the repeats were)."""
    xs = sorted(xs)
    med = median(xs)
    if len(xs) >= 4:
        q = statistics.quantiles(xs, n=4)
        iqr = q[2] - q[0]
    else:
        iqr = xs[-1] - xs[0]
    return {"median": med, "min": xs[0], "max": xs[-1], "n": len(xs), "rel_iqr": iqr / med if med else 0.0}


def interleave(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
               cpu_times: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Time each callable ``repeats`` times, interleaved, alternating the order every round.

    Round r runs the callables in order (r even) or reversed (r odd), so neither side always runs
    right after the other (cache state, turbo budgets and background load are shared evenly).
    Returns wall times; when ``cpu_times`` is given it is filled with this process's CPU time per
    call too (all threads), which time-slicing by other processes on a shared machine inflates less.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    if cpu_times is not None:
        cpu_times.update({n: [] for n in names})
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            c0, t0 = time.process_time(), time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
            if cpu_times is not None:
                cpu_times[n].append(time.process_time() - c0)
    return times


def paired_ratio(candidate: Sequence[float], reference: Sequence[float]) -> float:
    """Median of per-round ratios: each pair ran back to back, so load changes cancel within a pair."""
    return median([c / r for c, r in zip(candidate, reference)])


# -- memory --------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; falls back to the high-water mark elsewhere)."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def release_freed_memory() -> None:
    """Give memory that Python and torch have freed back to the OS (glibc ``malloc_trim``), so that the
    next phase's allocations show in RSS instead of silently reusing pages an earlier phase left behind
    (without it a small model's training step can measure a 0 MiB peak)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0).

    Lets one process measure the peak of a phase (a training step) without the peak of an earlier
    phase (imports, model loading) hiding it. Returns False where the kernel does not allow it.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int | None:
    kib = _status_kib("VmHWM")
    return kib * 1024 if kib is not None else None


def run_json_subprocess(args: Sequence[str], timeout: float = 600, env: dict[str, str] | None = None) -> dict:
    """Run ``python args...`` in a fresh interpreter; its last stdout line is a JSON object."""
    return run_json_subprocesses({"_": args}, timeout, env)["_"]


def run_json_subprocesses(jobs: dict[str, Sequence[str]], timeout: float = 600,
                          env: dict[str, str] | None = None) -> dict[str, dict]:
    """Run several ``python args...`` concurrently (for measurements that are not timings)."""
    procs = {name: subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, **(env or {})}) for name, args in jobs.items()}
    out: dict[str, dict] = {}
    failures = []
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            failures.append(f"{' '.join(jobs[name])}: timed out after {timeout} s")
            continue
        if proc.returncode != 0:
            failures.append(f"{' '.join(jobs[name])} failed ({proc.returncode}):\n{stderr[-4000:]}")
            continue
        lines = [ln for ln in stdout.splitlines() if ln.strip()]
        out[name] = json.loads(lines[-1])
    if failures:
        raise RuntimeError("\n".join(failures))
    return out


# -- machine -------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "vlmkit-core", "vlmkit-cli", "vlmkit-data", "typer", "numpy", "pillow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _other_processes() -> int:
    """Runnable threads right now minus ourselves (the 4th field of /proc/loadavg, 'running/total')."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        return max(0, running - 1)
    except (OSError, ValueError, IndexError):
        return -1


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, and how loaded the machine was when the run started."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores_visible": os.cpu_count(),
        "platform": platform.platform(),
        "load_avg_1_5_15": [round(x, 2) for x in load],
        "runnable_threads_at_start": _other_processes(),
        "versions": _versions(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


class LoadMonitor:
    """Samples the 1-minute load average while a benchmark runs (reported with the results)."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def sample(self) -> None:
        if hasattr(os, "getloadavg"):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        return {"load_1min_min": round(min(self.samples), 2), "load_1min_max": round(max(self.samples), 2)}


# -- results -------------------------------------------------------------------------------------
def metric(name: str, value: float, unit: str, *, reference: float | None = None, ratio: float | None = None,
           target: str | None = None, better: str = "lower", detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """One measured quantity. ``ratio`` is candidate / reference (``better`` says which way is good);
    ``target`` is the claim being checked, e.g. ``"<= 1.0"``."""
    m: dict[str, Any] = {"name": name, "value": value, "unit": unit, "better": better}
    if reference is not None:
        m["reference"] = reference
    if ratio is not None:
        m["ratio"] = ratio
    if target is not None:
        m["target"] = target
        m["met"] = meets(ratio if ratio is not None else value, target)
    if detail:
        m["detail"] = detail
    return m


def meets(value: float, target: str) -> bool:
    """``target`` is ``"<= x"``, ``">= x"``, ``"< x"`` or ``"> x"``."""
    m = re.fullmatch(r"\s*(<=|>=|<|>)\s*([0-9.eE+-]+)\s*", target)
    if not m:
        raise ValueError(f"bad target {target!r}")
    op, x = m.group(1), float(m.group(2))
    return {"<=": value <= x, ">=": value >= x, "<": value < x, ">": value > x}[op]


def write_result(path: str | Path, name: str, *, title: str, quick: bool, command: str, config: dict[str, Any],
                 metrics: list[dict[str, Any]], notes: Sequence[str] = (), method: str = "",
                 load: dict[str, float] | None = None, extra: dict[str, Any] | None = None,
                 machine: dict[str, Any] | None = None) -> Path:
    """Write one benchmark's result file (see ``validate_result`` for the schema)."""
    result = {
        "schema": SCHEMA_VERSION,
        "name": name,
        "title": title,
        "quick": quick,
        "command": command,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": machine or machine_info(),
        "load_during_run": load or {},
        "config": config,
        "method": method,
        "metrics": metrics,
        "notes": list(notes),
        "extra": extra or {},
    }
    validate_result(result)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    return path


def validate_result(result: dict[str, Any]) -> None:
    """Raise ValueError unless ``result`` is a well-formed result (finite numbers, known keys)."""
    for key in ("schema", "name", "title", "quick", "command", "machine", "config", "metrics", "notes"):
        if key not in result:
            raise ValueError(f"result lacks '{key}'")
    if not isinstance(result["metrics"], list):
        raise ValueError("metrics must be a list")
    for m in result["metrics"]:
        for key in ("name", "value", "unit"):
            if key not in m:
                raise ValueError(f"metric {m.get('name')!r} lacks '{key}'")
        for key in ("value", "reference", "ratio"):
            v = m.get(key)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"metric {m['name']!r}: {key} is not a finite number: {v!r}")


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command that reproduces a result, from the repository root (paths inside it made relative)."""
    def rel(arg: str) -> str:
        try:
            return str(Path(arg).resolve().relative_to(ROOT)) if os.path.isabs(arg) else arg
        except ValueError:
            return arg

    return " ".join(["python", f"benchmarks/{script}", *(rel(a) for a in argv)])
