"""Does Ross reconstruct? Train ``ross-tiny`` and an lm-only twin over several seeds; measure on held-out images.

For each seed, two runs of the ``ross-tiny`` recipe (synthetic shapes, 1,000 steps of batch 32, fp32,
CPU): ``lm+ross`` as shipped, and ``lm`` only (``model.objectives=[lm]``, the denoiser not built), the
same data order, steps and learning rate. Then, on held-out test-split images (never seen by the runs
or by the VAE teacher):

* reconstruction error of the Ross sample (DDPM, 50 steps, from the LLM's hidden states at the image's
  visual tokens), against three baselines that do not look at this image's hidden states: the zero
  latent (the normalised latents' mean), the training-mean latent (per position and channel, over 512
  training images) and the shuffled control (Ross sampled from another held-out image's hidden
  states, a cyclic shift). In normalised latent units and in pixels ([-1, 1], after the VAE decodes).
  The VAE teacher's own reconstruction is the ceiling;
* the held-out denoising loss (the training objective, fixed noise draws) with the true and with the
  shuffled hidden states;
* the LM's exact-match accuracy on the 500 held-out questions, ``lm+ross`` against ``lm``.

Writes ``benchmarks/results/ross_evidence.json``, the picture ``docs/images/ross_reconstruction.png``
(seed 0: input | teacher | ross | ross from shuffled states | training mean) and the evidence section of
``docs/benchmarks/ross.md``.

    python benchmarks/bench_ross_evidence.py                # 3 seeds at the recipe's 1,000 steps (~16 min, 2 cores)
    python benchmarks/bench_ross_evidence.py --steps 2000   # the same at another budget (~30 min), also on the page
    python benchmarks/bench_ross_evidence.py --quick        # seconds: checks the script runs

A run at another budget writes ``ross_evidence_<steps>.json`` and no picture; the page shows the
recipe-budget run in full and a summary row for every other budget found in ``benchmarks/results``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PAGE = common.ROOT / "docs" / "benchmarks" / "ross.md"
PICTURE = common.ROOT / "docs" / "images" / "ross_reconstruction.png"
START, END = "<!-- ross-evidence:start -->", "<!-- ross-evidence:end -->"
#: the dataset is the recipe's (synthetic shapes, seed 0: 5,000 training and 500 test images)
FULL = {"seeds": [0, 1, 2], "steps": 1000, "n_recon": 128, "n_train_mean": 512, "n_questions": 500,
        "sample_steps": 50, "draws": 8, "n_train": 5000, "n_test": 500}
QUICK = {"seeds": [0], "steps": 20, "n_recon": 8, "n_train_mean": 16, "n_questions": 16, "sample_steps": 5,
         "draws": 2, "n_train": 64, "n_test": 32}
BASELINES = ("zero", "train_mean", "shuffled")


def train(kind: str, seed: int, cfg: dict[str, Any], out: Path, data_root: Path) -> Path:
    """One ``ross-tiny`` recipe run (``kind``: "lm+ross" as shipped, or "lm")."""
    steps = cfg["steps"]
    from vlmkit.training.recipe import load_recipe
    from vlmkit.training.runner import run_recipe

    sets = [f"seed={seed}", f"output_dir={out}", f"stages.0.max_steps={steps}", f"stages.0.save_steps={steps}",
            f"stages.0.data.args.root={data_root}", f"stages.0.data.args.n_train={cfg['n_train']}",
            f"stages.0.data.args.n_test={cfg['n_test']}"]
    if kind == "lm":
        sets += ["model.objectives=[lm]", "stages.0.trainable=[encoders,connector,llm]"]
    return run_recipe(load_recipe("vlmkit-data:ross-tiny", sets))


@torch.no_grad()
def reconstruction_metrics(model: Any, test_images: list, train_images: list, cfg: dict[str, Any],
                           seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Errors of Ross and the baselines on ``test_images``; and the tensors the picture needs."""
    from vlmkit_objectives.latents import group_latents, vae_pixels
    from vlmkit_objectives.reconstruct import image_hidden_states, ross_objective

    obj = ross_objective(model)
    hidden, grid, pixels = image_hidden_states(model, test_images)
    from vlmkit.data.processing import MultimodalProcessor

    # the training-mean baseline needs only the teacher's latents: preprocess, no model forward
    train_pixels = torch.stack(MultimodalProcessor.for_model(model).images(train_images)[0][obj.view.name])

    def normalised(pix: torch.Tensor) -> torch.Tensor:
        mean, _ = obj.latent_moments(pix, grid)
        return group_latents((mean - obj.latent_shift) * obj.latent_scale)

    x0, target = normalised(pixels), vae_pixels(pixels, obj.view, grid)
    shuffle = torch.roll(torch.arange(len(test_images)), 1)
    g = torch.Generator().manual_seed(1000 + seed)
    latents = {
        "teacher": x0,
        "ross": obj.sample(hidden, grid, steps=cfg["sample_steps"], generator=g),
        "zero": torch.zeros_like(x0),
        "train_mean": normalised(train_pixels).mean(0, keepdim=True).expand_as(x0),
        "shuffled": obj.sample(hidden[shuffle], grid, steps=cfg["sample_steps"], generator=g),
    }
    decoded = {k: obj.decode(v) for k, v in latents.items()}
    out: dict[str, Any] = {
        "latent_mse": {k: float((v - x0).pow(2).mean()) for k, v in latents.items() if k != "teacher"},
        "pixel_mse": {k: float((v - target).pow(2).mean()) for k, v in decoded.items()},
    }
    # the training objective on held-out images, the same (t, eps) draws for true and shuffled states
    k = cfg["draws"]
    gen = torch.Generator().manual_seed(2000 + seed)
    xk = x0.repeat_interleave(k, 0)
    t = torch.randint(0, obj.scheduler.config.num_train_timesteps, (xk.shape[0],), generator=gen)
    eps = torch.randn(xk.shape, generator=gen)
    x_t = obj.scheduler.add_noise(xk, eps, t)

    def denoising_loss(h: torch.Tensor) -> float:
        cond = obj.condition(h, torch.float32).repeat_interleave(k, 0)
        return float((obj.denoiser(x_t, t, cond) - eps).pow(2).mean())

    out["denoising_loss"] = {"true": denoising_loss(hidden), "shuffled": denoising_loss(hidden[shuffle])}
    return out, {"target": target, "decoded": decoded}


