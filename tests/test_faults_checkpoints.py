"""Checkpoints under faults: nothing in a checkpoint runs code or points elsewhere, damaged weights are
named errors, and a run killed at any moment (kill -9, also just after a checkpoint folder appears and
during the final save) resumes to bitwise the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from vlmkit.errors import CheckpointError, ConfigError
from vlmkit.model.assembly import build_model
from vlmkit.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, file_sha256, load_checkpoint, load_weights, save_checkpoint
from vlmkit.training.recipe import parse_recipe
from vlmkit.training.resume import MANIFEST, find_resume_checkpoint
from vlmkit.training.runner import run_recipe

TINY_MODEL = {
    "encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}],
    "connector": "mlp2x_gelu",
    "llm": {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128}},
    "max_length": 128,
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from vlmkit_data.synthetic import generate_shapes

    return generate_shapes(tmp_path_factory.mktemp("shapes"), n_train=96, n_test=8, seed=1, image_size=32)


def recipe(out: Path, shapes, **stage_kw) -> dict:
    stage = {"name": "s1", "data": {"dataset": "llava-json", "args": {"path": shapes["train"],
                                                                     "image_root": shapes["root"]},
                                    "template": "vicuna_v1"},
             "trainable": ["encoders", "connector", "llm"], "lr": 3e-3, "max_steps": 8, "batch_size": 8,
             "logging_steps": 1, "save_steps": 2, "warmup_ratio": 0.0, "schedule": "linear", "save_total_limit": 3}
    stage.update(stage_kw)
    return {"model": TINY_MODEL, "output_dir": str(out), "seed": 3, "stages": [stage]}


def same_weights(a: Path, b: Path) -> None:
    ta, _ = load_weights(a / WEIGHTS_FILE)
    tb, _ = load_weights(b / WEIGHTS_FILE)
    assert ta.keys() == tb.keys()
    diffs = {k: (ta[k] - tb[k]).abs().max().item() for k in ta}
    assert max(diffs.values()) == 0.0, {k: v for k, v in diffs.items() if v}


@pytest.fixture(scope="module")
def uninterrupted(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return run_recipe(parse_recipe(recipe(out / "run", shapes)))


# -- nothing in a checkpoint decides what code runs or where the LLM comes from ------------------------
@pytest.fixture()
def saved(tiny_config, tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(build_model(tiny_config), tmp_path / "ck")


def record_digests(ck: Path) -> None:
    """Make an edited checkpoint consistent with its record, as a careful attacker (or a test of a later guard)
    would: the digests then vouch for the edit."""
    from vlmkit.model.integrity import folder_digests

    doc = yaml.safe_load((ck / CONFIG_FILE).read_text())
    doc["files"] = folder_digests(ck, [WEIGHTS_FILE] + [f.relative_to(ck).as_posix() for f in (ck / "llm").rglob("*")
                                                         if f.is_file()])
    doc["weights"]["sha256"] = doc["files"][WEIGHTS_FILE]
    (ck / CONFIG_FILE).write_text(yaml.safe_dump(doc))


def test_a_checkpoint_cannot_turn_on_remote_code(saved, tmp_path):
    marker = tmp_path / "ran"
    (saved / "llm" / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n"
                                           "from transformers import LlamaConfig as EvilConfig\n"
                                           "from transformers import LlamaForCausalLM as EvilModel\n")
    cfg = json.loads((saved / "llm" / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (saved / "llm" / "config.json").write_text(json.dumps(cfg))
    doc = yaml.safe_load((saved / CONFIG_FILE).read_text())
    doc["model"]["llm"]["args"]["trust_remote_code"] = True
    (saved / CONFIG_FILE).write_text(yaml.safe_dump(doc))
    # first guard: the edited llm/ files do not match the checkpoint's record
    with pytest.raises(CheckpointError, match=r"llm/config\.json: changed since it was saved"):
        load_checkpoint(saved)
    record_digests(saved)  # second guard, with the record made to vouch for the edit
    model = load_checkpoint(saved)
    assert not marker.exists()  # the checkpoint's Python file was never imported
    assert model.llm._args["trust_remote_code"] is False


def test_a_checkpoint_llm_path_pointing_elsewhere_is_refused(saved, tmp_path):
    doc = yaml.safe_load((saved / CONFIG_FILE).read_text())
    doc["model"]["llm"]["args"]["path"] = str(tmp_path / "somewhere")
    (saved / CONFIG_FILE).write_text(yaml.safe_dump(doc))
    with pytest.raises(CheckpointError, match=r"model\.llm\.args\.path is .*somewhere.*own llm/ folder"):
        load_checkpoint(saved)
    # the caller may point it elsewhere on purpose
    assert load_checkpoint(saved, llm_path=str(saved / "llm")) is not None


def test_a_checkpoint_without_llm_folder_names_it(saved):
    import shutil

    shutil.rmtree(saved / "llm")
    with pytest.raises(CheckpointError, match="no llm/ folder"):
        load_checkpoint(saved)


def test_flipped_bytes_in_the_weights_are_a_checksum_error(saved):
    w = saved / WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    data[-7] ^= 0xFF  # inside the last tensor's data: the file still parses
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: changed since it was saved"):
        load_checkpoint(saved)
    os.environ["VLMKIT_VERIFY_WEIGHTS"] = "0"
    try:
        load_checkpoint(saved)  # the opt-out loads it
    finally:
        del os.environ["VLMKIT_VERIFY_WEIGHTS"]


def test_non_finite_weights_are_an_error(saved):
    w = saved / WEIGHTS_FILE
    tensors = load_file(str(w))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name][0] = float("nan")
    save_file(tensors, str(w), metadata={"format": "pt", "aliases": "{}"})
    record_digests(saved)  # a consistent file whose values are bad
    with pytest.raises(CheckpointError, match=f"non-finite values.*{name}"):
        load_checkpoint(saved)


# -- resume trusts only complete checkpoints -----------------------------------------------------------
@pytest.fixture()
def crash_after(crash_after_save):
    """A run stopped right after the checkpoint at ``step`` was written (as a kill would leave it)."""

    def run(step: int, out: Path, shapes) -> Path:
        with crash_after_save(step):
            run_recipe(parse_recipe(recipe(out, shapes)))
        return out / "01-s1"

    return run


def test_resume_passes_over_half_written_checkpoints(shapes, tmp_path, crash_after, uninterrupted, caplog):
    stage = crash_after(4, tmp_path / "run", shapes)
    # what a kill 0-20 ms into the next save leaves: a folder with some files and no manifest
    half = stage / "checkpoint-6"
    half.mkdir()
    (half / "trainer_state.json").write_text("{")
    assert find_resume_checkpoint(stage).endswith("checkpoint-4")
    assert "passed over checkpoint-6" in caplog.text
    final = run_recipe(parse_recipe(recipe(tmp_path / "run", shapes)), resume=True)
    same_weights(final, uninterrupted)


@pytest.mark.parametrize("victim", ["optimizer.pt", "scheduler.pt", "trainer_state.json"])
def test_resume_refuses_when_no_checkpoint_has_its_training_state(shapes, tmp_path, crash_after, victim):
    stage = crash_after(4, tmp_path / "run", shapes)
    for ck in ("checkpoint-2", "checkpoint-4"):
        (stage / ck / victim).unlink()
    with pytest.raises(CheckpointError, match=f"no checkpoint verifies: .*checkpoint-4/{victim}: missing; .*"
                                              f"checkpoint-2/{victim}: missing.*resume-weights-only"):
        run_recipe(parse_recipe(recipe(tmp_path / "run", shapes)), resume=True)


def _same_size_corruption(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x55  # one byte in the middle: same size, other content
    f.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", ["optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth",
                                    WEIGHTS_FILE])
def test_resume_survives_a_same_size_corruption_by_falling_back(shapes, tmp_path, crash_after, uninterrupted, victim,
                                                                 caplog):
    """The manifest records each file's SHA-256: a same-size corruption of any state file of the newest
    checkpoint is found, that checkpoint passed over (and said so), and the run resumes from the one before,
    ending with exactly the weights of a run that was never interrupted."""
    stage = crash_after(4, tmp_path / "run", shapes)
    f = stage / "checkpoint-4" / victim
    assert f.is_file(), sorted(p.name for p in f.parent.iterdir())
    _same_size_corruption(f)
    final = run_recipe(parse_recipe(recipe(tmp_path / "run", shapes)), resume=True)
    assert f"resuming from checkpoint-2; passed over checkpoint-4 ({f}: changed since it was saved" in caplog.text
    same_weights(final, uninterrupted)


def test_a_manifest_with_sizes_only_is_passed_over_unless_allowed(shapes, tmp_path, crash_after, monkeypatch):
    stage = crash_after(4, tmp_path / "run", shapes)
    for ck in ("checkpoint-2", "checkpoint-4"):  # what vlmkit before 0.2 wrote
        m = json.loads((stage / ck / MANIFEST).read_text())
        m["files"] = {k: v["size"] for k, v in m["files"].items()}
        (stage / ck / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match=r"records sizes only \(written by vlmkit before 0\.2\).*"
                                              r"--allow-unverified"):
        find_resume_checkpoint(stage)
    monkeypatch.setenv("VLMKIT_ALLOW_UNVERIFIED", "1")
    assert find_resume_checkpoint(stage).endswith("checkpoint-4")


def test_weights_only_resume_continues_without_optimizer_state(shapes, tmp_path, crash_after):
    stage = crash_after(4, tmp_path / "run", shapes)
    for f in ("optimizer.pt", "scheduler.pt"):
        (stage / "checkpoint-4" / f).unlink()
    final = run_recipe(parse_recipe(recipe(tmp_path / "run", shapes)), resume=True, weights_only=True)
    assert (final / WEIGHTS_FILE).is_file()


@pytest.mark.parametrize("victim", ["trainer_state.json", "optimizer.pt"])
def test_truncated_training_state_names_the_file(shapes, tmp_path, crash_after, victim):
    stage = crash_after(4, tmp_path / "run", shapes)
    for ck in ("checkpoint-2", "checkpoint-4"):
        f = stage / ck / victim
        f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(CheckpointError, match=f"{victim}: 10 bytes, saved as"):
        run_recipe(parse_recipe(recipe(tmp_path / "run", shapes)), resume=True)


def test_resume_loads_weights_strictly(shapes, tmp_path, crash_after):
    stage = crash_after(4, tmp_path / "run", shapes)
    ck = stage / "checkpoint-4"
    tensors = load_file(str(ck / WEIGHTS_FILE))
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, str(ck / WEIGHTS_FILE), metadata={"format": "pt", "aliases": "{}"})
    # make the damage consistent with the manifest and the checksum: only the strict load can catch it
    record_digests(ck)
    manifest = json.loads((ck / MANIFEST).read_text())
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        manifest["files"][name] = {"size": (ck / name).stat().st_size, "sha256": file_sha256(ck / name)}
    (ck / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=f"missing 1 tensor.*{dropped}"):
        run_recipe(parse_recipe(recipe(tmp_path / "run", shapes)), resume=True)


def test_an_interrupted_final_save_is_not_a_finished_stage(shapes, tmp_path, uninterrupted):
    run_recipe(parse_recipe(recipe(tmp_path / "run", shapes)))
    stage = tmp_path / "run" / "01-s1"
    # a kill during the final save leaves `final.partial` (here with its vlmkit.yaml already written)
    os.replace(stage / "final", stage / "final.partial")
    (stage / "final.partial" / "skipped.json").unlink()
    final = run_recipe(parse_recipe(recipe(tmp_path / "run", shapes)), resume=True)
    assert (final / "skipped.json").is_file() and (final / "loss_curve.png").is_file()
    assert not (stage / "final.partial").exists()
    same_weights(final, uninterrupted)


def test_rotation_keeps_the_newest_complete_checkpoints(shapes, tmp_path):
    run_recipe(parse_recipe(recipe(tmp_path / "run", shapes, save_total_limit=2)))
    kept = sorted(p.name for p in (tmp_path / "run" / "01-s1").glob("checkpoint-*"))
    assert kept == ["checkpoint-6", "checkpoint-8"]
    assert all((tmp_path / "run" / "01-s1" / k / MANIFEST).is_file() for k in kept)


# -- kill -9 at any moment -----------------------------------------------------------------------------
# every run in its own process with one thread: the reference run too (thread counts change float sums)
CLI_ENV = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def cli_train(recipe_file: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vlmkit_cli", "train", str(recipe_file), *extra], env=CLI_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def uninterrupted_cli(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("full-cli")
    rfile = out / "recipe.yaml"
    rfile.write_text(yaml.safe_dump(recipe(out / "run", shapes)))
    proc = cli_train(rfile)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-2000:]
    return out / "run" / "01-s1" / "final"


def kill_when(proc: subprocess.Popen, path: Path, delay_ms: float, timeout: float = 300) -> bool:
    """SIGKILL ``proc`` ``delay_ms`` after ``path`` appears; False if the run ended first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists():
            time.sleep(delay_ms / 1000)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.0005)
    proc.kill()
    raise AssertionError(f"{path} did not appear in {timeout} s")


