"""``vlmkit sweep``: the grid, the statistics, refusals before training, a failed variant, the table, the
picture, and resuming after kill -9 without rerunning finished variants."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from vlmkit.errors import ConfigError
from vlmkit.sweep.grid import axis_labels, expand, parse_axis, parse_seeds, split_values
from vlmkit.sweep.statistics import paired_difference, summarise, t_quantile_975
from vlmkit_cli.main import app

# ---------------------------------------------------------------------------------------------- the grid


def test_values_split_on_top_level_commas_only():
    assert split_values("1e-3,3e-3") == ["1e-3", "3e-3"]
    assert split_values("[1, 2],{a: 1, b: 2},'x,y'") == ["[1, 2]", "{a: 1, b: 2}", "'x,y'"]


def test_the_grid_crosses_axes_and_seeds_in_order_with_short_distinct_labels():
    axes = [parse_axis("stages.0.lr=1e-3,3e-3"), parse_axis("model.encoders.0.name=clip,siglip,convnext")]
    groups, variants = expand(axes, parse_seeds("0,1"))
    assert [g.name for g in groups][:4] == ["lr=1e-3 name=clip", "lr=1e-3 name=siglip", "lr=1e-3 name=convnext",
                                            "lr=3e-3 name=clip"]
    assert len(groups) == 6 and len(variants) == 12
    assert variants[1].name == "lr=1e-3 name=clip seed=1" and variants[1].folder == "001-lr=1e-3_name=clip-seed1"
    assert groups[5].sets() == ["stages.0.lr=3e-3", "model.encoders.0.name=convnext"]
    assert len({v.folder for v in variants}) == 12
    # the same last part in two keys: enough of the key to tell them apart
    assert axis_labels([parse_axis("stages.0.lr=1"), parse_axis("stages.1.lr=2")]) == ["0.lr", "1.lr"]


def test_zipped_axes_go_together_and_groups_can_be_named():
    axes = [parse_axis("model.encoders.0.name=convnext,convnext5"), parse_axis("model.encoders.0.args.image_size=128,256")]
    groups, variants = expand(axes, (0, 1, 2), zipped=True, names=["4 stages", "5 stages"])
    assert [g.sets() for g in groups] == [["model.encoders.0.name=convnext", "model.encoders.0.args.image_size=128"],
                                          ["model.encoders.0.name=convnext5", "model.encoders.0.args.image_size=256"]]
    assert [g.name for g in groups] == ["4 stages", "5 stages"] and len(variants) == 6
    assert variants[3].name == "5 stages seed=0" and variants[3].folder == "002-5_stages-seed0"
    assert [g.name for g in expand(axes, (0,), zipped=True)[0]] == ["name=convnext image_size=128",
                                                                  "name=convnext5 image_size=256"]
    with pytest.raises(ConfigError, match="--zip .* as many values: a has 2, b has 3"):
        expand([parse_axis("a=1,2"), parse_axis("b=1,2,3")], (0,), zipped=True)
    with pytest.raises(ConfigError, match="--names: 1 name\\(s\\) for 2 group\\(s\\)"):
        expand(axes, (0,), zipped=True, names=["only one"])


@pytest.mark.parametrize("text, message", [
    ("stages.0.lr", "expected KEY=V1,V2"),
    ("stages.0.lr=1e-3,,3e-3", "non-empty values"),
    ("stages.0.lr=[1,", "not valid YAML"),
])
def test_a_malformed_axis_is_refused_by_name(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_axis(text)


def test_a_repeated_value_is_refused_crossed_but_allowed_zipped_when_the_groups_differ():
    with pytest.raises(ConfigError, match="--vary a: a value is listed twice"):
        expand([parse_axis("a=1,1"), parse_axis("b=3,4")], (0,))
    groups, _ = expand([parse_axis("a=1,1,2"), parse_axis("b=3,4,4")], (0,), zipped=True)
    assert [g.overrides for g in groups] == [(("a", "1"), ("b", "3")), (("a", "1"), ("b", "4")), (("a", "2"), ("b", "4"))]
    with pytest.raises(ConfigError, match=r"--zip: a group is listed twice \(a=1, b=3\)"):
        expand([parse_axis("a=1,1"), parse_axis("b=3,3")], (0,), zipped=True)


def test_seeds_must_be_distinct_integers():
    assert parse_seeds("0,1,2") == (0, 1, 2)
    for bad in ("0,a", "1,1", "-1"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)
    with pytest.raises(ConfigError, match="varied twice"):
        expand([parse_axis("a=1,2"), parse_axis("a=3")], (0,))

# ---------------------------------------------------------------------------------------------- statistics


def test_t_quantiles_match_the_table_and_the_normal_limit():
    assert t_quantile_975(2) == 4.303 and t_quantile_975(30) == 2.042
    assert abs(t_quantile_975(60) - 2.0003) < 1e-3 and abs(t_quantile_975(120) - 1.9799) < 1e-3
    assert abs(t_quantile_975(10 ** 6) - 1.95996) < 1e-4


def test_paired_difference_is_computed_seed_by_seed():
    d = paired_difference({0: 0.60, 1: 0.70, 2: 0.65}, {0: 0.50, 1: 0.55, 2: 0.60})
    diffs = [0.10, 0.15, 0.05]
    s = summarise(diffs)
    half = 4.303 * s.sd / math.sqrt(3)
    assert d.n == 3 and math.isclose(d.mean, 0.10) and math.isclose(d.low, 0.10 - half)
    assert math.isclose(d.high, 0.10 + half)
    one = paired_difference({0: 0.6, 5: 0.9}, {0: 0.5})  # only seed 0 is shared: no interval
    assert one.n == 1 and math.isclose(one.mean, 0.1) and math.isnan(one.low)

def test_the_majority_answer_rate_is_per_category_and_overall():
    from types import SimpleNamespace

    from vlmkit.inference.evaluation import majority_answer_rates

    def rec(cat, answer):
        return SimpleNamespace(turns=[SimpleNamespace(text="q"), SimpleNamespace(text=answer)], meta={"category": cat})

    data = [rec("a", "Yes."), rec("a", "yes"), rec("a", "no"), rec("b", "red"), rec("b", "blue")]
    rates = majority_answer_rates(data)
    assert rates == {"a": 2 / 3, "b": 0.5, "all": 3 / 5}  # answers compared as the scorer compares them


def test_the_majority_answer_rate_reads_a_llava_file_without_opening_its_images(tmp_path):
    import json

    from vlmkit.errors import DataError
    from vlmkit.inference.evaluation import majority_answer_rates
    from vlmkit_data.llava_json import LlavaJsonDataset

    answers = [("color", "red"), ("color", "red"), ("color", "blue"), ("count", "two")]
    lines = [json.dumps({"id": f"r{i}", "image": f"missing{i}.png", "category": c, "answer": a,
                         "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": a}]})
             for i, (c, a) in enumerate(answers)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    ds = LlavaJsonDataset(str(tmp_path / "d.jsonl"), image_root=str(tmp_path), progress=False)
    with pytest.raises(DataError):  # the images are not there: decoding them would fail
        ds[0]
    sample = ds.text_sample(1)
    assert sample.images == [] and sample.id == "r1" and sample.turns[-1].text == "red"
    assert majority_answer_rates(ds) == {"color": 2 / 3, "count": 1.0, "all": 3 / 4}


# ---------------------------------------------------------------------------------------------- end to end


def _write_data(root: Path) -> None:
    """Colour questions about 16 px images (LLaVA JSONL), a training file, a broken one and a held-out set."""
    root.mkdir(parents=True, exist_ok=True)
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    rows = []
    for i in range(24):
        name = "red" if i % 2 else "blue"
        Image.new("RGB", (16, 16), colours[name]).save(root / f"{i}.png")
        rows.append({"id": str(i), "image": f"{i}.png", "category": "colour", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": name}]})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:16]))
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[16:]))
    (root / "broken.jsonl").write_text(json.dumps(rows[0]) + "\n{not json\n")


def _write_recipe(path: Path, steps: int = 6) -> None:
    path.write_text(yaml.safe_dump({
        "model": {"encoders": [{"name": "tiny-conv", "args": {"image_size": 16}}], "connector": "mlp2x_gelu",
                  "llm": "tiny-llama"},
        "stages": [{"name": "s", "data": {"dataset": "llava-json", "args": {"path": "data/train.jsonl"}},
                    "trainable": ["connector", "llm"], "lr": 1e-3, "max_steps": steps, "batch_size": 4,
                    "logging_steps": 1, "save_steps": 2}]}))


@pytest.fixture
def sweep_dir(tmp_path, monkeypatch):
    _write_data(tmp_path / "data")
    _write_recipe(tmp_path / "r.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("vary, message", [
    ("stages.0.lrr=1,2", "variant 'lrr=1' (group 1 of 2): r.yaml.stages[0]: unknown key 'lrr' (did you mean 'lr'?)"),
    ("stages.0.lr=1e-3,fast", "variant 'lr=fast' (group 2 of 2): r.yaml.stages[0].lr: input should be a valid number"),
    ("model.encoders.0.name=tiny-conv,no-such-encoder", "variant 'name=no-such-encoder' (group 2 of 2): "),
    ("model.encoders.0.args.image_size=16,big", "variant 'image_size=big' (group 2 of 2): "),
    ("stages.0.trainable=[llm],[no_such_part]",
     "variant 'trainable=[no_such_part]' (group 2 of 2): trainable selector 'no_such_part'"),
])
def test_a_bad_variant_is_refused_before_anything_trains(sweep_dir, vary, message):
    res = CliRunner().invoke(app, ["sweep", "r.yaml", "--vary", vary, "--eval-data", "data/test.jsonl",
                                   "-o", "out"])
    assert res.exit_code == 2 and message in res.output, res.output
    assert "nothing was trained" in res.output and not (sweep_dir / "out").exists()


def test_a_missing_or_empty_held_out_set_is_refused_before_training(sweep_dir):
    (sweep_dir / "data" / "empty.jsonl").write_text("")
    for data, message in (("data/none.jsonl", "none.jsonl"), ("data/empty.jsonl", "the held-out set has no records")):
        res = CliRunner().invoke(app, ["sweep", "r.yaml", "--eval-data", data, "-o", "out"])
        assert res.exit_code == 2 and message in res.output and not (sweep_dir / "out").exists(), res.output


def test_dry_run_lists_the_groups_and_trains_nothing(sweep_dir):
    res = CliRunner().invoke(app, ["sweep", "r.yaml", "--vary", "stages.0.lr=1e-3,3e-3", "--seeds", "0,1,2",
                                   "--eval-data", "data/test.jsonl", "-o", "out", "--dry-run", "--baseline", "2"])
    assert res.exit_code == 0, res.output
    assert "2 group(s) x 3 seed(s) = 6 variant(s); baseline: lr=3e-3" in res.output
    assert "  2  lr=3e-3  (baseline)" in res.output and not (sweep_dir / "out").exists()


def test_a_group_whose_objective_cannot_train_is_warned_about_before_anything_trains(sweep_dir):
    """The Ross claim's first sweep trained 31 minutes with the denoiser frozen; the warning came from each
    variant's log. The plan says it first, naming the group, and only for the group that has the trap."""
    doc = yaml.safe_load((sweep_dir / "r.yaml").read_text())
    doc["model"] = {"preset": "vlmkit-objectives:ross-tiny"}
    (sweep_dir / "ross.yaml").write_text(yaml.safe_dump(doc))
    res = CliRunner().invoke(app, [
        "sweep", "ross.yaml", "--zip", "--names", "frozen,trained",
        "--vary", "stages.0.trainable=[encoders, connector, llm],[encoders, connector, llm, 'objective.ross:denoiser']",
        "--eval-data", "data/test.jsonl", "-o", "out", "--dry-run"])
    assert res.exit_code == 0, res.output
    warned = [line for line in res.output.splitlines() if "none of its own parameters train" in line]
    assert len(warned) == 1 and "variant 'frozen', stage 's': objective 'ross'" in warned[0], res.output
    assert not (sweep_dir / "out").exists()


