"""The competent-script contender of the benchmark (issue 13), end to end on a sandbox fork (real registry,
swarm, BuildKit build, push, `docker service update --update-order start-first`, exec), under light load.
It checks that the script does what it says; the figures are the benchmark's to report, not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import schema
from stackpatch import git
from test_bench_manual_routine import one_line_hotfix, run_contender

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "competent_script.py"


@pytest.mark.docker
@pytest.mark.bench
def test_competent_script_patches_a_sandbox_fork_start_first_under_load(request, tmp_path):
    built: list[str] = []  # images the script builds; removed after the fork's stack is gone (LIFO finalizers)
    sandbox = request.getfixturevalue("sandbox")
    request.addfinalizer(lambda: built and subprocess.run(["docker", "image", "rm", *built], capture_output=True))
    fork = request.getfixturevalue("fork")
    app = Path(fork.app_dir)
    # the kept checkout, made earlier at the release (as the benchmark does before the measured run)
    workdir = tmp_path / "kept"
    git.run("clone", "--quiet", "--", str(fork.origin_dir), str(workdir / "src"), cwd=tmp_path)
    git.run("checkout", "--quiet", "--detach", "26.11.1", cwd=workdir / "src")
    (workdir / "src" / "stray.txt").write_text("left by someone\n")
    sha = one_line_hotfix(app, "# one-line hotfix (competent)\n")
    figures, log, env_pass = run_contender(sandbox, fork, [sys.executable, str(SCRIPT), "--workdir", str(workdir)],
                                           sha, tmp_path, "competent_script", built)
    assert figures["exit_code"] == 0, log[-2000:]
    assert env_pass not in log and env_pass not in json.dumps(figures), "the registry password leaked"
    assert figures["revision"] == sha and figures["new_revision_served"]
    assert list(figures["phases"]) == ["checkout", "build:app", "build:front", "push:app", "push:front",
                                       "deploy:phpfiles", "deploy:phpha", "deploy:web", "migrations"]
    schema.Contender.model_validate(figures)
    # the kept checkout was fetched, moved to the hotfix and cleaned (not cloned again elsewhere)
    assert git.out("rev-parse", "HEAD", cwd=workdir / "src") == sha
    assert not (workdir / "src" / "stray.txt").exists()
    for svc, image in (("phpfiles", "app"), ("phpha", "app"), ("web", "front")):
        spec = json.loads(subprocess.run(["docker", "service", "inspect", "--format", "{{json .Spec}}",
                                          f"{fork.stack}_{svc}"], capture_output=True, text=True,
                                         check=True).stdout)
        ref = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        assert ref.startswith(f"{sandbox.registry}/{sandbox.name}/{image}:git-commit-{sha[:7]}"), ref
        assert spec["UpdateConfig"]["Order"] == "start-first"
    assert "migrate:" in log
