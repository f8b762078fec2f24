"""Test sessions. Each session gets its own virtual environment (uv backend: torch is linked from
uv's cache, so extra environments cost seconds, not gigabytes).

Every default session installs from a committed lock (``locks/*.txt``, used as pip constraints), so a
new upstream release cannot break ``nox`` on a fresh machine. ``nox -s lock`` refreshes the locks
(keeping every pin it can; ``nox -s lock -- --upgrade`` moves to the newest allowed versions);
``nox -s latest`` runs the suite on the newest allowed versions, to find drift on purpose.

    nox                   lint, isolation, tests, lowest, plugin_template, legacy_plugin, lmms_eval, demo (CI)
    nox -s tests          all packages installed, the whole suite
    nox -s isolation      core alone, and core plus each sibling alone (each in its own venv)
    nox -s lowest         the suite on the lowest versions the packages declare (locks/lowest.txt)
    nox -s lint           ruff
    nox -s lock           rewrite locks/ (add ``-- --check`` to fail when they would change)
    nox -s latest         the suite on the newest allowed versions (not in the default list)
    nox -s benchmark      pytest-benchmark micro-benchmarks (not in the default list)
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "isolation", "tests", "lowest", "plugin_template", "legacy_plugin", "lmms_eval",
                        "demo"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
LOCKS = ROOT / "locks"
CONSTRAINTS = ROOT / "constraints.txt"
PACKAGES = ["vlmkit-core", "vlmkit-encoders", "vlmkit-fusion", "vlmkit-objectives", "vlmkit-data", "vlmkit-cli"]
SIBLINGS = PACKAGES[1:]
EVERYTHING = ["./vlmkit-core[deepspeed,peft,testing]", *[f"./{p}" for p in SIBLINGS]]
TOOLS = ["pytest>=8.3", "pytest-benchmark>=5.1", "ruff>=0.8"]

# What each lock resolves (paths relative to the repository root). The lmms-eval session has a lock of
# its own: lmms-eval brings many dependencies that the other environments should not be pinned by.
LOCK_INPUTS: dict[str, list[str]] = {
    "tests": [*EVERYTHING, *TOOLS],
    "lmms-eval": [*EVERYTHING, "./vlmkit-core[lmms-eval]", "pytest>=8.3",
                  # lmms-eval 0.7.3 imports filelock._api, which filelock 4.3.1 removed
                  "filelock<4.3.1"],
}
# The lowest session: the lowest version of every direct dependency the packages declare (uv's
# lowest-direct resolution), everything else as new as the lock allows.
LOWEST = {"lowest": LOCK_INPUTS["tests"]}


def direct_dependencies() -> set[str]:
    """Names (normalised) of every dependency the six packages declare, extras included."""
    import tomllib

    names = set()
    for pkg in PACKAGES:
        project = tomllib.loads((ROOT / pkg / "pyproject.toml").read_text())["project"]
        reqs = project.get("dependencies", []) + [r for rs in project.get("optional-dependencies", {}).values()
                                                   for r in rs]
        names |= {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.\-]+", r).group(0)).lower() for r in reqs}
    return names


def _local_indexes() -> dict[str, str]:
    """Use the machine's local package mirror when it has one (pip is configured for it; uv is not)."""
    env = {"UV_INDEX_STRATEGY": "unsafe-best-match"}
    if Path("/opt/wheels").is_dir():
        env["UV_FIND_LINKS"] = "/opt/wheels"
    extra = [f"file://{p}" for p in ("/opt/pypi/simple", "/opt/pypi-more/simple") if Path(p).is_dir()]
    if extra:
        env["UV_EXTRA_INDEX_URL"] = " ".join(extra)
    return env


def install(session: nox.Session, *args: str, lock: str | None = "tests") -> None:
    """Install ``args`` pinned by constraints.txt and, unless ``lock`` is None, by ``locks/<lock>.txt``."""
    pins = ["-c", str(CONSTRAINTS)] + (["-c", str(LOCKS / f"{lock}.txt")] if lock else [])
    session.install(*args, *pins, env=_local_indexes())