@pytest.mark.parametrize("target, delay_ms", [("checkpoint-4", 0), ("checkpoint-4", 8), ("checkpoint-6", 20),
                                              ("final.partial", 0), ("final.partial", 5)])
def test_kill_9_at_any_moment_then_resume_is_bitwise_equal(shapes, tmp_path, uninterrupted_cli, target, delay_ms):
    rfile = tmp_path / "recipe.yaml"
    rfile.write_text(yaml.safe_dump(recipe(tmp_path / "run", shapes)))
    proc = cli_train(rfile)
    killed = kill_when(proc, tmp_path / "run" / "01-s1" / target, delay_ms + random.random())
    assert killed, proc.stdout.read()[-2000:]
    done = subprocess.run([sys.executable, "-m", "vlmkit_cli", "train", str(rfile), "--resume"], capture_output=True,
                          text=True, env=CLI_ENV, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    same_weights(tmp_path / "run" / "01-s1" / "final", uninterrupted_cli)


# -- named errors before anything runs -----------------------------------------------------------------
@pytest.mark.parametrize("key, value, expected", [
    ("batch_size", "four", r"stages\[0\]\.batch_size: .*integer.*'four'"),
    ("batch_size", -1, r"stages\[0\]\.batch_size: .*greater than 0.*-1"),
    ("batch_size", 2.5, r"stages\[0\]\.batch_size: .*integer.*2\.5"),
    ("max_steps", "ten", r"stages\[0\]\.max_steps: .*'ten'"),
    ("trainable", 5, r"stages\[0\]\.trainable: .*5"),
    ("schedule", "cosin", r"stages\[0\]\.schedule: .*'cosine'.*'cosin'"),
    ("lr", "fast", r"stages\[0\]\.lr: .*number.*'fast'"),
    ("save_steps", 0, r"stages\[0\]\.save_steps: .*greater than 0"),
    ("dataloader_workers", -2, r"stages\[0\]\.dataloader_workers: .*greater than or equal to 0"),
    ("packing", "yes", r"stages\[0\]\.packing: .*bool.*'yes'"),
])
def test_bad_stage_values_are_named_errors(shapes, tmp_path, key, value, expected):
    doc = recipe(tmp_path / "run", shapes, **{key: value})
    with pytest.raises(ConfigError, match=expected):
        parse_recipe(doc, "r.yaml")


def test_bad_data_values_are_named_errors(shapes, tmp_path):
    doc = recipe(tmp_path / "run", shapes)
    doc["stages"][0]["data"]["resize"] = "stretch"
    with pytest.raises(ConfigError, match=r"r\.yaml\.stages\[0\]\.data\.resize: .*'pad'.*'stretch'"):
        parse_recipe(doc, "r.yaml")


def test_a_schedule_typo_lists_transformers_schedules(shapes, tmp_path):
    from transformers import SchedulerType

    with pytest.raises(ConfigError) as err:
        parse_recipe(recipe(tmp_path / "run", shapes, schedule="cosin"), "r.yaml")
    assert all(repr(s.value) in str(err.value) for s in SchedulerType)


def test_an_optimizer_typo_lists_transformers_optimizers(shapes, tmp_path):
    from transformers.training_args import OptimizerNames

    with pytest.raises(ConfigError) as err:
        parse_recipe(recipe(tmp_path / "run", shapes, optimizer="adamw_torh"), "r.yaml")
    assert "optimizer" in str(err.value) and all(repr(o.value) in str(err.value) for o in OptimizerNames)
    assert parse_recipe(recipe(tmp_path / "run", shapes, optimizer="sgd"), "r.yaml").stages[0].optimizer == "sgd"

@pytest.mark.parametrize("assignment, expected", [
    ("stages.x=1", r"--set stages\.x: 'stages\.x' is not a list index"),
    ("stages.5=1", r"--set stages\.5: 'stages\.5' is not a list index here \(the list has 1 item"),
    ("stages=3", r"stages: expected a list of stages, got int 3"),
    ("stages.0.lr=[1, 2", r"--set stages\.0\.lr: the value .* is not valid YAML"),
    ("stages.0.lr.x=1", r"--set stages\.0\.lr\.x: 'stages\.0\.lr' is float"),
])
def test_bad_set_forms_are_named_errors(shapes, tmp_path, assignment, expected):
    from vlmkit.training.recipe import load_recipe

    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(recipe(tmp_path / "run", shapes)))
    with pytest.raises(ConfigError, match=expected):
        load_recipe(str(f), [assignment])


