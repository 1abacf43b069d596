"""The deciding half of deploy (pure): the journal's records and what they mean, the plan, history."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from stackpatch import config
from stackpatch.errors import UserError
from stackpatch.release import history
from stackpatch.release import journal as J
from stackpatch.release.deploy_plan import plan_deploy, plan_rollback, undo_order
from stackpatch.release.model import PushedImage, Release
from stackpatch.targets.base import ImageRef, ServiceState

TOML = """
[registry]
host = "reg.example:5000"
namespace = "acme"
[images.app]
repository = "app"
[images.front]
repository = "front"
[target]
stack = "acme-prod"
front_url = "http://127.0.0.1:8080"
services = { phpfiles = "app", phpha = "app", web = "front" }
[[target.waves]]
name = "canary"
services = ["phpfiles"]
[[target.waves]]
name = "rest"
services = ["phpha", "web"]
[[target.checks]]
name = "health"
url = "{front_url}/health"
[[target.checks]]
name = "serves the release"
url = "{front_url}/version"
body_contains = "{revision}"
[[target.checks]]
name = "canary runs the release"
service = "phpfiles"
command = ["sh", "-c", "test $APP_REVISION = {revision}"]
[[target.checks]]
name = "app shell works"
service = "phpha"
command = ["true"]
[migrations]
service = "phpfiles"
command = ["python3", "/app/migrate.py"]
tenants = ["alpha", "beta"]
[cdn]
zone = "z1"
"""

OLD = {"phpfiles": "reg.example:5000/acme/app:26.11.1@sha256:" + "a" * 64,
       "phpha": "reg.example:5000/acme/app:26.11.1@sha256:" + "a" * 64,
       "web": "reg.example:5000/acme/front:26.11.1@sha256:" + "b" * 64}


def _cfg(tmp_path: Path, text: str = TOML) -> config.Config:
    (tmp_path / "stackpatch.toml").write_text(text)
    return config.load(tmp_path)


def _services() -> dict[str, ServiceState]:
    return {n: ServiceState(name=n, full_name=f"acme-prod_{n}", id=n, image=ImageRef.parse(img),
                            labels={"stackpatch.version": "26.11.1", "stackpatch.revision": "1" * 40},
                            image_labels={}, replicas_desired=2 if n == "phpha" else 1, replicas_running=1,
                            update_state=None)
            for n, img in OLD.items()}


def _release() -> Release:
    return Release("26.11.1b", "2" * 40, {
        "app": PushedImage("app", "reg.example:5000/acme/app", ("git-commit-2222222", "26.11.1b"), "sha256:" + "c" * 64),
        "front": PushedImage("front", "reg.example:5000/acme/front", ("git-commit-2222222",), "sha256:" + "d" * 64)})


def test_plan_is_canary_gate_migrations_rest_serving_purge(tmp_path):
    steps = plan_deploy(_cfg(tmp_path), _release(), _services())
    pull = steps.pop(0)  # first, every node that may run a new task pulls its image
    assert pull["kind"] == "prepull" and [i["services"] for i in pull["images"]] == [["phpfiles", "phpha"], ["web"]]
    assert [s["id"] for s in steps] == ["update:phpfiles", "gate:canary", "migrate:alpha", "migrate:beta",
                                        "update:phpha", "update:web", "gate:rest", "serving", "purge"]
    up = steps[0]
    assert up["image"] == "reg.example:5000/acme/app:git-commit-2222222@sha256:" + "c" * 64
    assert up["previous_image"] == OLD["phpfiles"] and up["previous_pinned"]
    assert up["labels"] == {"stackpatch.version": "26.11.1b", "stackpatch.revision": "2" * 40,
                            "stackpatch.previous-image": OLD["phpfiles"]}  # the runner adds its run id
    assert up["previous_labels"]["stackpatch.version"] == "26.11.1"
    assert up["previous_labels"]["stackpatch.run-id"] is None
    # the check naming {revision} cannot pass while phpha still runs the old release: last gate only
    assert [c["name"] for c in steps[1]["checks"]] == ["health", "canary runs the release", "app shell works"]
    assert [c["name"] for c in steps[6]["checks"]] == ["health", "serves the release", "canary runs the release",
                                                      "app shell works"]
    mig = steps[2]
    assert mig["image"] == up["image"] and mig["env"] == {"DATA": "alpha"} and mig["service"] == "phpfiles"
    assert not any("full_name" in s for s in steps)  # steps name services; only the target knows its names
    assert steps[7]["url"] == "http://127.0.0.1:8080/version" and steps[7]["revision"] == "2" * 40
    json.dumps(steps)  # plain data: it goes into the journal as is


def test_plan_before_rollout_and_pause(tmp_path):
    text = TOML.replace('tenants = ["alpha", "beta"]', 'when = "before-rollout"').replace("[cdn]\nzone = \"z1\"\n", "")
    steps = plan_deploy(_cfg(tmp_path, text), _release(), _services(), pause=True)
    assert [s["id"] for s in steps][:3] == ["prepull", "migrate", "update:phpfiles"]
    assert steps[-1]["id"] == "serving"
    gates = [s for s in steps if s["kind"] == "gate"]
    assert [g["pause"] for g in gates] == [True, False]


def test_plan_refuses_missing_service_or_image(tmp_path):
    svcs = _services()
    del svcs["web"]
    with pytest.raises(UserError, match="no service web"):
        plan_deploy(_cfg(tmp_path), _release(), svcs)
    rel = _release()
    rel = Release(rel.version, rel.revision, {"app": rel.images["app"]})
    with pytest.raises(UserError, match="no image 'front'"):
        plan_deploy(_cfg(tmp_path), rel, _services())


def test_rollback_plan_goes_last_wave_first_to_exact_images(tmp_path):
    svcs = _services()
    steps = plan_rollback(_cfg(tmp_path), svcs, {"phpfiles": "x@sha256:1", "phpha": "y@sha256:2", "web": "z@sha256:3"},
                          "26.11.1", "1" * 40)
    assert [s["id"] for s in steps] == ["update:phpha", "update:web", "update:phpfiles", "serving"]
    assert steps[0]["image"] == "y@sha256:2" and steps[0]["previous_image"] == OLD["phpha"]
    assert steps[-1]["revision"] == "1" * 40
    assert [s["id"] for s in undo_order(steps, ["update:phpha", "update:web"])] == ["update:web", "update:phpha"]


def _git_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def _write_run(root: Path, run_id: str, *records: tuple[str, dict], start: dict) -> J.Journal:
    jr = J.Journal.create(root, run_id)
    jr.append("run-start", run_id=run_id, **start)
    for kind, data in records:
        jr.append(kind, **data)
    return jr


def test_journal_appends_fsyncs_and_is_git_ignored(tmp_path):
    root = _git_repo(tmp_path / "app")
    jr = _write_run(root, "r1", ("intent", {"step": "update:phpfiles"}),
                    start={"op": "deploy", "stack": "s", "version": "26.11.1b", "plan": []})
    assert jr.path == root / ".stackpatch" / "runs" / "r1.jsonl"
    assert subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout == ""
    assert ".stackpatch/" in (root / ".git" / "info" / "exclude").read_text()
    with pytest.raises(FileExistsError):
        J.Journal.create(root, "r1")  # a run id is never reused
    # a crash mid-write leaves a torn last line: ignored, the rest still reads
    with jr.path.open("a") as f:
        f.write('{"ts": 1, "kind": "res')
    v = J.view(jr.records())
    assert v.state == J.RUNNING and v.last_step == "update:phpfiles" and v.done_steps == []


def test_view_follows_a_run_through_failure_and_rollback(tmp_path):
    root = _git_repo(tmp_path / "app")
    jr = _write_run(root, "r1",
                    ("intent", {"step": "update:phpfiles"}), ("result", {"step": "update:phpfiles", "ok": True}),
                    ("intent", {"step": "migrate"}), ("result", {"step": "migrate", "ok": False, "detail": "exit 1"}),
                    ("state", {"state": J.ROLLING_BACK}),
                    ("intent", {"step": "update:phpfiles", "undo": True}),
                    ("result", {"step": "update:phpfiles", "undo": True, "ok": True}),
                    ("state", {"state": J.ROLLED_BACK}),
                    start={"op": "deploy", "stack": "s", "version": "26.11.1b", "from_version": "26.11.1", "plan": []})
    v = J.view(jr.records())
    assert v.state == J.ROLLED_BACK and v.finished
    assert v.done_steps == ["update:phpfiles"] and v.failed_steps == ["migrate"]
    assert v.undone_steps == ["update:phpfiles"] and v.detail == "exit 1"


PLAN = [{"id": "update:phpfiles", "kind": "update", "service": "phpfiles", "image": "new1", "previous_image": "old1"},
        {"id": "update:phpha", "kind": "update", "service": "phpha", "image": "new2", "previous_image": "old2"}]


def test_history_shipped_unfinished_and_rollback_source(tmp_path):
    root = _git_repo(tmp_path / "app")
    assert history.shipped(root, "26.11.1b") is None  # no journal at all: unknown
    _write_run(root, "20260101T000000Z-aaaaaa", ("state", {"state": J.DEPLOYED}),
               start={"op": "deploy", "stack": "s", "version": "26.11.1b", "from_version": "26.11.1",
                      "revision": "b" * 40, "from_revision": "a" * 40, "plan": PLAN})
    assert history.shipped(root, "26.11.1b") is True
    assert history.shipped(root, "26.11.1c") is False
    assert history.rollback_source(root, "s", None) == ({"phpfiles": "old1", "phpha": "old2"}, "26.11.1", "a" * 40)
    assert history.rollback_source(root, "s", "26.11.1b")[0] == {"phpfiles": "new1", "phpha": "new2"}
    with pytest.raises(UserError, match="26.10.9 is not recorded"):
        history.rollback_source(root, "s", "26.10.9")
    assert history.unfinished(root, "s") is None
    # a newer run that was killed after its first step: resumable, and `shipped` is not fooled
    _write_run(root, "20260102T000000Z-bbbbbb", ("intent", {"step": "update:phpfiles"}),
               ("result", {"step": "update:phpfiles", "ok": True}), ("intent", {"step": "update:phpha"}),
               start={"op": "deploy", "stack": "s", "version": "26.11.1c", "plan": PLAN})
    v = history.unfinished(root, "s")
    assert v.run_id.endswith("bbbbbb") and v.done_steps == ["update:phpfiles"] and v.last_step == "update:phpha"
    assert history.shipped(root, "26.11.1c") is False
    assert [r.run_id[-6:] for r in history.runs(root)] == ["bbbbbb", "aaaaaa"]
