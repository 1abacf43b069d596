"""The pure plan: git facts (from real repos) + target state + registry tags + config → ordered steps."""

from __future__ import annotations

import json

import pytest
from build_helpers import load_cfg, make_repo, start_hotfix, target_state

from stackpatch.errors import UserError
from stackpatch.preflight import gather
from stackpatch.release.plan import RemoteTag, Snapshot, make_plan
from stackpatch.targets.base import MixedRevisionsError, deployed_release

DIGEST = "sha256:" + "b" * 64


@pytest.fixture
def world(tmp_path):
    repo, _, deployed = make_repo(tmp_path)
    head = start_hotfix(repo)
    cfg = load_cfg(repo)
    return repo, cfg, deployed, head


def snap(repo, cfg, state, deployed, registry=None, allow_mixed=False):
    facts = gather(repo, cfg, deployed_revision=deployed)
    return Snapshot(git=facts, target=state, registry=registry or {}, allow_mixed=allow_mixed)


def test_plan_orders_the_steps_with_their_intent(world):
    repo, cfg, deployed, head = world
    state = target_state({"phpfiles": deployed, "phpha": deployed})
    plan = make_plan(snap(repo, cfg, state, deployed), cfg)
    # the deploy half is deploy_plan.plan_deploy's steps, the very ones `deploy` journals
    assert [s.id for s in plan.steps] == ["workdir", "build:app", "push:app", "prepull", "update:phpfiles",
                                         "gate:canary", "update:phpha", "gate:rest"]
    assert [s.half for s in plan.steps] == ["build", "build", "build", "deploy", "deploy", "deploy", "deploy",
                                            "deploy"]
    assert "pre-pull on every node that may run a new task" in plan.steps[3].intent
    assert not any(s.done for s in plan.steps)
    img = plan.images[0]
    assert img.repository == "127.0.0.1:5999/acme/app"
    assert img.tags == (f"git-commit-{head[:7]}", "26.11.1b")
    assert img.cache_from == f"127.0.0.1:5999/acme/app:git-commit-{deployed[:7]}@{'sha256:' + 'a' * 64}"
    build = plan.steps[1]
    assert build.detail["build_args"] == {"REVISION": head, "VERSION": "26.11.1b"}
    assert f"git-commit-{head[:7]}" in build.intent
    canary = plan.steps[4]
    assert canary.detail["service"] == "phpfiles" and canary.detail["wave"] == "canary"
    assert canary.detail["image"] == f"127.0.0.1:5999/acme/app:git-commit-{head[:7]}@<digest after push>"
    assert canary.detail["previous_image"] == img.cache_from
    assert "phpfiles" in canary.intent and "phpha" in plan.steps[6].intent
    data = json.loads(json.dumps(plan.to_json()))
    assert data["version"] == "26.11.1b" and data["revision"] == head
    assert data["deployed"] == {"version": "26.11.1", "revision": deployed}
    assert data["preflight"]["commits"][0]["subject"] == "fix the greeting"


def test_verify_migrations_and_purge_steps_come_from_the_config(world, tmp_path):
    repo, cfg, deployed, head = world
    cfg = cfg.model_copy(update={
        "verify": cfg.verify.model_copy(update={"stack_file": "verify.yml"}),
        "migrations": cfg.migrations.model_copy(update={"service": "phpfiles", "command": ["migrate"],
                                                        "tenants": ["a", "b"]}),
    })
    state = target_state({"phpfiles": deployed, "phpha": deployed})
    plan = make_plan(snap(repo, cfg, state, deployed), cfg)
    assert [s.id for s in plan.steps] == ["workdir", "build:app", "verify", "push:app", "prepull", "update:phpfiles",
                                         "gate:canary", "migrate:a", "migrate:b", "update:phpha", "gate:rest"]
    assert "`migrate` once" in plan.steps[7].intent and "(DATA=a)" in plan.steps[7].intent
    assert plan.steps[8].detail["env"] == {"DATA": "b"}


def test_a_tag_already_used_for_other_code_is_refused(world):
    repo, cfg, deployed, head = world
    state = target_state({"phpfiles": deployed, "phpha": deployed})
    reg = {"app": {f"git-commit-{head[:7]}": None, "26.11.1b": RemoteTag(DIGEST, deployed)}}
    with pytest.raises(UserError, match=r"tag 127.0.0.1:5999/acme/app:26.11.1b already exists .* tags are never "
                                        r"reused") as e:
        make_plan(snap(repo, cfg, state, deployed, reg), cfg)
    assert deployed[:7] in str(e.value) and "\n" not in str(e.value)


def test_tags_already_holding_this_revision_mark_the_build_half_done(world):
    repo, cfg, deployed, head = world
    state = target_state({"phpfiles": deployed, "phpha": deployed})
    reg = {"app": {f"git-commit-{head[:7]}": RemoteTag(DIGEST, head), "26.11.1b": RemoteTag(DIGEST, head)}}
    plan = make_plan(snap(repo, cfg, state, deployed, reg), cfg)
    assert plan.images[0].already_pushed == DIGEST
    assert [s.done for s in plan.steps if s.half == "build"] == [True, True, True]