@pytest.mark.parametrize("assignment, expected", [
    ("encoder.width=-5", r"tiny-conv.*argument 'width' must be > 0, got -5"),
    ("encoder.width=0", r"argument 'width' must be > 0, got 0"),
    ("max_length=0", r"--set max_length: expected an integer from 1 to 1,048,576 \(a number of tokens\), got 0"),
    ("llm.num_layers=0", r"argument 'num_layers' must be > 0"),
])
def test_component_sizes_are_range_checked(tiny_config, assignment, expected):
    with pytest.raises(ConfigError, match=expected):
        tiny_config.set(assignment)
        build_model(tiny_config)


def test_deepspeed_not_installed_is_named_before_anything_runs(shapes, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    rec = parse_recipe(recipe(tmp_path / "run", shapes, deepspeed="zero2"), "r.yaml")
    with pytest.raises(ConfigError, match=r"needs DeepSpeed, which is not installed: pip install 'vlmkit-core\[deepspeed\]'"):
        run_recipe(rec)


def test_unknown_deepspeed_value_is_named_before_anything_runs(shapes, tmp_path):
    rec = parse_recipe(recipe(tmp_path / "run", shapes, deepspeed="zero4"), "r.yaml")
    with pytest.raises(ConfigError, match=r"r\.yaml\.stages\[0\]\.deepspeed: 'zero4' is neither zero2, zero3"):
        run_recipe(rec)
    assert not (tmp_path / "run").exists()


def test_import_hf_with_an_unknown_text_model_is_one_short_line(tmp_path):
    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": {"model_type": "no_such_lm"},
                                                 "vision_config": {"model_type": "clip_vision_model"}}))
    proc = subprocess.run([sys.executable, "-m", "vlmkit_cli", "import-hf", str(src), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and len(line) < 400, line
    assert "text_config.model_type 'no_such_lm' is not a model type" in line


def test_long_error_messages_are_cut():
    from vlmkit_cli.errors import MAX_MESSAGE, first_line

    line = first_line(ValueError("x" * 12000))
    assert len(line) < MAX_MESSAGE + 80 and "12,000 characters" in line


# -- integrity the data cannot switch off ------------------------------------------------------------
def _edit_doc(ck: Path, fn) -> None:
    doc = yaml.safe_load((ck / CONFIG_FILE).read_text())
    fn(doc)
    (ck / CONFIG_FILE).write_text(yaml.safe_dump(doc))


def test_every_file_of_a_checkpoint_is_on_record(saved):
    doc = yaml.safe_load((saved / CONFIG_FILE).read_text())
    on_disk = sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file() and p.name != CONFIG_FILE)
    assert doc["format"] == 2 and sorted(doc["files"]) == on_disk
    assert all(doc["files"][n] == file_sha256(saved / n) for n in on_disk)


@pytest.mark.parametrize("removed", [("files",), ("files", "weights")])
def test_deleting_the_digests_refuses_the_checkpoint_instead_of_trusting_it(saved, removed, monkeypatch, caplog):
    w = saved / WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    data[-7] ^= 0xFF
    w.write_bytes(bytes(data))
    _edit_doc(saved, lambda d: [d.pop(k) for k in removed])
    if removed == ("files",):  # the weights' own digest, still there, catches the flip
        with pytest.raises(CheckpointError, match="checksum mismatch"):
            load_checkpoint(saved)
        return
    with pytest.raises(CheckpointError, match=r"records no digests of its files .*--allow-unverified"):
        load_checkpoint(saved)
    # only the caller can accept it: the argument, or the environment the CLI's --allow-unverified sets
    assert load_checkpoint(saved, allow_unverified=True) is not None
    monkeypatch.setenv("VLMKIT_ALLOW_UNVERIFIED", "1")
    assert load_checkpoint(saved) is not None
    assert "loaded without a complete record of digests (allowed by the caller)" in caplog.text


def test_a_file_slipped_into_llm_is_refused(saved):
    (saved / "llm" / "added_tokens.json").write_text('{"<evil>": 5}')
    with pytest.raises(CheckpointError, match=r"llm/added_tokens\.json: not part of the checkpoint as saved"):
        load_checkpoint(saved)


@pytest.mark.parametrize("value, message", [
    ("abc", r"'weights' must be a mapping with a 'sha256' string, got 'abc'"),
    ({"sha256": 5}, r"'weights' must be a mapping with a 'sha256' string"),
])
def test_a_malformed_weights_record_is_named(saved, value, message):
    _edit_doc(saved, lambda d: d.update(weights=value))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(saved)


def test_a_malformed_files_record_is_named(saved):
    _edit_doc(saved, lambda d: d.update(files=["model.safetensors"]))
    with pytest.raises(CheckpointError, match=r"'files' must map file names to SHA-256 hex digests, got list"):
        load_checkpoint(saved)
    _edit_doc(saved, lambda d: d.update(files={"../../etc/passwd": "0" * 64}))
    with pytest.raises(CheckpointError, match=r"'files' names '\.\./\.\./etc/passwd', outside the checkpoint"):
        load_checkpoint(saved)


def test_a_component_from_another_distribution_is_an_error_naming_both(saved, monkeypatch, caplog):
    def swap(doc):
        for rec in doc["plugins"]:
            if rec["kind"] == "encoder":
                rec["distribution"] = "acme-vision-towers"
    _edit_doc(saved, swap)
    with pytest.raises(CheckpointError, match=r"encoder 'tiny-conv' was saved by acme-vision-towers, and "
                                              r"vlmkit-encoders .* provides it here .*install acme-vision-towers, or "
                                              r"pass --allow-other-plugins"):
        load_checkpoint(saved)
    assert load_checkpoint(saved, allow_other_plugins=True) is not None
    assert "(allowed by the caller)" in caplog.text
    # the name docs/design.md gave this check in 0.2 still works, with its removal version
    from vlmkit.model.checkpoint import check_provenance

    doc = yaml.safe_load((saved / CONFIG_FILE).read_text())
    with pytest.warns(DeprecationWarning, match="check_plugin_records.*removed in vlmkit-core 0.4"), \
            pytest.raises(CheckpointError, match="was saved by acme-vision-towers"):
        check_provenance(doc["plugins"], saved / CONFIG_FILE)


def test_seal_records_digests_of_an_older_checkpoint_whose_weights_still_match(saved, tmp_path, tiny_config):
    from vlmkit.model.checkpoint import seal_checkpoint

    _edit_doc(saved, lambda d: (d.pop("files"), d.update(format=1)))  # as vlmkit before 0.2 wrote it
    with pytest.raises(CheckpointError, match=r"written by a vlmkit before 0\.2.*vlmkit checkpoint seal PATH"):
        load_checkpoint(saved)
    assert seal_checkpoint(saved) == len([p for p in saved.rglob("*") if p.is_file() and p.name != CONFIG_FILE])
    assert load_checkpoint(saved) is not None
    # weights that no longer match their recorded digest are not sealed
    other = save_checkpoint(build_model(tiny_config), tmp_path / "other")
    _edit_doc(other, lambda d: (d.pop("files"), d.update(format=1)))
    _same_size_corruption(other / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match="checksum mismatch .* not sealed"):
        seal_checkpoint(other)
    # nothing recorded at all: sealed only when the caller allows it
    _edit_doc(other, lambda d: d.pop("weights"))
    with pytest.raises(CheckpointError, match=r"records no digest of model\.safetensors.*--allow-unverified"):
        seal_checkpoint(other)
    assert seal_checkpoint(other, allow=True) > 0


def test_checkpoint_verify_and_seal_from_the_command_line(saved):
    from typer.testing import CliRunner

    from vlmkit_cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["checkpoint", "verify", str(saved)])
    assert res.exit_code == 0 and "match their recorded SHA-256" in res.output
    _same_size_corruption(saved / "llm" / "config.json")
    res = runner.invoke(app, ["checkpoint", "verify", str(saved)])
    assert res.exit_code == 2 and "llm/config.json: changed since it was saved" in res.output
    _edit_doc(saved, lambda d: (d.pop("files"), d.pop("weights")))
    res = runner.invoke(app, ["checkpoint", "seal", str(saved)])
    assert res.exit_code == 2 and "--allow-unverified" in res.output
    res = runner.invoke(app, ["--allow-unverified", "checkpoint", "seal", str(saved)])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["checkpoint", "verify", str(saved)]).exit_code == 0
