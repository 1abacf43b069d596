"""The realistic benchmark app's generator (issue 13 item 1), at a small scale, with the real git CLI:
its history has the commits, the files and the packed size asked for, on top of the branch it grew, and
its build files name the pip wheel of the package index. (`make bench` grows it to 20,000 files, 2,000
commits and 200 MB; the no-cache image build that follows is measured there, not here.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from benchmarks import bigapp


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_grows_history_files_and_size_on_develop(tmp_path):
    repo = tmp_path / "app"
    subprocess.run(["git", "init", "-q", "-b", "develop", str(repo)], check=True)
    (repo / "README.md").write_text("app\n")
    git(repo, "add", "README.md")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q", "-m", "first")
    base = git(repo, "rev-parse", "HEAD")

    spec = bigapp.Spec(files=600, commits=60, history_mb=3)
    made = bigapp.import_history(repo, spec)

    assert made["commits"] == 61
    assert made["generated_files"] == 600
    assert made["history_mb"] >= 3, made
    assert git(repo, "rev-list", "--max-parents=0", "develop") == base  # grown on top of what was there
    assert git(repo, "status", "--porcelain") == ""  # the work tree holds the imported tree
    py = sorted(repo.glob("vendor/acme/p000/m*.py"))
    assert py and compile(py[0].read_text(), str(py[0]), "exec")  # generated modules are valid Python
    assert len(list(repo.glob("assets/*/*/*"))) == 600 - len(list(repo.glob("vendor/acme/**/*.py")))
    # the later commits rewrite files already there (history, not only a big first commit)
    last = git(repo, "show", "--name-status", "--format=", "develop")
    assert last and all(ln.startswith("M\t") for ln in last.splitlines()), last


def test_same_spec_same_history(tmp_path):
    heads = []
    for n in (1, 2):
        repo = tmp_path / f"r{n}"
        subprocess.run(["git", "init", "-q", "-b", "develop", str(repo)], check=True)
        when = {"GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q",
                        "--allow-empty", "-m", "first"], cwd=repo, check=True, env={**os.environ, **when})
        bigapp.import_history(repo, bigapp.Spec(files=100, commits=12, history_mb=1))
        heads.append(git(repo, "rev-parse", "develop"))
    assert heads[0] == heads[1]  # seeded: every benchmark measures the same repository


def test_build_files_name_the_pip_wheel(tmp_path):
    repo = tmp_path / "app"
    template = Path(__file__).resolve().parent.parent / "src/stackpatch/sandbox/template/docker"
    for name in ("app", "front"):
        (repo / "docker" / name).mkdir(parents=True)
        (repo / "docker" / name / "Dockerfile").write_text((template / name / "Dockerfile").read_text())
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("pip-24.3.1-py3-none-any.whl", "six-1.16.0-py2.py3-none-any.whl"):
        (wheels / name).write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    bigapp.write_build(repo, sorted(wheels.glob("*.whl")))

    app = (repo / "docker/app/Dockerfile").read_text()
    assert "/tmp/deps/wheels/pip-24.3.1-py3-none-any.whl/pip install" in app
    assert "--no-index" in app and "@PIP_WHEEL@" not in app
    # the heavy layers come after FROM and before REVISION is declared: a new revision does not rebuild
    # them; the example app's own steps are all still there, after them
    assert app.index("FROM ${BASE_IMAGE}") < app.index("pip install") < app.index("compileall -q /opt/vendor") \
        < app.index("ARG REVISION") < app.index("COPY app/ /app/")
    assert (template / "app" / "Dockerfile").read_text().split("FROM ${BASE_IMAGE}\n", 1)[1] in app
    front = (repo / "docker/front/Dockerfile").read_text()
    assert front.index("FROM ${BASE_IMAGE}") < front.index("bundle.py") < front.index("ARG REVISION")
    assert sorted(p.name for p in (repo / "vendor/wheels").iterdir()) == [
        "pip-24.3.1-py3-none-any.whl", "six-1.16.0-py2.py3-none-any.whl"]
    assert (repo / "requirements.txt").read_text() == (bigapp.HERE / "requirements.txt").read_text()
    assert (repo / "assets" / "bundle.py").is_file()
