"""Tiny training beside a busy process: steps/s quiet vs busy, with torch's default threads and vlmkit's choice.

Each measurement is a fresh process that builds the ``tiny`` preset (the demo's 0.57 M-parameter model), makes
a batch of 64 synthetic 64 px samples, and times ``--steps`` optimizer steps (forward, backward, AdamW) after
two warm-up steps. Thread policies:

* ``torch default``: what torch picks by itself (one thread per visible core);
* ``vlmkit``: ``vlmkit.cpu_threads.apply_threads`` for the model's parameter count.

Conditions: ``quiet`` (nothing else running), and ``busy`` (one other CPU-bound process, a plain Python loop,
running for the whole measurement). The claim checked: with vlmkit's choice, busy is at most 2x slower than
quiet (slowdown = quiet steps/s / busy steps/s, median over rounds; conditions interleaved by round).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

POLICIES = ("torch default", "vlmkit")


def worker(policy: str, steps: int) -> None:
    import torch

    import vlmkit
    from vlmkit.testing import conversation_batch

    torch.manual_seed(0)
    # the demo's model: tiny-conv encoder (64 px), mlp2x_gelu, the 2-layer width-128 Llama (vlmkit build tiny)
    model = vlmkit.create_model("tiny-conv", connector="mlp2x_gelu")
    if policy == "vlmkit":
        from vlmkit.cpu_threads import apply_threads

        threads = apply_threads()
    else:
        threads = torch.get_num_threads()
    parts = [conversation_batch(model, seed=s) for s in range(16)]  # 16 x 4 rows: the demo's batch of 64
    batch = {k: torch.cat([b[k] for b in parts]) for k in ("input_ids", "attention_mask", "labels")}
    batch["pixel_values"] = {v: torch.cat([b["pixel_values"][v] for b in parts]) for v in parts[0]["pixel_values"]}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - t0
    print(json.dumps({"steps_per_s": steps / elapsed, "threads": threads}))


def measure(policy: str, steps: int, busy: bool) -> dict:
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if hog is not None:
            time.sleep(0.5)  # the hog is running before the worker starts
        return common.run_json_subprocess([__file__, "--worker", policy, "--steps", str(steps)],
                                          timeout=900)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()


def main() -> None:
    if "--worker" in sys.argv:
        i = sys.argv.index("--worker")
        worker(sys.argv[i + 1], int(sys.argv[sys.argv.index("--steps") + 1]))
        return
    args = common.parser(__doc__.splitlines()[0], "threads.json").parse_args()
    steps, rounds = (3, 1) if args.quick else (30, 3)
    runs: dict[str, dict[str, list[float]]] = {p: {"quiet": [], "busy": []} for p in POLICIES}
    threads: dict[tuple[str, str], int] = {}
    for r in range(rounds):
        order = [(p, b) for p in POLICIES for b in (False, True)]
        for policy, busy in (order if r % 2 == 0 else order[::-1]):
            res = measure(policy, steps, busy)
            runs[policy]["busy" if busy else "quiet"].append(res["steps_per_s"])
            threads[policy, "busy" if busy else "quiet"] = res["threads"]
            common.log(f"round {r}: {policy:>13} {'busy' if busy else 'quiet'}: {res['steps_per_s']:.2f} steps/s "
                       f"({res['threads']} threads)")
    metrics = []
    for policy in POLICIES:
        slowdown = common.paired_ratio(runs[policy]["quiet"], runs[policy]["busy"])
        metrics.append(common.metric(
            f"{policy} ({threads[policy, 'quiet']} thread(s) quiet, {threads[policy, 'busy']} busy): quiet / busy "
            "steps/s (slowdown beside one busy process)",
            slowdown, "ratio", ratio=slowdown, target="<= 2.0" if policy == "vlmkit" else None,
            detail={c: common.spread(v) for c, v in runs[policy].items()}))
    quiet_ratio = common.paired_ratio(runs["vlmkit"]["quiet"], runs["torch default"]["quiet"])
    metrics.append(common.metric("quiet machine: vlmkit / torch default steps/s", quiet_ratio, "ratio",
                                 ratio=quiet_ratio, better="higher"))
    common.write_result(args.out, "threads", title="Tiny training beside a busy process (CPU threads)",
                        quick=args.quick, command=common.command_line(__file__, sys.argv[1:]),
                        config={"steps": steps, "rounds": rounds, "batch": 64, "preset": "tiny",
                                "cpus": common.machine_info()["cores_visible"]},
                        metrics=metrics, method=__doc__ or "")


if __name__ == "__main__":
    main()