def pytest_run(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    session.run("pytest", "-p", "no:cacheprovider", *args, *session.posargs, env=env or {})


@nox.session(python=False, name="tests-here")
def tests_here(session: nox.Session) -> None:
    """The suite in the current interpreter (for a developer whose packages are already installed)."""
    session.run("pytest", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Everything installed; the full suite."""
    # core's extras bring DeepSpeed and peft, so CI really runs the 2-process ZeRO and LoRA tests
    install(session, *LOCK_INPUTS["tests"])
    pytest_run(session, env={"VLMKIT_STRICT_PLUGINS": "1"})


@nox.session
def lowest(session: nox.Session) -> None:
    """The full suite on the lowest versions of the direct dependencies: proves the declared lower bounds."""
    install(session, *LOWEST["lowest"], lock="lowest")
    pytest_run(session, env={"VLMKIT_STRICT_PLUGINS": "1"})


@nox.session
def latest(session: nox.Session) -> None:
    """The full suite on the newest versions the packages allow (no lock): finds upstream drift on purpose."""
    install(session, *LOCK_INPUTS["tests"], lock=None)
    session.run("uv", "pip", "list", external=True, env={"VIRTUAL_ENV": session.virtualenv.location})
    pytest_run(session, env={"VLMKIT_STRICT_PLUGINS": "1"})


@nox.session
@nox.parametrize("sibling", [None, *SIBLINGS], ids=["core-alone", *[s.removeprefix("vlmkit-") for s in SIBLINGS]])
def isolation(session: nox.Session, sibling: str | None) -> None:
    """Core alone, or core plus ONE sibling, in a fresh environment: the packages stand on their own."""
    pkgs = ["./vlmkit-core"] + ([f"./{sibling}"] if sibling else [])
    install(session, *pkgs, "pytest")
    pytest_run(session, "tests/isolation", env={"VLMKIT_EXPECT_SIBLINGS": sibling or ""})


@nox.session
def lint(session: nox.Session) -> None:
    install(session, "ruff")
    session.run("ruff", "check", ".")


@nox.session(venv_backend="none")
def lock(session: nox.Session) -> None:
    """Write locks/*.txt with uv. Pins already in a lock are kept (so this reproduces the committed locks
    until an input changes); ``-- --upgrade`` moves every pin to the newest allowed version and ``-- --check``
    fails instead of writing when a lock would change."""
    check = "--check" in session.posargs
    extra = [a for a in session.posargs if a != "--check"]
    no_emit = [arg for p in PACKAGES for arg in ("--no-emit-package", p)]
    jobs = [(name, inputs, []) for name, inputs in LOCK_INPUTS.items()]
    jobs += [(name, inputs, ["--resolution", "lowest-direct"]) for name, inputs in LOWEST.items()]
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, inputs, mode in jobs:
            spec = Path(tmp) / f"{name}.in"
            spec.write_text("\n".join(inputs) + "\n")
            target = LOCKS / f"{name}.txt"
            out = Path(tmp) / f"{name}.txt"
            if target.exists():  # uv keeps the pins of an existing output file...
                keep = target.read_text()
                if mode:  # ...but lowest-direct must re-decide the direct dependencies, so drop their pins
                    direct = direct_dependencies()
                    keep = "\n".join(ln for ln in keep.splitlines()
                                     if re.split(r"[=<> ]", ln.strip(), maxsplit=1)[0].lower() not in direct)
                out.write_text(keep + "\n")
            session.run("uv", "pip", "compile", str(spec), "-c", str(CONSTRAINTS), "-o", str(out), *mode, *no_emit,
                        "--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28",
                        "--custom-compile-command", f"nox -s lock  # {name}: {' '.join(inputs)}",
                        "--quiet", *extra, external=True, env=_local_indexes())
            # uv names the temporary input in its "via" notes; name the lock's inputs instead
            text = out.read_text().replace(str(spec), f"locks/{name}")
            if not target.exists() or target.read_text() != text:
                stale.append(name)
                if not check:
                    LOCKS.mkdir(exist_ok=True)
                    target.write_text(text)
    if check and stale:
        session.error(f"locks out of date: {', '.join(stale)} (run `nox -s lock` and commit locks/)")
    session.log(f"locks {'checked' if check else 'written'}: {', '.join(n for n, _, _ in jobs)}"
                + (f"; changed: {', '.join(stale)}" if stale else "; unchanged"))


@nox.session
def plugin_template(session: nox.Session) -> None:
    """The plugin template as a third party uses it: installed (not editable) next to vlmkit-core and
    vlmkit-cli only (the conformance kit brings its own partner components), its own tests (the kit,
    `vlmkit build` -> load -> train), and `vlmkit plugins` listing it as healthy."""
    import json

    template = ROOT / "examples" / "vlmkit-plugin-template"
    install(session, "./vlmkit-core", "./vlmkit-cli", str(template), "pytest")
    env = {"VLMKIT_STRICT_PLUGINS": "1"}
    with session.chdir(template):  # the template's own pytest settings, and no source tree on sys.path
        pytest_run(session, env=env)
    rows = json.loads(session.run("vlmkit", "plugins", "--json", "--check", silent=True, env=env))
    mine = {r["name"]: r["status"] for r in rows if r["distribution"] == "vlmkit-plugin-template"}
    expected = {"template-patch": "ok", "template-pool": "ok", "template-probe": "ok", "vlmkit-plugin-template": "ok"}
    if mine != expected:
        session.error(f"vlmkit plugins: expected {expected} (three components and the hook module), got {mine}")
    out = session.run("vlmkit", "template-grid", "--image-size", "224", "--patch", "16", silent=True, env=env)
    if out.strip() != "14 x 14 = 196 tokens":
        session.error(f"vlmkit template-grid (a third-party plugin command): got {out!r}")


@nox.session
def legacy_plugin(session: nox.Session) -> None:
    """A plugin written against the 0.1 guide (``tests/legacy/plugin-0.1``, frozen: never edited with the code),
    installed as a user installs it, runs its own suite unchanged: the plugin API's promise, tested."""
    plugin = ROOT / "tests" / "legacy" / "plugin-0.1"
    # its 0.1 'test' extra: the conformance kit's partner components and the CLI
    install(session, "./vlmkit-core", "./vlmkit-encoders", "./vlmkit-fusion", "./vlmkit-cli", str(plugin), "pytest")
    with session.chdir(plugin):
        pytest_run(session, env={"VLMKIT_STRICT_PLUGINS": "1"})


@nox.session(name="lmms_eval")
def lmms_eval_session(session: nox.Session) -> None:
    """The lmms-eval adapter under a real lmms-eval (heavy dependencies: kept out of the other environments)."""
    install(session, *LOCK_INPUTS["lmms-eval"], lock="lmms-eval")
    pytest_run(session, "tests/test_scale_lmms_eval.py")


@nox.session
def benchmark(session: nox.Session) -> None:
    """pytest-benchmark micro-benchmarks (splice, packing, data access, ViP drawing); each compares against
    a reference run in the same session. Not in the default list: timings belong on a quiet machine."""
    install(session, *LOCK_INPUTS["tests"])
    pytest_run(session, "benchmarks/micro", "--benchmark-only", "--benchmark-warmup=on",
               "--benchmark-columns=min,median,mean,rounds",
               "--benchmark-sort=name")


@nox.session
def demo(session: nox.Session) -> None:
    """The README's main command in a fresh venv: the embedded default must learn (>= 95 % held-out). In the same
    fresh install, the seed releases' exact layouts import as a new user would import them (slow tokenizers,
    Ross's VAE in the shards): nothing they need may be missing from the README's install."""
    install(session, *[f"./{p}" for p in PACKAGES])
    seeds = ROOT / "tests" / "fixtures" / "seeds"
    for name, tower in (("llava-1.5", "clip-tower"), ("vip-llava", "clip-tower"), ("llava-s2", "clip-tower"),
                        ("convllava", "vision_tower"), ("ross", "siglip-tower")):
        target = Path(session.create_tmp()) / f"imported-{name}"
        shutil.rmtree(target, ignore_errors=True)
        session.run("vlmkit", "import", str(seeds / name / "model"), str(target), "--vision-tower",
                    str(seeds / name / tower), silent=True)
    # a fresh output folder: in a reused session folder the demo would resume its finished run and skip training
    out = str(Path(session.create_tmp()) / "demo-out")
    shutil.rmtree(out, ignore_errors=True)
    session.run("vlmkit", "demo", "--output", out)
    session.run("python", "-c", (
        "import json, sys; r = json.load(open(sys.argv[1])); "
        "acc = {k: v['accuracy'] for k, v in r['categories'].items()}; print(acc); "
        "low = {k: a for k, a in acc.items() if k in ('color', 'shape', 'position') and a < 0.95}; "
        "sys.exit(f'demo accuracy below 95%: {low}' if low else 0)"), f"{out}/demo_report.json")