def test_an_image_pushed_with_one_tag_is_reused_and_its_missing_tag_copied(world):
    """An interrupted push (one tag written, the other not): the plan reuses that digest, builds nothing
    for it, and its push step copies the manifest to the missing tag."""
    repo, cfg, deployed, head = world
    state = target_state({"phpfiles": deployed, "phpha": deployed})
    reg = {"app": {f"git-commit-{head[:7]}": RemoteTag(DIGEST, head), "26.11.1b": None}}
    plan = make_plan(snap(repo, cfg, state, deployed, reg), cfg)
    img = plan.images[0]
    assert (img.already_pushed, img.partly_pushed, img.reused) == (None, DIGEST, DIGEST)
    assert img.pushed_tags == (f"git-commit-{head[:7]}",) and img.missing_tags == ("26.11.1b",)
    steps = {s.id: s for s in plan.steps}
    assert steps["build:app"].done and "reuse" in steps["build:app"].intent and "not rebuilt" in steps["build:app"].intent
    assert not steps["push:app"].done and steps["push:app"].detail["missing_tags"] == ["26.11.1b"]
    assert "manifest copied by digest" in steps["push:app"].intent
    assert not steps["workdir"].done  # verify still needs the clean build dir
    # the deploy steps already name the digest that will run
    assert steps["update:phpfiles"].detail["image"].endswith("@" + DIGEST)


def test_the_plan_carries_the_update_settings_lint(world):
    import dataclasses
    from stackpatch.targets.base import UpdateSettings
    repo, cfg, deployed, head = world
    state = target_state({"phpfiles": deployed, "phpha": deployed})
    bad = UpdateSettings(failure_action="rollback", healthcheck="service", health_interval=2, health_retries=2)
    state = dataclasses.replace(state, services={
        n: dataclasses.replace(s, update=bad if n == "phpha" else None) for n, s in state.services.items()})
    plan = make_plan(snap(repo, cfg, state, deployed), cfg)
    assert len(plan.warnings) == 1 and plan.warnings[0].startswith("phpha: update_config.failure_action is rollback")
    assert plan.to_json()["warnings"] == list(plan.warnings)


def test_two_tags_at_different_digests_are_refused(world):
    repo, cfg, deployed, head = world
    state = target_state({"phpfiles": deployed, "phpha": deployed})
    reg = {"app": {f"git-commit-{head[:7]}": RemoteTag(DIGEST, head),
                   "26.11.1b": RemoteTag("sha256:" + "c" * 64, head)}}
    with pytest.raises(UserError, match="point to different digests"):
        make_plan(snap(repo, cfg, state, deployed, reg), cfg)


def test_mixed_revisions_are_refused_naming_the_services_unless_allowed(world):
    repo, cfg, deployed, head = world
    state = target_state({"phpfiles": head, "phpha": deployed})
    with pytest.raises(MixedRevisionsError) as e:
        deployed_release(state, cfg)
    msg = str(e.value)
    assert f"phpfiles at {head[:7]}" in msg and f"phpha at {deployed[:7]}" in msg and "--allow-mixed" in msg
    # allowed: on a tie the canary's revision counts
    assert deployed_release(state, cfg, allow_mixed=True) == ("26.11.1", head)


def test_the_deployed_version_cannot_be_shipped_again(world):
    repo, cfg, deployed, head = world
    state = target_state({"phpfiles": deployed, "phpha": deployed}, version="26.11.1b")
    with pytest.raises(UserError, match="version 26.11.1b is already deployed"):
        make_plan(snap(repo, cfg, state, deployed), cfg)


def test_a_missing_service_is_refused(world):
    repo, cfg, deployed, head = world
    state = target_state({"phpfiles": deployed})
    with pytest.raises(UserError, match=r"stack 'acme-prod' has no service phpha \(it has: phpfiles\)"):
        make_plan(snap(repo, cfg, state, deployed), cfg)


def test_no_revision_anywhere_is_refused(world):
    repo, cfg, deployed, head = world
    state = target_state({"phpfiles": deployed, "phpha": deployed})
    bare = type(state)(stack=state.stack, services={
        k: type(v)(**{**v.__dict__, "image_labels": {}}) for k, v in state.services.items()})
    with pytest.raises(UserError, match="cannot find the deployed commit"):
        make_plan(snap(repo, cfg, bare, deployed), cfg)


def test_service_labels_win_over_image_labels(world):
    repo, cfg, deployed, head = world
    state = target_state({"phpfiles": deployed, "phpha": deployed})
    labelled = type(state)(stack=state.stack, services={
        k: type(v)(**{**v.__dict__, "labels": {"stackpatch.revision": head, "stackpatch.version": "26.11.1a"}})
        for k, v in state.services.items()})
    assert deployed_release(labelled, cfg) == ("26.11.1a", head)
