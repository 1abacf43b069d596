"""stackpatch as a normal package: `python -m build` makes an sdist and a wheel (from that sdist) that
carry the sandbox template, dotfiles included, and the wheel works installed, not editable, in a fresh
virtualenv.

Offline: the build runs without isolation (setuptools from the test extra, nothing downloaded), on a
copy of the source tree (nothing is written into the checkout). The fresh venv gets the wheel alone
(`--no-deps`); its dependencies are read from this venv's site-packages through a `.pth` line (a plain
path: the `.pth` files there, such as the editable install's, are not run), and `pip check` confirms
the wheel's declared requirements are met.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "src" / "stackpatch" / "sandbox" / "template"
SKIP = {".git", ".venv", ".sandbox", ".stackpatch", "__pycache__", ".bench", ".pytest_cache"}


def _ignore(d: str, names: list[str]) -> list[str]:
    """What the copy of the tree leaves out: caches, venvs, and the root's build output."""
    root_only = {"build", "dist"} if Path(d) == ROOT else set()
    return [n for n in names if n in SKIP or n in root_only or n.endswith(".egg-info")]


def run(*argv: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300
        ) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=_ignore)
    r = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", work / "dist", ".", cwd=src)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return work / "dist"


def template_files() -> set[str]:
    files = {p.relative_to(TEMPLATE).as_posix() for p in TEMPLATE.rglob("*") if p.is_file()
             and "__pycache__" not in p.parts}
    assert ".gitignore" in files and "stackpatch.toml" in files
    return files


def test_sdist_and_wheel_carry_the_sandbox_template_with_its_dotfiles(dist):
    wheels, sdists = list(dist.glob("stackpatch-*.whl")), list(dist.glob("stackpatch-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    want = template_files()
    with zipfile.ZipFile(wheels[0]) as z:
        names = set(z.namelist())
    in_wheel = {n.split("stackpatch/sandbox/template/", 1)[1] for n in names if "stackpatch/sandbox/template/" in n}
    assert in_wheel == want
    assert "stackpatch/report.py" in names and "stackpatch/commands/report_cmd.py" in names
    assert not any(n.startswith("tests/") for n in names)
    with tarfile.open(sdists[0]) as t:
        members = {m.name for m in t.getmembers() if m.isfile()}
    in_sdist = {n.split("src/stackpatch/sandbox/template/", 1)[1] for n in members
                if "src/stackpatch/sandbox/template/" in n}
    assert in_sdist == want


def test_the_wheel_installed_in_a_fresh_venv_runs(dist, tmp_path):
    venv = tmp_path / "venv"
    r = run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert r.returncode == 0, r.stderr
    py = venv / "bin" / "python"
    wheel = next(dist.glob("stackpatch-*.whl"))
    r = run(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "--quiet", wheel)
    assert r.returncode == 0, r.stdout + r.stderr
    site = Path(run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "_stackpatch_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    # the installed copy, not the checkout: stackpatch and its template live in the new venv
    r = run(py, "-c", "import stackpatch, pathlib; p = pathlib.Path(stackpatch.__file__).parent; "
                      "print(p); print((p / 'sandbox' / 'template' / '.gitignore').is_file())", cwd=tmp_path, env=env)
    where, has_template = r.stdout.split()
    assert Path(where) == site / "stackpatch" and has_template == "True", r.stdout + r.stderr
    r = run(sys.executable, "-m", "pip", "--python", py, "check", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (site / "__editable__.stackpatch-0.1.0.pth").exists()

    sp = venv / "bin" / "stackpatch"
    r = run(sp, "--version", cwd=tmp_path, env=env)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "stackpatch 0.1.0" and lines[1].startswith("Docker engine"), r.stdout
    assert ", API 1." in lines[1] or "none answers" in lines[1], lines[1]
    r = run(sp, "--version", cwd=tmp_path, env={**env, "DOCKER_HOST": "tcp://127.0.0.1:9"})
    assert r.returncode == 0 and "none answers at tcp://127.0.0.1:9" in r.stdout and r.stderr == "", r

    r = run(sp, "--help", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    for cmd in ("ship", "report", "sandbox", "history", "finish"):
        assert f"  {cmd} " in r.stdout, cmd

    empty = tmp_path / "no-sandbox"
    empty.mkdir()
    r = run(sp, "sandbox", "status", "--json", "--dir", empty, cwd=tmp_path, env=env)
    # sandbox down: refused with one line (exit 2, nothing on stdout), no traceback, nothing written
    assert r.returncode == 2 and r.stdout == "", r
    assert r.stderr.count("\n") == 1 and f"no sandbox in {empty}" in r.stderr, r.stderr
    assert list(empty.iterdir()) == []

    # shell completion (Click's _STACKPATCH_COMPLETE) for bash, zsh and fish, as the README shows it
    for shell, words in (("bash", "complete -o nosort -F _stackpatch_completion stackpatch"),
                         ("zsh", "#compdef stackpatch"), ("fish", "complete --no-files --command stackpatch")):
        r = run(sp, env={**env, "_STACKPATCH_COMPLETE": f"{shell}_source"})
        assert r.returncode == 0 and words in r.stdout, (shell, r.stdout[:300], r.stderr)
    r = run(sp, env={**env, "_STACKPATCH_COMPLETE": "bash_complete", "COMP_WORDS": "stackpatch rep", "COMP_CWORD": "1"})
    assert r.stdout.split() == ["plain,report"], r.stdout
