"""Named targets: `[targets.<name>]` beside or instead of `[target]`, `--target`, `require_target`, and
`promote` (the exact digests of one target deployed to another), against in-memory targets.
tests/test_workflow_swarm.py promotes between two stacks of the sandbox."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stackpatch import config
from stackpatch.errors import ConfigError, FaultError, UserError
from stackpatch.release import deploy as D
from stackpatch.release import journal as J
from stackpatch.release.promote import promote
from stackpatch.reporter import Recorder

from tests.fakes.memory_target import MemoryTarget
from tests.test_runner_memory import NEW_APP, NEW_FRONT, OLD, OLD_REV, Front, release

COMMON = """
[registry]
host = "reg.example:5000"
namespace = "acme"
[images.app]
repository = "app"
[images.front]
repository = "front"
[timeouts]
converge = 1.5
check = 1
"""

TARGET = """
[{table}]
stack = "{stack}"
front_url = "{front}"
services = {{ phpfiles = "app", phpha = "app", web = "front" }}
[[{table}.waves]]
name = "canary"
services = ["phpfiles"]
[[{table}.waves]]
name = "rest"
services = ["phpha", "web"]
"""


def write(tmp_path: Path, *tables: str, top: str = "") -> Path:
    (tmp_path / "stackpatch.toml").write_text(top + COMMON + "".join(tables))
    return tmp_path


def table(name: str | None, stack: str, front: str = "http://127.0.0.1:9") -> str:
    return TARGET.format(table="target" if name is None else f"targets.{name}", stack=stack, front=front)


def test_target_alone_is_the_default_target(tmp_path):
    write(tmp_path, table(None, "acme-prod"))
    cfg = config.load(tmp_path)
    assert (cfg.target.stack, cfg.target_name, cfg.target_names) == ("acme-prod", "default", ["default"])
    assert config.load(tmp_path, target="default").target.stack == "acme-prod"
    with pytest.raises(ConfigError, match=r"has no target 'staging': use one of default$"):
        config.load(tmp_path, target="staging")


def test_named_targets_are_picked_with_target_and_required_when_asked(tmp_path):
    write(tmp_path, table("staging", "acme-staging"), table("production", "acme-prod"), top="require_target = true\n")
    with pytest.raises(ConfigError, match=r"require_target = true: name the target with --target NAME "
                                          r"\(staging, production\)"):
        config.load(tmp_path)
    cfg = config.load(tmp_path, target="staging")
    assert (cfg.target.stack, cfg.target_name) == ("acme-staging", "staging")
    assert config.load(tmp_path, target="production").target.stack == "acme-prod"
    # `config check` reads the file without picking
    assert config.load(tmp_path, select=False).target is None


def test_several_named_targets_without_a_default_need_a_name(tmp_path):
    write(tmp_path, table("staging", "acme-staging"), table("production", "acme-prod"))
    with pytest.raises(ConfigError, match=r"several targets \(staging, production\) and no \[target\]"):
        config.load(tmp_path)
    write(tmp_path, table("production", "acme-prod"))
    assert config.load(tmp_path).target_name == "production"   # the only one


def test_every_target_is_validated_and_none_is_refused(tmp_path):
    bad = table("staging", "acme-staging").replace('web = "front"', 'web = "frontend"')
    write(tmp_path, table(None, "acme-prod"), bad)
    with pytest.raises(ConfigError, match=r"targets.staging.services.web runs image 'frontend'"):
        config.load(tmp_path)
    write(tmp_path)
    with pytest.raises(ConfigError, match=r"no target: add a \[target\] table"):
        config.load(tmp_path)


def test_a_bare_command_is_refused_under_require_target_in_one_line(tmp_path):
    write(tmp_path, table("staging", "acme-staging"), table("production", "acme-prod"), top="require_target = true\n")
    cli = str(Path(sys.executable).with_name("stackpatch"))
    for argv in (["status", "--repo", str(tmp_path)], ["rollback", "--repo", str(tmp_path), "--yes"],
                 ["plan", "-c", str(tmp_path / "stackpatch.toml")]):
        r = subprocess.run([cli, *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert r.returncode == 2, (argv, r.stderr)
        [line] = r.stderr.strip().splitlines()
        assert "require_target = true" in line and "--target" in line


# ------------------------------------------------------------------ promote

@pytest.fixture
def two(tmp_path):
    labels = {n: {"stackpatch.version": "26.11.1", "stackpatch.revision": OLD_REV} for n in OLD}
    staging = MemoryTarget("acme-staging", OLD, labels=labels)
    prod = MemoryTarget("acme-prod", OLD, replicas={"phpha": 2}, labels=labels)
    fronts = [Front(staging), Front(prod)]
    write(tmp_path, table("staging", "acme-staging", fronts[0].url), table("production", "acme-prod", fronts[1].url),
          top="require_target = true\n")
    try:
        yield config.load(tmp_path, target="staging"), staging, config.load(tmp_path, target="production"), prod
    finally:
        for f in fronts:
            f.close()


def test_promote_deploys_the_digests_that_run_on_staging(two):
    cfg_s, staging, cfg_p, prod = two
    shipped = D.deploy(cfg_s, release(), yes=True, pause=False, reporter=Recorder(), target=staging)
    assert shipped.state == J.DEPLOYED and prod.images() == OLD
    rel, res = promote(cfg_s, cfg_p, yes=True, pause=False, reporter=Recorder(), source=staging, target=prod)
    assert res.state == J.DEPLOYED
    assert prod.images() == staging.images() == {"phpfiles": NEW_APP, "phpha": NEW_APP, "web": NEW_FRONT}
    assert (rel.version, rel.revision) == (release().version, release().revision)
    assert prod.services["web"].labels["stackpatch.version"] == "26.11.1b"
    runs = {v.run_id: v for v in J.iter_runs(cfg_p.root)}
    start = runs[res.run_id].start
    assert start["target"]["name"] == "production" and start["promoted_from"] == "staging"
    assert runs[shipped.run_id].start["target"]["name"] == "staging"
    assert runs[res.run_id].to_json()["target"] == "production"


def test_promote_refuses_a_staging_that_rolled_back(two):
    cfg_s, staging, cfg_p, prod = two
    staging.behaviour[NEW_APP] = "crash"
    with pytest.raises(FaultError, match="rolled back"):
        D.deploy(cfg_s, release(), yes=True, pause=False, reporter=Recorder(), target=staging)
    with pytest.raises(UserError, match=r"target staging's last run .* ended rolled-back: it runs an earlier release"):
        promote(cfg_s, cfg_p, yes=True, pause=False, reporter=Recorder(), source=staging, target=prod)
    assert prod.updates == [] and prod.lock is None


def test_promote_refuses_a_staging_that_is_mid_run(two):
    cfg_s, staging, cfg_p, prod = two
    D.deploy(cfg_s, release(), yes=True, pause=False, reporter=Recorder(), target=staging)
    from stackpatch.targets.base import LockInfo
    staging.lock = LockInfo(owner="someone", host="h", pid=1, version="26.11.1c", run_id="R", started_at=0,
                            expires_at=1e12)
    with pytest.raises(UserError, match=r"target staging \(stack acme-staging\) is mid-run: it is locked by run R"):
        promote(cfg_s, cfg_p, yes=True, pause=False, reporter=Recorder(), source=staging, target=prod)
    assert prod.updates == []


def test_promote_between_one_stack_is_refused(two):
    cfg_s, staging, _, _ = two
    with pytest.raises(UserError, match="same stack"):
        promote(cfg_s, cfg_s, yes=True, pause=False, reporter=Recorder(), source=staging, target=staging)


def test_the_sandbox_staging_rewrite_keeps_production_and_adds_staging(tmp_path):
    from stackpatch.sandbox.api import with_staging_targets
    template = (Path(__file__).parent.parent / "src/stackpatch/sandbox/template/stackpatch.toml").read_text()
    text = template.replace("@@STACK@@", "acme-prod").replace("@@FRONT_URL@@", "http://127.0.0.1:8001")
    for k in ("REGISTRY", "NAME", "ENV_FILE", "BASE_IMAGE", "DOCKER_HOST"):
        text = text.replace(f"@@{k}@@", {"REGISTRY": "127.0.0.1:5000", "DOCKER_HOST": "unix:///x.sock"}.get(k, "acme"))
    (tmp_path / "stackpatch.toml").write_text(with_staging_targets(text, "acme-staging", "http://127.0.0.1:8002"))
    with pytest.raises(ConfigError, match="require_target = true"):
        config.load(tmp_path)
    prod, staging = config.load(tmp_path, target="production"), config.load(tmp_path, target="staging")
    assert (prod.target.stack, prod.target.front_url) == ("acme-prod", "http://127.0.0.1:8001")
    assert (staging.target.stack, staging.target.front_url) == ("acme-staging", "http://127.0.0.1:8002")
    assert staging.target.model_dump(exclude={"stack", "front_url"}) == prod.target.model_dump(
        exclude={"stack", "front_url"})
    assert [c.name for c in prod.target.checks] == ["front health", "front serves the release"]
    assert prod.verify.stack_file == "deploy/verify.yml"   # the tables after [target] are kept
