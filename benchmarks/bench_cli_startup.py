"""Start-up time of the ``vlmkit`` command against a bare ``python -c "import typer"``.

The CLI promises to import only typer and the torch-free registry at start-up; each command imports what
it needs. Measured: wall time of ``vlmkit --help`` and ``vlmkit plugins`` (the installed console script
next to this interpreter; ``python -m vlmkit_cli`` where there is none), interleaved with the reference
and an empty ``python -c pass`` (the interpreter's own floor), alternating order, median of N runs; the
ratio is the median of per-round ratios (target <= 1.5). A second reference is the smallest typer app doing
the same kind of work (``--help`` of a two-command group; a command printing a rich table), which shows
what typer and rich cost by themselves (typer 0.29 imports pydantic to build parameter adapters when a
command runs, and rich to render). Then ``python -X importtime`` runs each command
once: the list of imported modules must hold no torch, transformers, numpy or PIL, and the slowest
imports are reported.
"""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HEAVY = ("torch", "transformers", "numpy", "PIL", "safetensors", "timm", "tokenizers")
COMMANDS = {"vlmkit --help": ["--help"], "vlmkit plugins": ["plugins"]}
#: the same commands with a terminal as stdout: the rich rendering a person sees (reported, no target)
TERMINAL = {f"{name} (terminal)": argv for name, argv in COMMANDS.items()}
#: the same kind of work in the smallest typer app: what typer + rich cost by themselves
MINIMAL_APP = '''
import typer

app = typer.Typer()


@app.command()
def table(name: str = "tiny", verbose: bool = False):
    """Print a small rich table."""
    from rich.console import Console
    from rich.table import Table

    t = Table("kind", "name", "status")
    t.add_row("encoder", name, "ok")
    Console().print(t)


@app.command()
def other():
    """A second command, so that typer builds a command group like vlmkit's."""


if __name__ == "__main__":
    app()
'''
#: vlmkit command -> the minimal app's command doing the same kind of work
MINIMAL_EQUIVALENT = {"vlmkit --help": "minimal typer app --help", "vlmkit plugins": "minimal typer app table"}


def cli_prefix() -> tuple[list[str], str]:
    """How to start the CLI: the console script of this interpreter (as pip installed it) or ``-m``."""
    script = Path(sys.executable).with_name("vlmkit")
    if script.is_file():
        return [sys.executable, str(script)], f"{script} (console script, run by {sys.executable})"
    return [sys.executable, "-m", "vlmkit_cli"], f"{sys.executable} -m vlmkit_cli"


def timed(cmd: list[str], env: dict[str, str], terminal: bool = False) -> float:
    """Wall time of one run; ``terminal`` gives the command a pseudo-terminal as stdout (drained)."""
    if not terminal:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        elapsed = time.perf_counter() - t0
    else:
        master, slave = pty.openpty()
        drain = threading.Thread(target=_drain, args=(master,), daemon=True)
        drain.start()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=slave, stderr=subprocess.PIPE, env=env)
        elapsed = time.perf_counter() - t0
        os.close(slave)
        drain.join(timeout=5)
        os.close(master)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return elapsed


def _drain(fd: int) -> None:
    """Read a pty until it closes, so a child writing more than the pty buffer never blocks."""
    try:
        while os.read(fd, 65536):
            pass
    except OSError:  # EIO once the last writer is gone
        pass


