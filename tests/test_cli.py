"""The vlmkit command: light start-up, summaries, one-line errors with non-zero exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

VLMKIT = [sys.executable, "-m", "vlmkit_cli"]


def run(*args, check=False):
    return subprocess.run([*VLMKIT, *args], capture_output=True, text=True, check=check)


@pytest.mark.parametrize("argv", [["--help"], ["plugins"], ["plugins", "--json"], ["build", "--help"]])
def test_help_and_plugins_do_not_import_torch(argv):
    code = ("import sys\nsys.argv=['vlmkit', *%r]\nfrom vlmkit_cli.main import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')" % (argv,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH")


def test_plugins_json_lists_components():
    rows = json.loads(run("plugins", "--json", check=True).stdout)
    by = {(r["kind"], r["name"]): r for r in rows}
    assert by[("encoder", "clip")]["distribution"] == "vlmkit-encoders"
    assert by[("encoder", "clip")]["status"] == "ok"
    assert set(by[("connector", "mlp2x_gelu")]) >= {"kind", "name", "distribution", "version", "status"}


def test_plugins_piped_is_plain_aligned_text_without_rich():
    """Scripts and shell completion get plain columns, and the CLI skips rich's ~80 ms of imports."""
    code = ("import sys\nsys.argv=['vlmkit', 'plugins']\nfrom vlmkit_cli.main import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('RICH' if 'rich' in sys.modules else 'NO-RICH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "NO-RICH"
    assert lines[0].split() == ["kind", "name", "distribution", "version", "status"]
    rows = [line.split() for line in lines[1:-1]]
    assert ["encoder", "clip", "vlmkit-encoders"] in [r[:3] for r in rows]
    # columns are aligned: each header word starts where its column's values start
    starts = [lines[0].index(h) for h in ("name", "distribution")]
    for line in lines[1:-1]:
        assert line[starts[0] - 2:starts[0]] == "  " and line[starts[0]] != " "
        assert line[starts[1] - 2:starts[1]] == "  " and line[starts[1]] != " "


def test_plugins_and_help_at_a_terminal_render_with_rich():
    import os
    import pty

    def at_terminal(*args: str) -> str:
        master, slave = pty.openpty()
        proc = subprocess.Popen([*VLMKIT, *args], stdout=slave, stderr=subprocess.PIPE,
                                env={**os.environ, "COLUMNS": "120"})
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        os.close(master)
        return b"".join(chunks).decode()

    table = at_terminal("plugins")
    assert "┃" in table or "│" in table  # a rich table's box drawing
    assert "clip" in table
    assert "╭" in at_terminal("--help")  # rich help panels


def test_build_json_summary_and_checkpoint(tmp_path):
    out = run("build", "--encoder", "tiny-conv", "--set", "encoder.width=32", "--out", str(tmp_path / "ck"), "--json", check=True)
    s = json.loads(out.stdout)
    parts = {p["part"]: p for p in s["parts"]}
    assert parts["encoder.0"]["component"] == "tiny-conv"
    assert s["visual_tokens_per_image"] == 16
    assert s["parameters"] == sum(p["parameters"] for p in s["parts"])
    assert (tmp_path / "ck" / "model.safetensors").is_file()
    from vlmkit.model.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "ck").visual_tokens_per_image() == 16


def test_build_meta_paper_size_counts():
    s = json.loads(run("build", "--preset", "llava-1.5", "--meta", "--json", check=True).stdout)
    parts = {p["part"]: p for p in s["parts"]}
    assert parts["connector"]["parameters"] == 20_979_712
    assert parts["encoder.0"]["parameters"] == 303_507_456  # CLIP-L/14-336 vision tower
    assert s["visual_tokens_per_image"] == 576


def test_default_build_is_offline_tiny():
    out = run("build", check=True).stdout
    assert "tiny-conv" in out and "visual tokens per image: 16" in out


@pytest.mark.parametrize("args,needle", [
    (["build", "--encoder", "clipp"], "unknown encoder 'clipp'; did you mean: clip"),
    (["build", "--set", "encoder.widht=3"], "unknown argument 'widht'"),
    (["build", "--set", "encoder.width=wide"], "argument 'width' expects int, got str"),
    (["build", "--set", "nopart.x=1"], "no such part"),
    (["generate", "--model", "/nonexistent/ck", "--prompt", "hi"], "no such checkpoint folder"),
    (["build", "--encoder", "tiny-conv", "--encoder", "tiny-conv"], "number of feature streams"),
])
def test_bad_input_is_one_line_nonzero(args, needle):
    out = run(*args)
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert out.stderr.startswith("error: ") and needle in out.stderr
    assert "Traceback" not in out.stderr


