"""Done when: on a sandbox fork, a one-line change on hotfix/26.11.1b, pushed, goes through
`stackpatch ship --until pushed`; the registry holds both tags at the recorded digest, the image's
revision label is the hotfix sha, and `plan --json` lists the steps and changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_helpers import push_hotfix

from stackpatch import config as config_mod
from stackpatch.images import registry as registry_mod
from stackpatch.targets.base import OCI_REVISION, OCI_VERSION
from stackpatch import targets

pytestmark = pytest.mark.docker

CLI = str(Path(sys.executable).with_name("stackpatch"))


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def stackpatch(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)


def world_of(fork, cfg) -> dict:
    """Registry tags, target state and git refs: what `plan` must not change."""
    reg = registry_mod.for_config(cfg)
    tags = {n: reg.tags(registry_mod.split_repository(cfg.image_ref(n))[1]) for n in cfg.images}
    state = targets.for_config(cfg).read_state().to_json()
    services = {k: (v["image"], v["labels"], v["replicas_desired"]) for k, v in state["services"].items()}
    refs = (git("for-each-ref", "--format=%(refname) %(objectname)", cwd=fork.app_dir),
            git("for-each-ref", "--format=%(refname) %(objectname)", cwd=fork.origin_dir))
    ours = sorted(subprocess.run(  # local images of this sandbox's repositories (the engine is shared)
        ["docker", "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", "--filter",
         f"reference={cfg.registry.host}/{cfg.registry.namespace}/*"], capture_output=True, text=True).stdout.split("\n"))
    return {"tags": tags, "services": services, "refs": refs, "local_images": ours}


def test_ship_until_pushed_on_a_sandbox_hotfix(fork, tmp_path):
    import os
    env = {**os.environ, "STACKPATCH_CACHE_DIR": str(tmp_path / "cache")}
    app = fork.app_dir
    sha = push_hotfix(app)
    cfg = config_mod.load(fork.config_path)

    before = world_of(fork, cfg)
    res = stackpatch("plan", "--json", cwd=app, env=env)
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["version"] == "26.11.1b" and plan["revision"] == sha
    assert plan["deployed"]["version"] == "26.11.1"
    assert [s["id"] for s in plan["steps"]] == ["workdir", "build:app", "build:front", "verify", "push:app",
                                               "push:front", "prepull", "update:phpfiles", "gate:canary", "migrate",
                                               "update:phpha", "update:web", "gate:rest", "serving"]
    assert [c["subject"] for c in plan["preflight"]["commits"]] == ["one-line fix"]
    assert world_of(fork, cfg) == before, "plan changed the world"

    res = stackpatch("ship", "--until", "pushed", "--yes", "--json", cwd=app, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    rel = out["release"]
    assert rel["version"] == "26.11.1b" and rel["revision"] == sha
    reg = registry_mod.for_config(cfg)
    for name in ("app", "front"):
        img = rel["images"][name]
        assert img["tags"] == [f"git-commit-{sha[:7]}", "26.11.1b"]
        _, rname = registry_mod.split_repository(img["repository"])
        for tag in img["tags"]:
            digest, labels = reg.image_labels(rname, tag)
            assert digest == img["digest"]
            assert labels[OCI_REVISION] == sha and labels[OCI_VERSION] == "26.11.1b"
            assert labels["org.opencontainers.image.source"] == str(fork.origin_dir)
    # a one-line change in the app moves one small layer, not the base image
    assert 0 < rel["images"]["app"]["bytes_pushed"] < 1_000_000
    assert Path(out["build_log"]).is_file() and f"build log: {out['build_log']}" in res.stderr
    # nothing deployed: the target still runs 26.11.1
    after = targets.for_config(cfg).read_state()
    # db and edge run the base image (PostgreSQL, HAProxy), not a release of the app
    assert {s.revision for n, s in after.services.items() if n not in ("db", "edge")} == {plan["deployed"]["revision"]}

    # shipping the same hotfix again finds everything pushed and rebuilds nothing
    res = stackpatch("ship", "--until", "pushed", "--yes", "--json", cwd=app, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    again = json.loads(res.stdout)["release"]
    assert {n: i["digest"] for n, i in again["images"].items()} == {n: i["digest"] for n, i in rel["images"].items()}
    assert "already in the registry" in res.stderr