def import_profile(cmd: list[str], env: dict[str, str]) -> dict:
    """Modules imported by ``cmd`` (via ``-X importtime``): heavy ones found, slowest cumulative imports."""
    full = [cmd[0], "-X", "importtime", *cmd[1:]]
    proc = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed: {proc.stderr[-2000:]}")
    rows = []  # (cumulative us, nesting depth, module)
    for line in proc.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(fields) != 3 or not fields[0].strip().isdigit():
            continue
        raw = fields[2]
        depth = (len(raw) - len(raw.lstrip(" ")) - 1) // 2
        rows.append((int(fields[1]), depth, raw.strip()))
    modules = [r[2] for r in rows]
    heavy = sorted({m.split(".")[0] for m in modules if m.split(".")[0] in HEAVY})
    top = sorted(((us, name) for us, depth, name in rows if depth == 0), reverse=True)[:8]
    return {"modules": len(modules), "heavy_imported": heavy,
            "slowest_top_level_ms": {name: round(us / 1000, 1) for us, name in top}}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "cli_startup.json")
    p.add_argument("--runs", type=int, default=None, help="timed runs per command (default 21, quick 3)")
    args = p.parse_args()
    runs = args.runs or (3 if args.quick else 21)
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
    prefix, how = cli_prefix()
    monitor = common.LoadMonitor()
    monitor.sample()
    machine = common.machine_info()

    minimal = Path(tempfile.mkdtemp(prefix="vlmkit-bench-cli-")) / "minimal_app.py"
    minimal.write_text(MINIMAL_APP)
    cmds = {"python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import typer'": [sys.executable, "-c", "import typer"],
            "minimal typer app --help": [sys.executable, str(minimal), "--help"],
            "minimal typer app table": [sys.executable, str(minimal), "table"]}
    cmds.update({name: prefix + extra for name, extra in COMMANDS.items()})
    calls = {name: (lambda c=c: timed(c, env)) for name, c in cmds.items()}
    calls.update({name: (lambda c=prefix + extra: timed(c, env, terminal=True)) for name, extra in TERMINAL.items()})
    try:
        times = common.interleave(calls, repeats=runs, warmup=1)
    finally:
        shutil.rmtree(minimal.parent, ignore_errors=True)
    monitor.sample()
    ref = "python -c 'import typer'"
    imports = {name: import_profile(prefix + extra, env) for name, extra in COMMANDS.items()}
    monitor.sample()

    stats = {name: common.spread(t) for name, t in times.items()}
    metrics = []
    for name in COMMANDS:
        metrics.append(common.metric(
            f"`{name}` wall time", stats[name]["median"] * 1000, "ms", reference=stats[ref]["median"] * 1000,
            ratio=common.paired_ratio(times[name], times[ref]), target="<= 1.5",
            detail={"runs": stats[name], "reference_runs": stats[ref],
                    "interpreter_floor_ms": stats["python -c pass"]["median"] * 1000}))
    for name in TERMINAL:
        metrics.append(common.metric(
            f"`{name}` wall time (rich output)", stats[name]["median"] * 1000, "ms",
            reference=stats[ref]["median"] * 1000, ratio=common.paired_ratio(times[name], times[ref]),
            detail={"runs": stats[name]}))
    for name, twin in MINIMAL_EQUIVALENT.items():
        metrics.append(common.metric(
            f"`{name}` vs `{twin}`", stats[name]["median"] * 1000, "ms", reference=stats[twin]["median"] * 1000,
            ratio=common.paired_ratio(times[name], times[twin]), target="<= 1.5",
            detail={"reference_runs": stats[twin],
                    "minimal_app_vs_typer_import": common.paired_ratio(times[twin], times[ref])}))
    for name, prof in imports.items():
        metrics.append(common.metric(f"`{name}` heavy modules imported", len(prof["heavy_imported"]), "modules",
                                     target="<= 0", detail=prof))
    config = {"runs_per_command": runs, "cli": how, "reference": f"{sys.executable} -c 'import typer'",
              "second_reference": "a two-command typer app (benchmarks/bench_cli_startup.py: MINIMAL_APP)",
              "heavy_modules_checked": list(HEAVY)}
    method = ("Each command is a fresh process, stdout to /dev/null (the plain output scripts and shell completion "
              "get) or, for the '(terminal)' rows, to a pseudo-terminal (the rich output a person sees); all "
              "commands run once per round, in "
              "alternating order, after one warm-up round (warm file cache); medians of the rounds and the median of "
              "per-round ratios to the typer import. Imports are listed with python -X importtime.")
    notes = ["Timings exclude any shell wrapper: through a pyenv shim the `vlmkit` command adds the shim's own "
             "bash start-up (several hundred ms here) on top of these numbers."]
    out = common.write_result(args.out, "cli_startup", title="CLI start-up: vlmkit vs a bare typer import",
                              quick=args.quick, command=common.command_line("bench_cli_startup.py", sys.argv[1:]),
                              config=config, metrics=metrics, notes=notes, method=method, load=monitor.summary(),
                              machine=machine)
    print(f"wrote {out}")
    for m in metrics:
        print(f"  {m['name']}: {m['value']:.4g} {m['unit']}  ratio={m.get('ratio', float('nan')):.3f}  "
              f"target {m.get('target')}")


if __name__ == "__main__":
    main()
