"""CPU threads that fit the machine (vlmkit.cpu_threads): the user's count wins, busy CPUs are left alone, and
training follows the load as it changes. The speed claim lives in benchmarks/bench_threads.py."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from vlmkit import cpu_threads
from vlmkit.errors import ConfigError


@pytest.fixture(autouse=True)
def _keep_threads(monkeypatch):
    monkeypatch.delenv(cpu_threads.ENV, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_users_count_wins_and_a_bad_one_is_named(monkeypatch):
    monkeypatch.setenv(cpu_threads.ENV, "3")
    assert cpu_threads.choose_threads() == (3, "VLMKIT_THREADS=3")
    assert cpu_threads.apply_threads() == 3 and torch.get_num_threads() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(cpu_threads.ENV, bad)
        with pytest.raises(ConfigError, match=r"VLMKIT_THREADS=.*whole number of threads >= 1"):
            cpu_threads.choose_threads()


def test_busy_cpus_are_left_to_the_process_that_holds_them(monkeypatch):
    monkeypatch.setattr(cpu_threads, "available_cpus", lambda: 4)
    monkeypatch.setattr(cpu_threads, "busy_cpus", lambda: 1)
    assert cpu_threads.choose_threads()[0] == 3
    monkeypatch.setattr(cpu_threads, "busy_cpus", lambda: 9)
    assert cpu_threads.choose_threads()[0] == 1  # never fewer than one


def test_a_busy_process_is_seen_and_our_own_threads_are_not():
    quiet = cpu_threads.busy_cpus()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        seen = max(cpu_threads.busy_cpus() for _ in range(3))
    finally:
        hog.kill()
        hog.wait()
    assert seen >= 1 and seen >= quiet
    assert 1 <= cpu_threads.available_cpus() <= (torch.get_num_threads() + 64)


def test_training_follows_the_load_after_two_agreeing_looks(monkeypatch):
    answers = iter([1, 2, 1, 1, 2, 2])
    monkeypatch.setattr(cpu_threads, "choose_threads", lambda: (next(answers), "test"))
    torch.set_num_threads(2)
    follower = cpu_threads.ThreadsFollower(every=2)
    seen = []
    for _ in range(12):
        follower.step()
        seen.append(torch.get_num_threads())
    # looks at calls 2, 4, 6, 8, 10, 12 -> 1 (pending), 2 (same as now: reset), 1 (pending), 1 (switch), 2, 2 (switch)
    assert seen == [2] * 7 + [1] * 4 + [2]


def test_a_fixed_count_is_never_changed(monkeypatch):
    monkeypatch.setenv(cpu_threads.ENV, "2")
    torch.set_num_threads(2)
    monkeypatch.setattr(cpu_threads, "choose_threads", lambda: (1, "test"))
    follower = cpu_threads.ThreadsFollower(every=1)
    for _ in range(4):
        follower.step()
    assert torch.get_num_threads() == 2


def test_train_passes_threads_to_the_run(tmp_path):
    """--threads reaches the training loop (its log names the count and the reason)."""
    proc = subprocess.run([sys.executable, "-m", "vlmkit_cli", "demo", "--output", str(tmp_path / "d"), "--steps", "2",
                           "--threads", "1"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch CPU threads: 1 (VLMKIT_THREADS=1" in proc.stderr + proc.stdout
