"""The benchmark's two script contenders on a remote multi-node swarm (issue 11, item 9: `make bench
--nodes 3`), end to end on the shared 3-node sandbox under light load. Each builds and pushes on this
machine's engine, sends the service commands to the manager (`--swarm-host`) and runs the migrations by
`docker exec` on the node the phpfiles task runs on (`--node-host`), as a person reaching a remote swarm
would; the benchmark then rolls their update back (`OwnStack.restore`), so that the release stackpatch
shipped runs again for the next contender. It checks the scripts and the roll-back do that; the figures
are the benchmark's to report, not asserted here."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from benchmarks import measure, schema
from benchmarks.run import COMPETENT, SCRIPT, OwnStack, one_line_fix, registry_creds

SERVICES = {"phpfiles": "app", "phpha": "app", "web": "front"}


def served(front_url: str) -> dict:
    with urllib.request.urlopen(f"{front_url}/version", timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.docker
@pytest.mark.bench
@pytest.mark.multinode
@pytest.mark.parametrize("contender", ["manual_routine", "competent_script"])
def test_a_script_patches_the_three_node_stack_from_here_and_is_rolled_back(nodes3, contender, request, tmp_path):
    from stackpatch import git
    from stackpatch.sandbox import api
    info = api.status(Path(nodes3["dir"]))
    own = OwnStack(info, cdn="")
    now = served(info.front_url)  # the sandbox is shared: whatever release runs now is the one patched
    own.shipped(now["release"], now["revision"])
    before = own.images()
    request.addfinalizer(lambda: own.restore(before))  # a failing test leaves the shared sandbox as it was
    branch = f"bench/test-{contender}-{uuid.uuid4().hex[:6]}"
    sha = one_line_fix(info.app_dir, f"# {contender} on {len(info.nodes)} nodes\n", with_start=False, env={},
                       base=now["revision"], branch=branch)
    request.addfinalizer(lambda: git.run("push", "--quiet", "origin", "--delete", branch, cwd=info.app_dir,
                                         check=False))
    # the checkout is back where it was, without the branch (stackpatch's next `start` finds none)
    assert not git.run("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", cwd=info.app_dir, check=False).ok
    built = [f"{info.registry}/{info.name}/{image}:git-commit-{sha[:7]}" for image in ("app", "front")]
    request.addfinalizer(lambda: subprocess.run(["docker", "image", "rm", *built], capture_output=True))
    user, password = registry_creds(info.registry_env_file)
    script = ["bash", str(SCRIPT)] if contender == "manual_routine" else \
        [sys.executable, str(COMPETENT), "--workdir", str(tmp_path / "kept")]
    argv = script + ["--repo", str(info.origin_dir), "--ref", branch, "--version", "26.11.1t",
                     "--registry", f"{info.registry}/{info.name}", "--stack", info.stack,
                     "--base-image", info.base_image] + own.script_args()
    assert own.script_args()[:2] == ["--swarm-host", nodes3["connect"]["unix"]]
    figures = asyncio.run(measure.measure(
        f"{info.front_url}/version", argv, tmp_path / "out", contender, rate=20, before=1.0, after=2.0,
        max_duration=600, post_share=0.2, stack=info.stack, docker_hosts=list(own.node_hosts.values()),
        env={"REGISTRY_USER": user, "REGISTRY_PASSWORD": password}))
    log = (tmp_path / "out" / f"{contender}.log").read_text()
    assert figures["exit_code"] == 0, log[-3000:]
    assert password not in log and password not in json.dumps(figures), "the registry password leaked"
    assert figures["revision"] == sha and figures["new_revision_served"]
    # the POSTs' rows were counted in the db, on whichever node runs it (not this engine: it runs no task)
    assert figures["post_requests"] > 0 and figures["post_applied_twice"] is not None, figures
    schema.Contender.model_validate(figures)
    patched = own.images()
    for svc, image in SERVICES.items():
        assert patched[svc].startswith(f"{info.registry}/{info.name}/{image}:git-commit-{sha[:7]}"), patched
    # the migration ran by exec on the node of the phpfiles task, found through the manager
    tasks = api.status(Path(nodes3["dir"])).tasks["phpfiles"]
    node = next(t["node"] for t in tasks if t["state"] == "running")
    assert "migrations: task " in log and f" on node {node}" in log, log[-2000:]
    assert "migrate:" in log

    own.restore(before)  # what the benchmark does after each script's run
    assert own.images() == before
    assert served(info.front_url)["revision"] == now["revision"]