def test_without_axes_the_recipe_is_one_group_and_names_name_it(sweep_dir):
    res = CliRunner().invoke(app, ["sweep", "r.yaml", "--set", "stages.0.lr=3e-3", "--names", "reference",
                                   "--seeds", "0,1", "--eval-data", "data/test.jsonl", "-o", "out", "--dry-run"])
    assert res.exit_code == 0 and "1 group(s) x 2 seed(s) = 2 variant(s); baseline: reference" in res.output


def test_a_second_sweep_in_a_running_sweeps_folder_is_refused(sweep_dir):
    import fcntl

    (sweep_dir / "out").mkdir()
    with open(sweep_dir / "out" / ".sweep.lock", "a+") as held:
        held.write("4242")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running sweep holds it
        res = CliRunner().invoke(app, ["sweep", "r.yaml", "--vary", "stages.0.lr=1e-3,3e-3", "--eval-data",
                                       "data/test.jsonl", "-o", "out"])
    assert res.exit_code == 2 and "a sweep is running there already (pid 4242)" in res.output, res.output
    assert not (sweep_dir / "out" / "variants").exists()


def _sweep_cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "vlmkit_cli", "sweep", "r.yaml", "--vary",
            "stages.0.data.args.path=data/train.jsonl,data/broken.jsonl", "--seeds", "0,1",
            "--eval-data", "data/test.jsonl", "-o", "out", *extra]


