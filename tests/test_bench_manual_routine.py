"""The manual-routine contender of the benchmark, end to end on a sandbox fork (real registry, swarm,
docker build/push/service update/exec), under light load. It checks the script does the routine; the
figures themselves are the benchmark's to report, not asserted here."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import measure, schema
from stackpatch import git

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "manual_routine.sh"


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def one_line_hotfix(app: Path, line: str) -> str:
    """hotfix/26.11.1b from 26.11.1 by hand, one line appended to app/server.py, committed, pushed."""
    git.run("checkout", "--quiet", "-b", "hotfix/26.11.1b", "26.11.1", cwd=app)
    server = app / "app" / "server.py"
    server.write_text(server.read_text() + line)
    git.run("-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "--quiet", "-am",
            "one-line hotfix", cwd=app)
    git.run("push", "--quiet", "origin", "hotfix/26.11.1b", cwd=app)
    return git.out("rev-parse", "HEAD", cwd=app)


def registry_login(sandbox) -> tuple[str, str]:
    """The sandbox registry's user and password, from its env file."""
    creds = _env_file(Path(sandbox.registry_env_file))
    return (next(v for k, v in creds.items() if k.endswith("_USER")),
            next(v for k, v in creds.items() if k.endswith("_PASSWORD")))


def run_contender(sandbox, fork, argv: list[str], sha: str, tmp_path: Path, name: str,
                  built: list[str]) -> tuple[dict, str, str]:
    """A benchmark script (argv, given the fork's repo, hotfix ref, registry, stack and base image) run by the
    benchmark's measure() under 20 req/s; the images it builds are added to `built`.
    Returns its figures, its log and the registry password (to check it did not leak)."""
    env_user, env_pass = registry_login(sandbox)
    argv = argv + ["--repo", str(fork.origin_dir), "--ref", "hotfix/26.11.1b", "--version", "26.11.1b",
                   "--registry", f"{sandbox.registry}/{sandbox.name}", "--stack", fork.stack,
                   "--base-image", sandbox.base_image]
    built += [f"{sandbox.registry}/{sandbox.name}/{image}:git-commit-{sha[:7]}" for image in ("app", "front")]
    figures = asyncio.run(measure.measure(f"{fork.front_url}/version", argv, tmp_path / "out", name,
                                          rate=20, before=1.0, after=2.0, max_duration=600,
                                          env={"REGISTRY_USER": env_user, "REGISTRY_PASSWORD": env_pass}))
    return figures, (tmp_path / "out" / f"{name}.log").read_text(), env_pass


@pytest.mark.docker
@pytest.mark.bench
def test_manual_routine_script_patches_a_sandbox_fork_under_load(request, tmp_path):
    built: list[str] = []  # images the script builds; removed after the fork's stack is gone (LIFO finalizers)
    try:
        sandbox = request.getfixturevalue("sandbox")
        request.addfinalizer(lambda: built and subprocess.run(["docker", "image", "rm", *built], capture_output=True))
        fork = request.getfixturevalue("fork")
    except pytest.FixtureLookupError:
        pytest.skip("needs the sandbox fixtures (tests/conftest.py of the sandbox branch)")
    sha = one_line_hotfix(Path(fork.app_dir), "# one-line hotfix\n")
    figures, log, env_pass = run_contender(sandbox, fork, ["bash", str(SCRIPT)], sha, tmp_path, "manual_routine",
                                           built)
    assert figures["exit_code"] == 0, log[-2000:]
    leaked = env_pass in log or env_pass in json.dumps(figures)
    assert not leaked, "the registry password is in the log or the figures"
    assert figures["revision"] == sha and figures["new_revision_served"]
    assert list(figures["phases"]) == ["lookup", "clone", "build:app", "build:front", "push:app", "push:front",
                                       "deploy:phpfiles", "deploy:phpha", "deploy:web", "migrations"]
    schema.Contender.model_validate(figures)
    for svc, image in (("phpfiles", "app"), ("phpha", "app"), ("web", "front")):
        ref = subprocess.run(["docker", "service", "inspect", "--format",
                              "{{.Spec.TaskTemplate.ContainerSpec.Image}}", f"{fork.stack}_{svc}"],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert ref.startswith(f"{sandbox.registry}/{sandbox.name}/{image}:git-commit-{sha[:7]}"), ref
    assert "migrate:" in log