def test_corrupt_safetensors_and_debug_flag(tmp_path):
    run("build", "--out", str(tmp_path / "ck"), check=True)
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"\x00garbage")
    out = run("generate", "--model", str(tmp_path / "ck"), "--prompt", "hi")
    assert out.returncode == 2 and "model.safetensors: changed since it was saved" in out.stderr
    assert "Traceback" not in out.stderr
    dbg = run("--debug", "generate", "--model", str(tmp_path / "ck"), "--prompt", "hi")
    assert "Traceback" in dbg.stderr


def test_info_describes_arguments():
    doc = json.loads(run("info", "mlp", "--json", check=True).stdout)
    names = {a["name"] for a in doc["arguments"]}
    assert names == {"depth", "layernorm", "layernorm_eps"}
    assert doc["kind"] == "connector"


def test_generate_with_a_visual_prompt_transform(tmp_path):
    """ViP-style prompting at inference is a transform named on the command line (vlmkit-data's ``vip``)."""
    from PIL import Image

    run("build", "--out", str(tmp_path / "ck"), check=True)
    Image.new("RGB", (120, 80), (255, 255, 255)).save(tmp_path / "img.png")
    vip = "{name: vip, args: {bbox: [20, 10, 60, 50], shapes: [rectangle], color: red, alpha: 255, width: 3}}"
    out = run("generate", "--model", str(tmp_path / "ck"), "--image", str(tmp_path / "img.png"), "--prompt",
              "What is {region}?", "--transform", vip, "--max-new-tokens", "3",
              "--save-transformed", str(tmp_path / "prompted.png"))
    assert out.returncode == 0, out.stderr
    img = Image.open(tmp_path / "prompted.png").convert("RGB")
    assert img.size == (120, 80)
    assert img.getpixel((20, 30)) == (255, 0, 0)  # on the left edge of the box
    assert img.getpixel((40, 30)) == (255, 255, 255)  # inside, untouched
    bad = run("generate", "--model", str(tmp_path / "ck"), "--prompt", "x", "--transform",
              "{name: vip, args: {bbox: [1, 2, 3]}}")
    assert bad.returncode == 2 and "vip: bbox" in bad.stderr
    nothing = run("generate", "--model", str(tmp_path / "ck"), "--prompt", "x", "--transform",
                  "{name: vip, args: {bbox: [1, 2, 3, 4]}}")
    assert nothing.returncode == 2 and "has none" in nothing.stderr
    unknown = run("generate", "--model", str(tmp_path / "ck"), "--prompt", "x", "--transform", "vipp")
    assert unknown.returncode == 2 and "vipp" in unknown.stderr


def test_demo_in_a_used_folder_says_it_resumes(tmp_path):
    """A second `vlmkit demo` in the same folder resumes (a finished run is only re-evaluated) and says so."""
    first = run("demo", "--output", str(tmp_path), "--steps", "2", check=True)
    assert "resuming" not in first.stdout
    second = " ".join(run("demo", "--output", str(tmp_path), "--steps", "2", check=True).stdout.split())  # unwrap
    assert "resuming the run in" in second and "train from scratch" in second
    assert (tmp_path / "demo_report.json").is_file()


# -- import / export / formats ----------------------------------------------------------------------
SEED_FIXTURES = Path(__file__).parent / "fixtures" / "seeds"


def test_formats_lists_every_format_and_the_llava_parts():
    out = run("formats", check=True).stdout
    for name in ("hf-llava", "hf-vip-llava", "llava"):
        assert name in out
    assert "ViP-LLaVA" in out and "ConvLLaVA" in out and "LLaVA-S2" in out
    data = json.loads(run("formats", "--json", check=True).stdout)
    names = {f["name"]: f for f in data["formats"]}
    assert names["llava"]["export"] is True and "mm_vision_tower" in names["llava"]["detection"]
    assert {p["variant"] for p in data["llava_parts"]} >= {"LLaVA-1.5", "ViP-LLaVA", "ConvLLaVA"}


def test_import_then_export_from_the_command_line(tmp_path):
    fx = SEED_FIXTURES / "llava-1.5"
    missing = run("import", str(fx / "model"), str(tmp_path / "a"))
    assert missing.returncode != 0
    assert "mm_vision_tower" in missing.stderr and "--vision-tower" in missing.stderr
    assert "Traceback" not in missing.stderr
    ok = run("import", str(fx / "model"), str(tmp_path / "ckpt"), "--vision-tower", str(fx / "clip-tower"),
             "--set", "template=plain")
    assert ok.returncode == 0, ok.stderr
    assert "(from llava)" in ok.stdout
    exported = run("export", str(tmp_path / "ckpt"), str(tmp_path / "hf"), "--format", "hf-llava")
    assert exported.returncode == 0, exported.stderr
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llava"
    refused = run("export", str(tmp_path / "ckpt"), str(tmp_path / "vip"), "--format", "hf-vip-llava")
    assert refused.returncode != 0 and "cannot be written as hf-vip-llava" in refused.stderr
    unknown = run("import", str(fx / "model"), str(tmp_path / "b"), "--format", "nope")
    assert unknown.returncode != 0 and "unknown checkpoint format 'nope'" in unknown.stderr