def test_variants_run_one_gpu_each_or_share_the_cpu():
    from vlmkit.sweep.runner import slots

    gpus = slots(2, ["0", "3", "5"])
    assert [s.env for s in gpus] == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "3"}]
    with pytest.raises(ConfigError, match="--jobs 4 with 3 GPU"):
        slots(4, ["0", "1", "2"])
    cpu = slots(2, None)
    assert all(s.env["CUDA_VISIBLE_DEVICES"] == "" and int(s.env["VLMKIT_THREADS"]) >= 1 for s in cpu)
    assert slots(1, None)[0].env == {}


def test_a_failed_variant_is_recorded_and_the_sweep_goes_on_to_the_table_and_picture(sweep_dir):
    # two at a time: the path several GPUs take, here on the CPU
    proc = subprocess.run(_sweep_cmd("--jobs", "2"), capture_output=True, text=True, timeout=600,
                          env={**os.environ, "VLMKIT_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr  # a failed variant makes the exit status say so
    out = sweep_dir / "out"
    results = {p.parent.name: json.loads(p.read_text()) for p in out.glob("variants/*/result.json")}
    assert len(results) == 4
    ok = [r for r in results.values() if r["status"] == "ok"]
    failed = [r for r in results.values() if r["status"] == "failed"]
    assert {r["group"] for r in ok} == {"path=data/train.jsonl"} and len(failed) == 2
    assert all("broken.jsonl" in r["error"] and ":2" in r["error"] for r in failed), failed  # file and line named
    assert all(r["loss"] and r["loss"][-1][1] < r["loss"][0][1] for r in ok)  # it trained
    doc = json.loads((out / "results.json").read_text())
    good, bad = doc["groups"]
    assert good["seeds_ok"] == 2 and set(good["per_seed"]) == {"0", "1"} and good["versus_baseline"] is None
    colour = good["categories"]["colour"]
    assert set(colour["per_seed"]) == {"0", "1"}
    assert colour["mean"] == pytest.approx(sum(colour["per_seed"].values()) / 2, abs=1e-6)
    assert bad["seeds_ok"] == 0 and len(bad["failures"]) == 2 and bad["accuracy_mean"] is None
    table = (out / "results.md").read_text()
    assert "| path=data/broken.jsonl | 0/2 (failed: see below) |" in table and "Failed variants:" in table
    assert "| chance (majority answer) | | 0.500 | | 0.500 |" in table  # 4 red, 4 blue held out
    assert doc["chance_majority_answer"] == {"colour": 0.5, "all": 0.5}
    assert (out / "results.csv").read_text().splitlines()[0].startswith("group,seeds_ok,seeds,accuracy_mean")
    assert (out / "sweep.png").stat().st_size > 10_000
    # the failed ones are not rerun unless asked
    again = subprocess.run(_sweep_cmd(), capture_output=True, text=True, timeout=600)
    assert again.stderr.count("(earlier run)") == 4, again.stderr


def _workers_in(out: Path) -> list[str]:
    """Command lines of live sweep workers of ``out`` (from /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"vlmkit.sweep.worker" in args and any(str(out).encode() in a for a in args):
            found.append(" ".join(a.decode(errors="replace") for a in args))
    return found


def test_a_sweep_killed_with_sigkill_resumes_without_rerunning_finished_variants(sweep_dir):
    _write_recipe(sweep_dir / "r.yaml", steps=12)
    cmd = [sys.executable, "-m", "vlmkit_cli", "sweep", "r.yaml", "--vary", "stages.0.lr=1e-3,3e-3",
           "--seeds", "0,1", "--eval-data", "data/test.jsonl", "-o", "out"]
    env = {**os.environ, "VLMKIT_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    variants = sweep_dir / "out" / "variants"
    deadline = time.time() + 300
    while time.time() < deadline:  # the first variant finished, the second started
        if (variants / "001-lr=1e-3-seed0" / "result.json").exists() and \
                (variants / "001-lr=1e-3-seed1" / "variant.json").exists():
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the sweep did not get going in 300 s")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = variants / "001-lr=1e-3-seed0" / "result.json"
    stamp = first.stat().st_mtime_ns
    time.sleep(1.5)  # the orphaned variant notices its sweep is gone and stops
    assert not _workers_in(sweep_dir / "out"), "a variant's process outlived its killed sweep"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr
    assert first.stat().st_mtime_ns == stamp  # not rerun
    assert again.stderr.count("(earlier run)") == 1, again.stderr
    results = [json.loads(p.read_text()) for p in variants.glob("*/result.json")]
    assert len(results) == 4 and all(r["status"] == "ok" for r in results)
    assert len(json.loads((sweep_dir / "out" / "results.json").read_text())["groups"]) == 2
    # the same folder with another grid is refused
    other = subprocess.run([*cmd[:-4], "--seeds", "0,1,2", *cmd[-4:]], capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "holds another sweep (its seeds differ" in other.stderr, other.stderr


#: each measured claim -> the category its verdict reads (None: accuracy over all questions)
CLAIM_METRIC = {"s2": "detail", "convllava": "detail", "ross": "detail", "densefusion": None, "mg-llava": "shape",
                "vip-llava": None, "vip-llava-2400": None}


@pytest.mark.parametrize("claim", sorted(CLAIM_METRIC))
def test_the_claims_page_and_readme_report_the_committed_sweep_results(claim):
    """docs/claims.md and the README quote the difference the committed sweep table holds, for every group
    compared with the baseline."""
    root = Path(__file__).resolve().parents[1]
    doc = json.loads((root / "docs" / "claims" / f"{claim}.json").read_text())
    category = CLAIM_METRIC[claim]
    for other in [g for g in doc["groups"] if g["versus_baseline"] is not None]:
        d = other["categories"][category]["versus_baseline"] if category else other["versus_baseline"]
        quoted = f"{category or 'accuracy'} {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
        assert quoted in " ".join((root / "docs" / "claims.md").read_text().split()), (other["name"], quoted)
        assert quoted in " ".join((root / "README.md").read_text().split()), (other["name"], quoted)
    assert (root / "docs" / "claims" / f"{claim}.md").read_text() in (root / "docs" / "claims.md").read_text()