def picture(tensors: dict[str, Any], rows: int, path: Path) -> None:
    from vlmkit_objectives.reconstruct import comparison_sheet, to_pil

    columns = [("input", tensors["target"]), ("teacher", tensors["decoded"]["teacher"]),
               ("ross", tensors["decoded"]["ross"]), ("shuffled", tensors["decoded"]["shuffled"]),
               ("train mean", tensors["decoded"]["train_mean"])]
    sheet = comparison_sheet([[to_pil(x[i]) for _, x in columns] for i in range(rows)], [c for c, _ in columns],
                             scale=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def mean_sd(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs), "max": max(xs)}


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Across seeds: each error's mean and sd, and Ross's margin over each baseline (1 - ross / baseline)."""
    summary: dict[str, Any] = {}
    for space in ("latent_mse", "pixel_mse"):
        names = per_seed[0]["recon"][space]
        summary[space] = {n: mean_sd([r["recon"][space][n] for r in per_seed]) for n in names}
        summary[f"{space}_margin"] = {
            b: mean_sd([1 - r["recon"][space]["ross"] / r["recon"][space][b] for r in per_seed]) for b in BASELINES}
    summary["denoising_loss"] = {n: mean_sd([r["recon"]["denoising_loss"][n] for r in per_seed])
                                 for n in ("true", "shuffled")}
    summary["denoising_loss_increase_when_shuffled"] = mean_sd(
        [r["recon"]["denoising_loss"]["shuffled"] / r["recon"]["denoising_loss"]["true"] - 1 for r in per_seed])
    summary["accuracy"] = {k: mean_sd([r["accuracy"][k] for r in per_seed]) for k in ("lm", "lm+ross")}
    summary["accuracy_difference"] = mean_sd([r["accuracy"]["lm+ross"] - r["accuracy"]["lm"] for r in per_seed])
    return summary


def fmt(s: dict[str, float], digits: int = 4, pct: bool = False) -> str:
    if pct:
        return f"{100 * s['mean']:.1f} % ± {100 * s['sd']:.1f}"
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def render(result: dict[str, Any], others: list[dict[str, Any]] = ()) -> str:
    """The page section for the recipe-budget ``result``; ``others``: runs at other step budgets."""
    s, cfg = result["extra"]["summary"], result["config"]
    n_seeds = len(cfg["seeds"])
    lines = [START, "", "## Does it reconstruct? Evidence on held-out images", "",
             f"Generated by `{result['command']}` on {result['date_utc'][:10]} in {result['extra']['seconds']:.0f} s "
             f"({n_seeds} seeds; CPU, {result['machine'].get('torch_threads', '?')} threads).", "",
             f"Setup: recipe `ross-tiny` (model preset `ross-tiny`: tiny-conv 64 px -> 4x4 tokens, 2-layer Llama of "
             f"width 128, denoiser width 128 x 2 blocks, teacher `builtin:shapes-tiny`), {cfg['steps']} steps of batch "
             f"32 on synthetic shapes, and an lm-only twin with the same seed, data order and budget. Held-out: "
             f"{cfg['n_recon']} test-split images for reconstruction (seen by neither the runs nor the teacher), "
             f"{cfg['n_questions']} test questions for accuracy. Mean ± sd over seeds {cfg['seeds']}.", "",
             "### Reconstruction error (lower is better)", "",
             "| predictor | latent MSE (normalised units) | pixel MSE ([-1, 1]) |", "|---|---|---|"]
    labels = {"teacher": "VAE teacher's own reconstruction (ceiling)", "ross": "**Ross: sampled from the LLM's hidden states**",
              "zero": "zero latent", "train_mean": "training-mean latent",
              "shuffled": "Ross from another image's hidden states (shuffled control)"}
    for name, label in labels.items():
        lat = fmt(s["latent_mse"][name]) if name in s["latent_mse"] else "0 (by definition)"
        lines.append(f"| {label} | {lat} | {fmt(s['pixel_mse'][name])} |")
    lines += ["", "Ross's margin over each baseline, `1 - ross / baseline` (mean ± sd over seeds; worst seed):", "",
              "| baseline | latent | pixel |", "|---|---|---|"]
    for b in BASELINES:
        lm, pm = s["latent_mse_margin"][b], s["pixel_mse_margin"][b]
        lines.append(f"| {labels[b]} | {fmt(lm, pct=True)} (worst {100 * lm['min']:.1f} %) | "
                     f"{fmt(pm, pct=True)} (worst {100 * pm['min']:.1f} %) |")
    d = s["denoising_loss"]
    lines += ["", f"Held-out denoising loss (the training objective, same noise draws): {fmt(d['true'])} with the "
              f"image's own hidden states, {fmt(d['shuffled'])} with another image's "
              f"(+{fmt(s['denoising_loss_increase_when_shuffled'], pct=True)}).", "",
              "### The LM task with and without Ross (same steps, batch, seed)", "",
              "| run | held-out exact-match accuracy |", "|---|---|",
              f"| lm only | {fmt(s['accuracy']['lm'], pct=True)} |", f"| lm + ross | {fmt(s['accuracy']['lm+ross'], pct=True)} |",
              "", f"Difference (lm+ross - lm), per seed then averaged: {100 * s['accuracy_difference']['mean']:+.1f} ± "
              f"{100 * s['accuracy_difference']['sd']:.1f} percentage points.", "", "Per seed:", "",
              "| seed | ross latent | zero | train mean | shuffled | ross pixel | teacher pixel | acc lm | acc lm+ross |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in result["extra"]["per_seed"]:
        lat, pix = r["recon"]["latent_mse"], r["recon"]["pixel_mse"]
        lines.append(f"| {r['seed']} | {lat['ross']:.4f} | {lat['zero']:.4f} | {lat['train_mean']:.4f} | "
                     f"{lat['shuffled']:.4f} | {pix['ross']:.4f} | {pix['teacher']:.4f} | "
                     f"{100 * r['accuracy']['lm']:.1f} % | {100 * r['accuracy']['lm+ross']:.1f} % |")
    if others:
        lines += ["", "Other step budgets (same protocol, seeds and held-out sets; each row is its own runs):", "",
                  "| steps | ross latent | train-mean latent | ross pixel | train-mean pixel | shuffled pixel | "
                  "acc lm | acc lm+ross | lm+ross - lm |", "|---|---|---|---|---|---|---|---|---|"]
        for o in sorted([result, *others], key=lambda r: r["config"]["steps"]):
            t = o["extra"]["summary"]
            lines.append(f"| {o['config']['steps']} | {fmt(t['latent_mse']['ross'])} | {fmt(t['latent_mse']['train_mean'])} | "
                         f"{fmt(t['pixel_mse']['ross'])} | {fmt(t['pixel_mse']['train_mean'])} | "
                         f"{fmt(t['pixel_mse']['shuffled'])} | {fmt(t['accuracy']['lm'], pct=True)} | "
                         f"{fmt(t['accuracy']['lm+ross'], pct=True)} | {100 * t['accuracy_difference']['mean']:+.1f} ± "
                         f"{100 * t['accuracy_difference']['sd']:.1f} points |")
    lines += ["", f"![input, teacher, ross, shuffled control, training mean](../images/{PICTURE.name})", "",
              "Seed 0, first held-out images. Columns: the input at the VAE's size; the teacher's reconstruction; "
              "Ross, sampled from the LLM's hidden states at the image's 16 visual tokens; Ross sampled from "
              "another image's hidden states; the training-mean latent decoded.", "", END]
    return "\n".join(lines) + "\n"


def write_page(section: str) -> None:
    text = PAGE.read_text() if PAGE.exists() else "# Ross objective\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        title, _, body = text.partition("\n")
        text = f"{title}\n\n{section}\n{body.lstrip()}"
    PAGE.write_text(text)


def shown_arguments(argv: list[str]) -> list[str]:
    """The arguments that change the result (``--work`` only says where the runs went)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--work":
            skip = True
        elif not a.startswith("--work="):
            out.append(a)
    return out


