"""Plugin commands (``vlmkit_register_commands``) and the one vlmkit-objectives adds: ``vlmkit reconstruct``."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import typer
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from vlmkit.model.assembly import build_model
from vlmkit.model.checkpoint import save_checkpoint
from vlmkit.model.config import ModelConfig
from vlmkit.plugins.hooks import get_plugin_manager, hookimpl
from vlmkit.plugins.registry import registry
from vlmkit_cli.plugin_commands import PluginCommands, add_plugin_commands, builtin_commands, wants_plugin_commands

VLMKIT = [sys.executable, "-m", "vlmkit_cli"]


def run(*args):
    return subprocess.run([*VLMKIT, *args], capture_output=True, text=True)


def small_app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def build() -> None:
        typer.echo("built")

    @app.command()
    def info() -> None:
        typer.echo("info")

    return app


def test_plugin_commands_are_loaded_only_when_they_can_be_wanted():
    builtin = {"build", "train", "plugins"}
    assert wants_plugin_commands([], builtin) and wants_plugin_commands(["--help"], builtin)
    assert wants_plugin_commands(["reconstruct", "ck"], builtin)
    assert wants_plugin_commands(["--debug", "reconstruct"], builtin)
    assert not wants_plugin_commands(["build", "--preset", "tiny"], builtin)
    assert not wants_plugin_commands(["--debug", "train", "r.yaml"], builtin)


def test_a_plugin_cannot_take_a_builtin_name_or_one_taken_by_another_plugin():
    app = small_app()
    cli = PluginCommands(app, builtin_commands(app))
    assert builtin_commands(app) == {"build", "info"}
    with pytest.raises(ValueError, match="'build'.*clashes with a built-in"):
        cli.command("build")(lambda: None)

    def hello() -> None:
        typer.echo("hello")

    cli.command()(hello)
    with pytest.raises(ValueError, match="registered twice"):
        cli.command("hello")(hello)
    result = CliRunner().invoke(app, ["hello"])
    assert result.exit_code == 0 and result.output.strip() == "hello"


class BrokenCommands:
    @hookimpl
    def vlmkit_register_commands(self, cli):
        raise RuntimeError("plugin bug")


def test_a_broken_command_hook_warns_and_builtin_commands_still_run(monkeypatch, capsys):
    pm = get_plugin_manager()
    plugin = BrokenCommands()
    pm.register(plugin)
    try:
        app = small_app()
        monkeypatch.delenv("VLMKIT_STRICT_PLUGINS", raising=False)
        assert add_plugin_commands(app, ["--help"]) == {}
        assert "warning: plugin commands: RuntimeError: plugin bug" in capsys.readouterr().err
        assert CliRunner().invoke(app, ["build"]).output.strip() == "built"
        monkeypatch.setenv("VLMKIT_STRICT_PLUGINS", "1")
        with pytest.raises(RuntimeError, match="plugin bug"):
            add_plugin_commands(small_app(), ["--help"])
    finally:
        pm.unregister(plugin)


def test_help_lists_reconstruct_and_builtin_commands_skip_the_hooks():
    out = run("--help")
    assert out.returncode == 0 and "reconstruct" in out.stdout
    code = ("import sys\nsys.argv=['vlmkit', 'build', '--help']\nfrom vlmkit_cli.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('HOOKS' if 'vlmkit_objectives.hooks' in sys.modules else 'NO-HOOKS')")
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert probe.stdout.strip().endswith("NO-HOOKS"), probe.stderr


# -- vlmkit reconstruct -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ross_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reconstruct")
    torch.manual_seed(0)
    save_checkpoint(build_model(ModelConfig.from_dict(registry.load("preset", "ross-tiny"))), tmp / "ck")
    for i, colour in enumerate(["red", "blue"]):
        img = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(img).ellipse([18 * i, 10, 18 * i + 12, 22], fill=colour)
        img.save(tmp / f"img{i}.png")
    return tmp


def test_reconstruct_writes_input_teacher_and_ross_columns(ross_checkpoint):
    tmp = ross_checkpoint
    out = run("reconstruct", str(tmp / "ck"), str(tmp / "img0.png"), str(tmp / "img1.png"), "-o",
              str(tmp / "sheet.png"), "--steps", "3")
    assert out.returncode == 0, out.stderr
    assert "columns input | VAE teacher | ross" in out.stdout and "2 image(s)" in out.stdout
    sheet = Image.open(tmp / "sheet.png")
    assert sheet.width > 3 * 128 and sheet.height > 2 * 128  # 3 columns, 2 rows of 128 px images

    folder = run("reconstruct", str(tmp / "ck"), str(tmp), "--limit", "1", "-o", str(tmp / "one.png"), "--steps", "2")
    assert folder.returncode == 0 and "1 image(s)" in folder.stdout


def test_reconstruct_errors_are_one_line(ross_checkpoint, tmp_path):
    tmp = ross_checkpoint
    (tmp_path / "bad.png").write_bytes(b"not a png")
    bad = run("reconstruct", str(tmp / "ck"), str(tmp_path / "bad.png"))
    assert bad.returncode == 2 and "bad.png" in bad.stderr and "Traceback" not in bad.stderr

    save_checkpoint(build_model(ModelConfig.from_dict(registry.load("preset", "tiny"))), tmp_path / "plain")
    plain = run("reconstruct", str(tmp_path / "plain"), str(tmp / "img0.png"))
    assert plain.returncode == 2 and "no 'ross' objective" in plain.stderr
