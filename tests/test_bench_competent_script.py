"""The competent-script contender of the benchmark (issue 13), end to end on a sandbox fork (real registry,
swarm, BuildKit build, push, `docker service update --update-order start-first`, exec), under light load.
It checks that the script does what it says; the figures are the benchmark's to report, not asserted here."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import measure, schema
from stackpatch import git
from test_bench_manual_routine import one_line_hotfix, registry_login

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "competent_script.py"


@pytest.mark.docker
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
    env_user, env_pass = registry_login(sandbox)
    argv = [sys.executable, str(SCRIPT),
            "--repo", str(fork.origin_dir), "--ref", "hotfix/26.11.1b", "--version", "26.11.1b",
            "--registry", f"{sandbox.registry}/{sandbox.name}", "--stack", fork.stack,
            "--base-image", sandbox.base_image, "--workdir", str(workdir)]
    built += [f"{sandbox.registry}/{sandbox.name}/{image}:git-commit-{sha[:7]}" for image in ("app", "front")]
    figures = asyncio.run(measure.measure(f"{fork.front_url}/version", argv, tmp_path / "out", "competent_script",
                                          rate=20, before=1.0, after=2.0, max_duration=600,
                                          env={"REGISTRY_USER": env_user, "REGISTRY_PASSWORD": env_pass}))
    log = (tmp_path / "out" / "competent_script.log").read_text()
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