def render_page() -> None:
    """Rewrite the page's evidence section from the committed results."""
    main_file = common.RESULTS_DIR / "ross_evidence.json"
    if not main_file.exists():
        return
    others = [json.loads(f.read_text()) for f in sorted(common.RESULTS_DIR.glob("ross_evidence_*.json"))]
    write_page(render(json.loads(main_file.read_text()), others))


def main() -> int:
    p = common.parser(__doc__.splitlines()[0], "ross_evidence.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=None, help="where runs go (default: a temporary folder)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's 1,000)")
    p.add_argument("--render-only", action="store_true", help="rewrite the page from the committed results")
    args = p.parse_args()
    if args.render_only:
        render_page()
        return 0
    torch.set_num_threads(args.threads)
    cfg = dict(QUICK if args.quick else FULL)
    main_budget = args.steps in (None, cfg["steps"])
    if args.steps is not None:
        cfg["steps"] = args.steps
        if not main_budget and args.out == p.get_default("out"):
            args.out = str(common.RESULTS_DIR / f"ross_evidence_{args.steps}.json")
    t0 = time.perf_counter()


    from vlmkit.inference.evaluation import evaluate
    from vlmkit.model.checkpoint import load_checkpoint
    from vlmkit.plugins.registry import registry

    work = args.work or Path(tempfile.mkdtemp(prefix="ross-evidence-"))
    data_root = work / "data"
    shapes = registry.load("dataset", "vlmkit-data:synthetic-shapes")
    sizes = {"n_train": cfg["n_train"], "n_test": cfg["n_test"]}
    test = shapes(split="test", root=str(data_root), **sizes)
    train_set = shapes(split="train", root=str(data_root), **sizes)
    test_images = [test[i].images[0] for i in range(cfg["n_recon"])]
    train_images = [train_set[i].images[0] for i in range(cfg["n_train_mean"])]
    questions = torch.utils.data.Subset(test, range(cfg["n_questions"])) if cfg["n_questions"] < len(test) else test

    per_seed = []
    for seed in cfg["seeds"]:
        row: dict[str, Any] = {"seed": seed, "accuracy": {}, "train_seconds": {}}
        for kind in ("lm+ross", "lm"):
            common.log(f"seed {seed}: training {kind} for {cfg['steps']} steps")
            t = time.perf_counter()
            final = train(kind, seed, cfg, work / f"{kind}-seed{seed}", data_root)
            row["train_seconds"][kind] = round(time.perf_counter() - t, 1)
            model = load_checkpoint(str(final))
            row["accuracy"][kind] = evaluate(model, questions, batch_size=64, progress=False)["accuracy"]
            if kind == "lm+ross":
                common.log(f"seed {seed}: reconstruction on {cfg['n_recon']} held-out images")
                row["recon"], tensors = reconstruction_metrics(model, test_images, train_images, cfg, seed)
                if seed == cfg["seeds"][0] and not args.quick and main_budget:
                    picture(tensors, min(8, cfg["n_recon"]), PICTURE)
        common.log(f"seed {seed}: latent MSE {row['recon']['latent_mse']}, accuracy {row['accuracy']}")
        per_seed.append(row)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)

    summary = summarise(per_seed)
    metrics = []
    for space in ("latent_mse", "pixel_mse"):
        for b in BASELINES:
            m = summary[f"{space}_margin"][b]
            metrics.append(common.metric(f"ross {space} margin over {b} (worst seed)", m["min"], "fraction",
                                         target="> 0", better="higher", detail=m))
    metrics.append(common.metric("accuracy lm+ross - lm (mean over seeds)", summary["accuracy_difference"]["mean"],
                                 "fraction", better="higher", detail=summary["accuracy_difference"]))
    common.write_result(
        args.out, "ross_evidence", title="Ross reconstructs held-out images from the LLM's hidden states",
        quick=args.quick, command=common.command_line("bench_ross_evidence.py", shown_arguments(sys.argv[1:])), config=cfg,
        metrics=metrics, method=__doc__.split("\n\n", 1)[1].split("\n    python")[0],
        extra={"summary": summary, "per_seed": per_seed, "seconds": time.perf_counter() - t0})
    if not args.quick:
        render_page()
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
