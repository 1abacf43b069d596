"""A push cut midway resumes: the registry goes away right after the first release tag of the first
image is written (the layers went up earlier, under the pre-push tag, while verify ran); the next `ship` reuses that image by digest (never rebuilt), gives it its missing tag through
the registry API (the manifest copied by digest, then checked), and builds and pushes the rest."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from deploy_helpers import Relay, cli
from stackpatch import config as config_mod
from stackpatch.images import registry as registry_mod
from test_build import hotfix

pytestmark = pytest.mark.docker


def test_a_push_cut_after_one_tag_resumes_without_rebuilding(sandbox, fork, tmp_path):
    cfg = config_mod.load(fork.app_dir)
    real = registry_mod.for_config(cfg)
    ns = cfg.registry.namespace
    relay = Relay(upstream=("127.0.0.1", int(cfg.registry.host.rsplit(":", 1)[1]))).restore()
    seen = {"manifest": False, "cut": False}
    marker = f"PUT /v2/{ns}/app/manifests/git-commit-".encode()  # a release tag, not the pre-push one

    def sniff(data: bytes, from_client: bool) -> None:
        if from_client and marker in data:
            seen["manifest"] = True
        elif not from_client and seen["manifest"] and not seen["cut"] and b" 201 Created" in data:
            seen["cut"] = True  # the registry wrote the first tag: it goes away before anyone hears it
            threading.Thread(target=relay.cut, daemon=True).start()
    relay.sniff = sniff
    via = f"127.0.0.1:{relay.port}"
    p = Path(fork.config_path)
    text = p.read_text()
    p.write_text(re.sub(r'(?m)^host = ".*"$', f'host = "{via}"', text, count=1))
    env = {"STACKPATCH_CACHE_DIR": str(tmp_path / "cache")}
    try:
        sha = hotfix(fork, "26.11.1p")
        first = cli("ship", "--until", "pushed", "--yes", cwd=fork.app_dir, env=env, timeout=900)
        assert first.returncode != 0 and seen["cut"], first.stderr[-3000:]
        assert "Traceback" not in first.stderr
        commit, version = f"git-commit-{sha[:7]}", "26.11.1p"
        app_tags = real.tags(f"{ns}/app")
        assert commit in app_tags and version not in app_tags, app_tags  # one tag pushed, not the other
        assert not {commit, version} & set(real.tags(f"{ns}/front"))
        pushed = real.head_digest(f"{ns}/app", commit)

        relay.sniff = None
        relay.restore()
        plan = cli("plan", "--json", cwd=fork.app_dir, env=env)
        assert plan.returncode == 0, plan.stderr[-2000:]
        steps = {s["id"]: s for s in json.loads(plan.stdout)["steps"]}
        assert steps["build:app"]["done"] and "not rebuilt" in steps["build:app"]["intent"]
        assert not steps["build:front"]["done"]

        second = cli("ship", "--until", "pushed", "--yes", "--json", cwd=fork.app_dir, env=env, timeout=900)
        assert second.returncode == 0, second.stderr[-3000:]
        rel = json.loads(second.stdout)["release"]
        assert rel["images"]["app"]["digest"] == pushed          # reused by digest
        assert "reused, not rebuilt" in second.stderr
        assert f"tagged {via}/{ns}/app:{version} {pushed} through the registry API" in second.stderr
        assert f"build {via}/{ns}/app:" not in second.stderr      # never rebuilt
        assert f"build {via}/{ns}/front:" in second.stderr
        assert f"pull {via}/{ns}/app@{pushed[:19]}" in second.stderr  # verify ran the pushed image
        assert real.head_digest(f"{ns}/app", version) == pushed
        front = rel["images"]["front"]["digest"]
        assert real.head_digest(f"{ns}/front", commit) == front == real.head_digest(f"{ns}/front", version)
    finally:
        relay.cut()
        p.write_text(text)
