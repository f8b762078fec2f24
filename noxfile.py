"""Test sessions. Each session gets its own virtual environment (uv backend: torch is linked from
uv's cache, so extra environments cost seconds, not gigabytes).

    nox -s tests          all packages installed, the whole suite
    nox -s isolation      core alone, and core plus each sibling alone (each in its own venv)
    nox -s lint           ruff
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "isolation", "tests", "plugin_template", "lmms_eval", "demo"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
CONSTRAINTS = ["-c", str(ROOT / "constraints.txt")]
PACKAGES = ["vlmkit-core", "vlmkit-encoders", "vlmkit-fusion", "vlmkit-objectives", "vlmkit-data", "vlmkit-cli"]
SIBLINGS = PACKAGES[1:]


def _local_indexes() -> dict[str, str]:
    """Use the machine's local package mirror when it has one (pip is configured for it; uv is not)."""
    env = {"UV_INDEX_STRATEGY": "unsafe-best-match"}
    if Path("/opt/wheels").is_dir():
        env["UV_FIND_LINKS"] = "/opt/wheels"
    extra = [f"file://{p}" for p in ("/opt/pypi/simple", "/opt/pypi-more/simple") if Path(p).is_dir()]
    if extra:
        env["UV_EXTRA_INDEX_URL"] = " ".join(extra)
    return env


def install(session: nox.Session, *args: str) -> None:
    session.install(*args, *CONSTRAINTS, env=_local_indexes())


@nox.session(python=False, name="tests-here")
def tests_here(session: nox.Session) -> None:
    """The suite in the current interpreter (for a developer whose packages are already installed)."""
    session.run("pytest", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Everything installed; the full suite."""
    # core's extras bring DeepSpeed and peft, so CI really runs the 2-process ZeRO and LoRA tests
    pkgs = ["./vlmkit-core[deepspeed,peft]", *[f"./{p}" for p in PACKAGES[1:]]]
    install(session, *pkgs, "pytest", "pytest-benchmark")
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs, env={"VLMKIT_STRICT_PLUGINS": "1"})


@nox.session
@nox.parametrize("sibling", [None, *SIBLINGS], ids=["core-alone", *[s.removeprefix("vlmkit-") for s in SIBLINGS]])
def isolation(session: nox.Session, sibling: str | None) -> None:
    """Core alone, or core plus ONE sibling, in a fresh environment: the packages stand on their own."""
    pkgs = ["./vlmkit-core"] + ([f"./{sibling}"] if sibling else [])
    install(session, *pkgs, "pytest")
    env = {"VLMKIT_EXPECT_SIBLINGS": sibling or ""}
    session.run("pytest", "-p", "no:cacheprovider", "tests/isolation", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff", env=_local_indexes())
    session.run("ruff", "check", ".")


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
        session.run("pytest", "-p", "no:cacheprovider", *session.posargs, env=env)
    rows = json.loads(session.run("vlmkit", "plugins", "--json", "--check", silent=True, env=env))
    mine = {r["name"]: r["status"] for r in rows if r["distribution"] == "vlmkit-plugin-template"}
    if mine != {"template-patch": "ok", "template-pool": "ok"}:
        session.error(f"vlmkit plugins: expected template-patch and template-pool with status ok, got {mine}")


@nox.session(name="lmms_eval")
def lmms_eval_session(session: nox.Session) -> None:
    """The lmms-eval adapter under a real lmms-eval (heavy dependencies: kept out of the other environments)."""
    install(session, *[f"./{p}" for p in PACKAGES], "pytest", "accelerate", "lmms-eval")
    session.run("pytest", "-p", "no:cacheprovider", "tests/test_scale_lmms_eval.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The README's main command in a fresh venv: the embedded default must learn (>= 95 % held-out)."""
    install(session, *[f"./{p}" for p in PACKAGES])
    # a fresh output folder: in a reused session folder the demo would resume its finished run and skip training
    out = str(Path(session.create_tmp()) / "demo-out")
    shutil.rmtree(out, ignore_errors=True)
    session.run("vlmkit", "demo", "--output", out)
    session.run("python", "-c", (
        "import json, sys; r = json.load(open(sys.argv[1])); "
        "acc = {k: v['accuracy'] for k, v in r['categories'].items()}; print(acc); "
        "low = {k: a for k, a in acc.items() if k in ('color', 'shape', 'position') and a < 0.95}; "
        "sys.exit(f'demo accuracy below 95%: {low}' if low else 0)"), f"{out}/demo_report.json")
