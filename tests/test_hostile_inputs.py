"""Hostile inputs, one table: each case is what a hostile or careless user can hand vlmkit (a checkpoint, a
recipe, a --set, a data file, a path), and each must end as a named error: the exit status, a message that names
the file, record or field and what to do, no raw exception (``error: SomeError: ...``, a traceback), and
nothing written or lost in the case's folder. Extend it whenever a case is found (README, Errors).

The cases run in-process through the CLI (typer's runner), each in a fresh copy of a tiny checkpoint and tiny
data, so that the whole table takes seconds.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from vlmkit.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE

RAW = re.compile(r"error: [A-Z]\w*(Error|Exception):|Traceback \(most recent call last\)")
TINY = ["--encoder", "tiny-conv", "--set", "encoder.image_size=32", "--connector", "mlp2x_gelu"]


@dataclass
class Case:
    id: str
    kind: str  # checkpoint | recipe | set | data | path | cli | plugin | sweep
    make: Callable[[Path], list[str]]  # prepares the folder, returns the command line
    message: str  # a regex the output must contain
    code: int = 2
    #: paths (relative to the case folder) a refused command may still create
    may_create: tuple[str, ...] = ()
    #: undoes what ``make`` registered in-process (plugin cases)
    teardown: Callable[[], None] | None = None
    #: how the input ends: a named error; a counted skip (the run goes on and counts it); or refused unless the
    #: caller passes a flag (the error names it)
    outcome: str = "named error"


# -- helpers that damage a copy of the tiny checkpoint ----------------------------------------------------
def _doc(ck: Path, fn) -> None:
    doc = yaml.safe_load((ck / CONFIG_FILE).read_text())
    fn(doc)
    (ck / CONFIG_FILE).write_text(yaml.safe_dump(doc))


def _rerecord(ck: Path) -> None:
    """Make the record vouch for an edit, so that the guard after the digests is what is tested."""
    from vlmkit.model.integrity import folder_digests

    names = [WEIGHTS_FILE] + [f.relative_to(ck).as_posix() for f in (ck / "llm").rglob("*") if f.is_file()]
    _doc(ck, lambda d: d.update(files=folder_digests(ck, names), weights={"file": WEIGHTS_FILE, "sha256":
                                                                         folder_digests(ck, [WEIGHTS_FILE])[WEIGHTS_FILE]}))


def _flip(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[-7] ^= 0xFF
    f.write_bytes(bytes(data))


def _retensor(ck: Path, fn, metadata: dict | None = None) -> None:
    tensors = load_file(str(ck / WEIGHTS_FILE))
    fn(tensors)
    save_file(tensors, str(ck / WEIGHTS_FILE), metadata=metadata or {"format": "pt", "aliases": "{}"})
    _rerecord(ck)


def gen(ck: str = "ck") -> list[str]:
    return ["generate", "--model", ck, "--prompt", "hi", "--max-new-tokens", "2"]


def ck_case(id: str, damage: Callable[[Path], None], message: str, argv: list[str] | None = None,
            outcome: str = "named error") -> Case:
    def make(root: Path) -> list[str]:
        damage(root / "ck")
        return argv or gen()
    return Case(id, "checkpoint", make, message, outcome=outcome)


FLAG = "refused unless a flag"
SKIP = "counted skip"


def _skip_run(root: Path, bad: str) -> list[str]:
    """Three good records and a bad one, trained with on_bad_sample: skip."""
    _write(root, "d.jsonl", _record() * 3 + bad)
    return _recipe(root, max_steps=2, save_steps=100, data={"dataset": "llava-json", "on_bad_sample": "skip",
                                                            "args": {"path": "d.jsonl", "image_root": "."}})


def _first_float(tensors) -> str:
    return next(k for k, v in sorted(tensors.items()) if v.is_floating_point() and v.ndim == 2)


def _nan(tensors) -> None:
    tensors[_first_float(tensors)][0, 0] = float("nan")


def _reshape(tensors) -> None:
    k = _first_float(tensors)
    tensors[k] = tensors[k].flatten()[:-1]


def _recipe(root: Path, **stage) -> list[str]:
    doc = {"model": {"encoders": [{"name": "tiny-conv", "args": {"image_size": 32}}], "connector": "mlp2x_gelu",
                     "llm": "tiny-llama"},
           "output_dir": "out",
           "stages": [{"name": "s", "max_steps": 1, "batch_size": 2,
                       "data": {"dataset": "llava-json", "args": {"path": "data.jsonl", "image_root": "."}},
                       **stage}]}
    (root / "r.yaml").write_text(yaml.safe_dump(doc))
    return ["train", "r.yaml"]


def _sweep(root: Path, vary: str, eval_data: str = "data.jsonl") -> list[str]:
    _recipe(root)
    return ["sweep", "r.yaml", "--vary", vary, "--eval-data", eval_data, "--eval-images", ".", "-o", "sw"]


def _write(root: Path, name: str, text: str) -> Path:
    (root / name).write_text(text)
    return root / name


LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{p}: &{p} [*{q}, *{q}, *{q}, *{q}, *{q}, *{q}, *{q}, *{q}, *{q}]\n" for p, q in zip("bcdefghi", "abcdefgh"))


def _record(**kw) -> str:
    rec = {"id": "r1", "image": "red.png", "conversations": [{"from": "human", "value": "<image>\nColour?"},
                                                              {"from": "gpt", "value": "red"}]}
    rec.update(kw)
    return json.dumps(rec) + "\n"


# -- plugins: what a broken or clashing third-party plugin does ------------------------------------------------
class _Boom:
    def __init__(self, width: int = 8):
        raise RuntimeError("boom: the plugin's own bug")


class _NotAnEncoder:
    def __init__(self, width: int = 8):
        self.width = width


def _register(name: str, obj, distribution: str = "acme-plugins") -> None:
    from vlmkit.plugins.registry import registry

    registry.register("encoder", name, obj, distribution=distribution, version="1.0")


def _register_unimportable(name: str) -> None:
    from vlmkit.plugins.registry import ComponentEntry, registry

    registry._in_process["encoder"].append(ComponentEntry("encoder", name, "acme-plugins", "1.0",
                                                          "acme_no_such_module:Tower"))


def _unregister(*names: str) -> Callable[[], None]:
    def undo() -> None:
        from vlmkit.plugins.registry import registry

        for kind in ("encoder",):
            registry._in_process[kind][:] = [e for e in registry._in_process[kind] if e.name not in names and
                                             not (e.name == "tiny-conv" and e.distribution == "acme-plugins")]
    return undo


def plugin_case(id: str, setup: Callable[[], None], name: str, message: str, names: tuple[str, ...] = ()) -> Case:
    def make(root: Path) -> list[str]:
        setup()
        return ["build", "--encoder", name, "--connector", "mlp2x_gelu"]
    return Case(id, "plugin", make, message, teardown=_unregister(name, *names))


CASES = [
    # -- plugins ------------------------------------------------------------------------------------------
    plugin_case("plugin-raises-in-init", lambda: _register("boom-tower", _Boom), "boom-tower",
                r"encoder 'boom-tower' \(from acme-plugins 1\.0\) failed to build: RuntimeError: boom: the plugin's "
                r"own bug"),
    plugin_case("plugin-not-an-encoder", lambda: _register("plain-tower", _NotAnEncoder), "plain-tower",
                r"encoder 'plain-tower' is not a vlmkit VisionEncoder"),
    plugin_case("plugin-does-not-import", lambda: _register_unimportable("ghost-tower"), "ghost-tower",
                r"ghost-tower.*acme_no_such_module"),
    plugin_case("plugin-name-clash", lambda: _register("tiny-conv", _Boom), "tiny-conv",
                r"tiny-conv.*acme-plugins:tiny-conv.*vlmkit-encoders:tiny-conv"),
    Case("plugin-unknown-argument", "plugin", lambda r: (_register("arg-tower", _Boom),
                                                         ["build", "--encoder", "arg-tower", "--set", "encoder.depth=3",
                                                          "--connector", "mlp2x_gelu"])[1],
         r"depth.*width", teardown=_unregister("arg-tower")),
    # -- checkpoints: integrity the data cannot switch off ------------------------------------------------------
    ck_case("digests-deleted", lambda ck: _doc(ck, lambda d: (d.pop("files"), d.pop("weights"))),
            r"records no digests of its files .*--allow-unverified", outcome=FLAG),
    ck_case("weights-not-a-mapping", lambda ck: _doc(ck, lambda d: d.update(weights="abc")),
            r"'weights' must be a mapping with a 'sha256' string, got 'abc'"),
    ck_case("files-not-a-mapping", lambda ck: _doc(ck, lambda d: d.update(files=["model.safetensors"])),
            r"'files' must map file names to SHA-256 hex digests"),
    ck_case("files-outside", lambda ck: _doc(ck, lambda d: d["files"].update({"../../etc/passwd": "0" * 64})),
            r"'files' names '\.\./\.\./etc/passwd', outside the checkpoint"),
    ck_case("weights-flipped", lambda ck: _flip(ck / WEIGHTS_FILE), r"model\.safetensors: changed since it was saved"),
    ck_case("llm-config-missing", lambda ck: (ck / "llm" / "config.json").unlink(),
            r"llm/config\.json: missing \(the checkpoint records its SHA-256\)"),
    ck_case("llm-config-not-json", lambda ck: (ck / "llm" / "config.json").write_text("{nope"),
            r"llm/config\.json: changed since it was saved"),
    ck_case("tokenizer-missing", lambda ck: (ck / "llm" / "tokenizer.json").unlink(),
            r"llm/tokenizer\.json: missing"),
    ck_case("file-slipped-in", lambda ck: (ck / "llm" / "evil.py").write_text("import os\n"),
            r"llm/evil\.py: not part of the checkpoint as saved"),
    ck_case("other-distribution", lambda ck: _doc(ck, lambda d: [r.update(distribution="acme-towers")
                                                                 for r in d["plugins"] if r["kind"] == "encoder"]),
            r"encoder 'tiny-conv' was saved by acme-towers, and vlmkit-encoders .*--allow-other-plugins",
            outcome=FLAG),
    ck_case("plugins-not-a-list", lambda ck: _doc(ck, lambda d: d.update(plugins="all")),
            r"'plugins' must be a list of records, got str"),
    ck_case("config-not-yaml", lambda ck: (ck / CONFIG_FILE).write_text("model: [unclosed\n"),
            r"vlmkit\.yaml: not valid YAML"),
    ck_case("config-missing", lambda ck: (ck / CONFIG_FILE).unlink(), r"vlmkit\.yaml: missing \(is .* a vlmkit "
                                                                     r"checkpoint"),
    ck_case("config-no-model", lambda ck: (ck / CONFIG_FILE).write_text("plugins: []\n"), r"no 'model' section"),
    ck_case("llm-folder-missing", lambda ck: shutil.rmtree(ck / "llm"), r"no llm/ folder"),
    ck_case("llm-path-elsewhere", lambda ck: _doc(ck, lambda d: d["model"]["llm"]["args"].update(path="/elsewhere")),
            r"model\.llm\.args\.path is '/elsewhere'; a checkpoint's LLM loads from its own llm/ folder"),
    ck_case("aliases-not-json", lambda ck: _retensor(ck, lambda t: None, {"format": "pt", "aliases": "{oops"}),
            r"the 'aliases' metadata \(names of tied tensors\) is not JSON"),
    ck_case("aliases-not-names", lambda ck: _retensor(ck, lambda t: None, {"format": "pt", "aliases": "[1, 2]"}),
            r"the 'aliases' metadata must map tensor names to tensor names, got list"),
    ck_case("tensor-wrong-shape", lambda ck: _retensor(ck, _reshape),
            r"model\.safetensors: tensor .* is \[\d+\], the model needs \[\d+, \d+\]"),
    ck_case("tensor-nan", lambda ck: _retensor(ck, _nan), r"non-finite values \(NaN or inf\) in 1 tensor"),
    ck_case("tensor-missing", lambda ck: _retensor(ck, lambda t: t.pop(sorted(t)[0])),
            r"does not match the model: missing 1"),
    ck_case("tensor-unknown", lambda ck: _retensor(ck, lambda t: t.update({"encoders.0.extra": t[sorted(t)[0]].clone()})),
            r"does not match the model: .*encoders\.0\.extra"),
    ck_case("weights-truncated", lambda ck: ((ck / WEIGHTS_FILE).write_bytes((ck / WEIGHTS_FILE).read_bytes()[:100]),
                                             _rerecord(ck)), r"model\.safetensors: corrupt or truncated safetensors"),
    ck_case("pre-0.2-format", lambda ck: _doc(ck, lambda d: (d.pop("files"), d.update(format=1))),
            r"written by a vlmkit before 0\.2.*vlmkit checkpoint seal PATH", outcome=FLAG),
    ck_case("verify-command", lambda ck: _flip(ck / WEIGHTS_FILE), r"model\.safetensors: changed since it was saved",
            ["checkpoint", "verify", "ck"]),
    ck_case("seal-without-any-digest", lambda ck: _doc(ck, lambda d: (d.pop("files"), d.pop("weights"))),
            r"records no digest of model\.safetensors.*--allow-unverified", ["checkpoint", "seal", "ck"], outcome=FLAG),
    ck_case("no-such-checkpoint", lambda ck: None, r"nosuch: no such checkpoint folder", gen("nosuch")),
    ck_case("config-billion-laughs", lambda ck: (ck / CONFIG_FILE).write_text(LAUGHS + (ck / CONFIG_FILE).read_text()),
            r"vlmkit\.yaml: the YAML expands to more than 200,000 values through its anchors and aliases"),
    # -- recipes: values checked before any work --------------------------------------------------------------
    Case("lr-inf", "recipe", lambda r: _recipe(r, lr=float("inf")), r"stages\[0\]\.lr: input should be a finite number"),
    Case("lr-nan", "recipe", lambda r: _recipe(r, lr=float("nan")), r"stages\[0\]\.lr: input should be a finite number"),
    Case("batch-huge", "recipe", lambda r: _recipe(r, batch_size=10 ** 9),
         r"stages\[0\]\.batch_size: input should be less than or equal to 65536"),
    Case("batch-negative", "recipe", lambda r: _recipe(r, batch_size=-1),
         r"stages\[0\]\.batch_size: input should be greater than 0"),
    Case("max-length-huge", "recipe", lambda r: _recipe(r, max_length=10 ** 12),
         r"stages\[0\]\.max_length: input should be less than or equal to 1048576"),
    Case("schedule-unknown", "recipe", lambda r: _recipe(r, schedule="wobbly"),
         r"stages\[0\]\.schedule: input should be one of .*'cosine'"),
    Case("stage-key-unknown", "recipe", lambda r: _recipe(r, learning_rate=1e-3), r"learning_rate"),
    Case("output-dir-is-a-file", "recipe", lambda r: (_write(r, "out", "x"), _recipe(r))[1],
         r"r\.yaml: output_dir out: exists and is a file, not a folder"),
    Case("data-empty", "recipe", lambda r: (_write(r, "data.jsonl", ""), _recipe(r))[1],
         r"stage 's': dataset 'llava-json' has no records \(path data\.jsonl\)", may_create=("out",)),
    Case("recipe-billion-laughs", "recipe", lambda r: (_write(r, "r.yaml", LAUGHS), ["train", "r.yaml"])[1],
         r"r\.yaml: the YAML expands to more than 200,000 values"),
    Case("recipe-not-found", "recipe", lambda r: ["train", "missing.yaml"], r"missing\.yaml"),
    Case("recipe-not-a-mapping", "recipe", lambda r: (_write(r, "r.yaml", "- 1\n- 2\n"), ["train", "r.yaml"])[1],
         r"r\.yaml: expected a mapping"),
    # -- sweeps: every variant checked before anything trains ------------------------------------------------
    Case("sweep-key-unknown", "sweep", lambda r: _sweep(r, "stages.0.lrr=1,2"),
         r"variant 'lrr=1' \(group 1 of 2\): r\.yaml\.stages\[0\]: unknown key 'lrr'.*nothing was trained"),
    Case("sweep-value-wrong-type", "sweep", lambda r: _sweep(r, "stages.0.batch_size=2,two"),
         r"variant 'batch_size=two' \(group 2 of 2\): r\.yaml\.stages\[0\]\.batch_size: input should be a valid "
         r"integer"),
    Case("sweep-model-incompatible", "sweep", lambda r: _sweep(r, "model.encoders.0.args.image_size=32,-4"),
         r"variant 'image_size=-4' \(group 2 of 2\): .*image_size"),
    Case("sweep-axis-malformed", "sweep", lambda r: _sweep(r, "stages.0.lr"), r"--vary 'stages\.0\.lr': expected KEY=V1,V2"),
    Case("sweep-zip-group-repeated", "sweep",
         lambda r: [*_sweep(r, "stages.0.lr=1,1"), "--vary", "stages.0.batch_size=2,2", "--zip"],
         r"--zip: a group is listed twice \(stages\.0\.lr=1, stages\.0\.batch_size=2\)"),
    Case("sweep-seeds-repeated", "sweep", lambda r: [*_sweep(r, "stages.0.lr=1,2"), "--seeds", "1,1"],
         r"--seeds '1,1': seeds must be distinct"),
    Case("sweep-eval-empty", "sweep", lambda r: (_write(r, "empty.jsonl", ""), _sweep(r, "stages.0.lr=1,2",
                                                                                      "empty.jsonl"))[1],
         r"empty\.jsonl.*the held-out set has no records"),
    Case("sweep-other-grid-in-folder", "sweep", lambda r: ((r / "sw").mkdir(), _write(r, "sw/sweep.json", json.dumps(
        {"format": 1, "grid": {"seeds": [7]}})), _sweep(r, "stages.0.lr=1,2"))[2],
         r"sw holds another sweep \(its .*seeds.* differ"),
    # -- --set and build ------------------------------------------------------------------------------------
    Case("width-overflows", "set", lambda r: ["build", *TINY, "--set", "encoder.width=1000000000"],
         r"a tensor too large to exist"),
    Case("width-too-big", "set", lambda r: ["build", *TINY, "--set", "encoder.width=100000"],
         r"the model needs about \d+\.\d GiB for its weights alone \(encoder 'tiny-conv'"),
    Case("width-negative", "set", lambda r: ["build", *TINY, "--set", "encoder.width=-3"], r"width"),
    Case("max-length-over-ceiling", "set", lambda r: ["build", *TINY, "--set", "max_length=99999999999"],
         r"--set max_length: expected an integer from 1 to 1,048,576"),
    Case("set-not-yaml", "set", lambda r: ["build", *TINY, "--set", "encoder.width=[1, 2"], r"not valid YAML"),
    Case("set-billion-laughs", "set", lambda r: ["build", *TINY, "--set", "encoder.width=" + "{" + LAUGHS.replace(
        "\n", ", ").rstrip(", ") + "}"], r"--set encoder\.width: the YAML expands to more than 200,000 values"),
    Case("set-no-equals", "set", lambda r: ["build", *TINY, "--set", "encoder.width"], r"expected"),
    Case("unknown-encoder", "set", lambda r: ["build", "--encoder", "clpi", "--connector", "mlp2x_gelu"],
         r"clpi.*clip"),
    Case("unknown-argument", "set", lambda r: ["build", *TINY, "--set", "encoder.widht=3"], r"widht.*width"),
    # -- paths -------------------------------------------------------------------------------------------
    Case("build-out-is-a-file", "path", lambda r: (_write(r, "taken", "x"), ["build", *TINY, "--out", "taken"])[1],
         r"checkpoint folder taken: exists and is a file, not a folder"),
    Case("build-out-under-a-file", "path", lambda r: (_write(r, "taken", "x"), ["build", *TINY, "--out",
                                                                                 "taken/ck"])[1],
         r"checkpoint folder taken/ck: cannot be created"),
    # -- eval, generate, data -----------------------------------------------------------------------------
    Case("eval-batch-zero", "cli", lambda r: ["eval", "--model", "ck", "--data", "qa.jsonl", "--batch-size", "0"],
         r"Invalid value for '--batch-size'"),
    Case("eval-no-reference", "data", lambda r: (_write(r, "qa.jsonl", json.dumps(
        {"id": "q1", "image": "red.png", "conversations": [{"from": "human", "value": "<image>\nColour?"}]}) + "\n"),
        ["eval", "--model", "ck", "--data", "qa.jsonl"])[1],
         r"an eval record must end with the reference answer"),
    Case("eval-empty", "data", lambda r: (_write(r, "qa.jsonl", ""), ["eval", "--model", "ck", "--data",
                                                                      "qa.jsonl"])[1],
         r"no records to evaluate"),
    Case("generate-tags-mismatch", "cli", lambda r: ["generate", "--model", "ck", "--prompt", "<image> and <image>?",
                                                     "--image", "red.png"],
         r"--prompt has 2 <image> tag\(s\) but 1 --image given"),
    Case("generate-new-tokens-zero", "cli", lambda r: [*gen(), "--max-new-tokens", "0"],
         r"Invalid value for '--max-new-tokens'"),
    Case("generate-image-missing", "cli", lambda r: [*gen(), "--image", "nope.png"], r"nope\.png"),
    Case("vip-bbox-nan", "cli", lambda r: [*gen(), "--image", "red.png", "--transform",
                                           "{name: vip, args: {bbox: [.nan, 1, 5, 5], shapes: [rectangle]}}"],
         r"vip: bbox \[nan, 1, 5, 5\]: coordinates must be finite numbers"),
    Case("record-too-many-turns", "data", lambda r: (_write(r, "d.jsonl", _record(conversations=[
        {"from": "human" if k % 2 == 0 else "gpt", "value": "<image>\nq" if k == 0 else "x"} for k in range(2000)])),
        ["data", "check", "d.jsonl"])[1], r"d\.jsonl:1 id=r1 field 'conversations': turns: 2,000, over the limit "
                                          r"of 1,024 per record \(max_turns", code=1),
    Case("record-too-many-images", "data", lambda r: (_write(r, "d.jsonl", _record(image=["red.png"] * 100)),
                                                      ["data", "check", "d.jsonl"])[1],
         r"field 'image': images: 100, over the limit of 64 per record", code=1),
    Case("record-too-many-boxes", "data", lambda r: (_write(r, "d.jsonl", _record(boxes=[[1, 1, 2, 2]] * 20_000)),
                                                     ["data", "check", "d.jsonl"])[1],
         r"field 'boxes\[0\]': boxes: 20,000, over the limit of 10,000 per record \(max_boxes", code=1),
    Case("skip-record-over-limit", "data", lambda r: _skip_run(r, _record(id="big", image=["red.png"] * 100)),
         r'"skipped": 1,\s*"by_kind": \{\s*"over_limit": 1\s*\}', code=0, may_create=("out",), outcome=SKIP),
    Case("skip-undecodable-image", "data", lambda r: (_write(r, "bad.png", "not a png"),
                                                      _skip_run(r, _record(id="bad", image="bad.png")))[1],
         r'"skipped": 1,\s*"by_kind": \{\s*"\w+": 1\s*\}.*"id": "bad"', code=0, may_create=("out",), outcome=SKIP),
    Case("skip-malformed-json", "data", lambda r: _skip_run(r, "{not json\n"),
         r'"skipped": 1,\s*"by_kind": \{\s*"malformed_json": 1\s*\}', code=0, may_create=("out",), outcome=SKIP),
    Case("data-check-empty", "data", lambda r: (_write(r, "d.jsonl", ""), ["data", "check", "d.jsonl"])[1],
         r"d\.jsonl: no records \(the file is empty\)", code=1),
    Case("data-check-bad-json", "data", lambda r: (_write(r, "d.jsonl", "{not json\n"), ["data", "check",
                                                                                          "d.jsonl"])[1],
         r"d\.jsonl:1", code=1),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    from vlmkit_cli.main import app

    root = tmp_path_factory.mktemp("hostile")
    res = CliRunner().invoke(app, ["build", *TINY, "--out", str(root / "ck")])
    assert res.exit_code == 0, res.output
    Image.new("RGB", (32, 32), (200, 20, 20)).save(root / "red.png")
    (root / "data.jsonl").write_text(json.dumps({"id": "a", "image": "red.png", "conversations": [
        {"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}]}) + "\n")
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_a_named_error_and_nothing_is_written(case, template, tmp_path, monkeypatch):
    from vlmkit_cli.main import app

    root = tmp_path / "case"
    shutil.copytree(template, root)
    monkeypatch.chdir(root)
    try:
        argv = case.make(root)
    except BaseException:
        if case.teardown is not None:
            case.teardown()
        raise
    before = _snapshot(root)
    try:
        res = CliRunner().invoke(app, argv)
    finally:
        if case.teardown is not None:
            case.teardown()
    out = res.output
    if case.outcome == SKIP:  # the run went on; what it skipped is counted in the stage's report
        out += (root / "out" / "01-s" / "final" / "skipped.json").read_text()
    assert res.exit_code == case.code, f"{case.id}: exit {res.exit_code}\n{out}"
    assert re.search(case.message, out, re.S), f"{case.id}: message not found in\n{out}"
    assert not RAW.search(out), f"{case.id}: a raw exception\n{out}"
    after = _snapshot(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
                     and not any(k == p or k.startswith(p + "/") for p in case.may_create))
    assert not changed, f"{case.id}: wrote or changed {changed}"


def test_the_table_covers_every_class():
    assert {c.outcome for c in CASES} == {"named error", SKIP, FLAG}
    kinds = {c.kind for c in CASES}
    assert {"checkpoint", "recipe", "set", "data", "path", "cli", "plugin", "sweep"} <= kinds and len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_readme_reports_the_tables_counts():
    """The README's Errors section gives the table's size and its counts by class: they are this table's."""
    text = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    by = {o: sum(c.outcome == o for c in CASES) for o in ("named error", SKIP, FLAG)}
    assert f"runs {len(CASES)} cases through the CLI" in text
    assert f"**{by['named error']} named errors**" in text and f"**{by[SKIP]} counted skips**" in text
    assert f"**{by[FLAG]} refused unless a flag is given**" in text

