"""How many threads torch's CPU kernels use: sized to the CPUs this process may use and what else runs on them.

torch starts one intra-op thread per core it sees. Its workers meet at a barrier after every kernel, so when
another program holds one of the cores, every kernel waits for the thread that cannot run: on a 2-core laptop
the demo's tiny model trained 5-20x slower beside one busy process. vlmkit picks:

* ``VLMKIT_THREADS=N`` (or a command's ``--threads N``) when the user says so;
* otherwise one thread per CPU this process may run on (its affinity mask and cgroup quota), less the CPUs
  other processes keep busy right now (runnable tasks in ``/proc/loadavg`` that are not this process's
  threads, in ``/proc/self/task``), and at least one.

Training re-checks every ``RECHECK_STEPS`` steps (``ThreadsCallback``) and follows when the machine gets busy
or quiet again (two checks in a row must agree). ``benchmarks/bench_threads.py`` measures it: tiny training
steps/s quiet and beside a busy process, torch's default against this (``benchmarks/results/threads.json``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "VLMKIT_THREADS"
#: training steps between two looks at the machine's load
RECHECK_STEPS = 25


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota when one is set."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _runnable_total() -> int:
    """Runnable tasks on the machine now (the 4th field of /proc/loadavg, 'running/total')."""
    return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])


def _runnable_own() -> int:
    """This process's threads that are runnable now."""
    n = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "R":
                n += 1
        except (OSError, IndexError):
            continue
    return n


def busy_cpus(samples: int = 5) -> int:
    """CPUs other processes keep busy now: runnable tasks that are not ours (median of a few looks, 10 ms
    apart); 0 where /proc cannot tell (not Linux)."""
    import statistics
    import time

    try:
        looks = []
        for i in range(samples):
            looks.append(max(0, _runnable_total() - _runnable_own()))
            if i + 1 < samples:
                time.sleep(0.01)
        return int(statistics.median(looks))
    except (OSError, ValueError, IndexError):
        return 0


def choose_threads() -> tuple[int, str]:
    """(threads, why): the user's ``VLMKIT_THREADS``, else the CPUs available less the busy ones."""
    requested = os.environ.get(ENV, "").strip()
    if requested:
        try:
            n = int(requested)
            if n < 1:
                raise ValueError
        except ValueError:
            from vlmkit.errors import ConfigError

            raise ConfigError(f"{ENV}={requested!r}: give a whole number of threads >= 1") from None
        return n, f"{ENV}={n}"
    cpus, busy = available_cpus(), busy_cpus()
    n = max(1, min(cpus, cpus - busy))
    return n, f"{cpus} CPU(s) available, {busy} busy with other work"


def apply_threads() -> int:
    """Set torch's intra-op thread count by ``choose_threads``; returns it (logged with the reason)."""
    import torch

    n, why = choose_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    log.info("torch CPU threads: %d (%s; %s=N overrides)", n, why, ENV)
    return n


class ThreadsFollower:
    """Re-decides the thread count every ``every`` calls of ``step()``; changes it when two looks in a row agree
    (a passing spike changes nothing). Does nothing when the user fixed the count."""

    def __init__(self, every: int = RECHECK_STEPS):
        self.every = every
        self.calls = 0
        self.pending: int | None = None
        self.fixed = bool(os.environ.get(ENV, "").strip())

    def step(self) -> None:
        self.calls += 1
        if self.fixed or self.calls % self.every:
            return
        import torch

        n, why = choose_threads()
        if n == torch.get_num_threads():
            self.pending = None
        elif self.pending == n:
            torch.set_num_threads(n)
            log.info("torch CPU threads: now %d (%s)", n, why)
            self.pending = None
        else:
            self.pending = n
