"""Issue 11 on the real one-node sandbox: nothing assumes that the engine stackpatch talks to holds a
task's image or container.

- the pre-pull: a release whose images this engine's store does not hold is pulled by Swarm, through
  the registry, with the run's credentials, before the canary; with wrong credentials the run fails
  before the canary in one line naming the node and Swarm's reason, and nothing changes;
- stale credentials stored in a service spec are replaced by the next update's;
- a command check run as a job pinned to the task's node (the fallback when the task's node has no
  engine stackpatch can reach), with the service's env and networks;
- resume from a second clone under another hostname (`unshare --uts`): refused while the killed
  holder's lock is live, allowed once it has expired.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from deploy_helpers import (CLI, cli, images_now, journal_records, lock_of, popen, release, wait_for,
                            write_release)

pytestmark = pytest.mark.docker


def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


def _present(ref: str) -> bool:
    return _docker("image", "inspect", ref).returncode == 0


def _absent_release(sandbox):
    """The session's "fresh" release (built and pushed once), removed from this engine's image store:
    only the registry has it now, as a worker that never ran it."""
    rel = release(sandbox, "fresh")
    for img in rel.images.values():
        refs = [f"{img.repository}:{t}" for t in img.tags] + [f"{img.repository}@{img.digest}"]
        for ref in refs:
            _docker("rmi", "-f", ref)
        assert not _present(img.ref), f"{img.ref} is still in the engine's store"
    return rel


def _node_name() -> str:
    return json.loads(_docker("info", "--format", "{{json .Name}}").stdout)


def _intents(app_dir) -> list[str]:
    return [r["step"] for r in journal_records(app_dir) if r["kind"] == "intent" and not r.get("undo")]


def _states(app_dir) -> list[str]:
    return [r["state"] for r in journal_records(app_dir) if r["kind"] == "state"]


def _jobs_left(stack: str) -> list[str]:
    out = _docker("service", "ls", "--filter", f"label=com.docker.stack.namespace={stack}",
                  "--filter", "label=stackpatch.job", "--format", "{{.Name}}").stdout
    return out.split()


def test_wrong_registry_credentials_fail_before_the_canary_naming_the_node(sandbox, fork, tmp_path):
    rel = _absent_release(sandbox)
    before = images_now(fork.app_dir)
    secret = f"wrong-{uuid.uuid4().hex}"
    r = cli("deploy", "--repo", str(fork.app_dir), "--release", str(write_release(rel, tmp_path / "r.json")),
            "--yes", env={"SANDBOX_REGISTRY_PASSWORD": secret})
    assert r.returncode == 1, r.stderr
    err = r.stderr.strip().splitlines()[-1]
    app = rel.images["app"].ref
    assert err.startswith(f"stackpatch: error: node {_node_name()} could not pull {app} (for phpfiles, phpha): "), err
    assert "No such image" in err or "unauthorized" in err, err
    assert "nothing was changed" in err
    assert images_now(fork.app_dir) == before and lock_of(fork.stack) is None
    assert _intents(fork.app_dir) == ["prepull"] and _states(fork.app_dir)[-1] == "failed"
    assert _jobs_left(fork.stack) == []
    journal = "".join(p.read_text() for p in (fork.app_dir / ".stackpatch" / "runs").glob("*.jsonl"))
    assert secret not in journal and secret not in r.stderr
    assert not _present(app)  # nothing was pulled


def test_the_new_images_are_pulled_before_the_canary_and_the_cut_over_waits_for_no_pull(sandbox, fork, tmp_path):
    rel = _absent_release(sandbox)
    r = cli("deploy", "--repo", str(fork.app_dir), "--release", str(write_release(rel, tmp_path / "r.json")),
            "--yes", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["state"] == "deployed", res
    assert _intents(fork.app_dir)[:2] == ["prepull", "update:phpfiles"]
    assert f"pre-pull: {_node_name()} has {rel.images['app'].ref}" in r.stderr
    assert all(_present(img.ref) for img in rel.images.values())  # pulled through the registry, with auth
    assert _jobs_left(fork.stack) == []
    t = res["timings"]
    print(f"\nwith the pre-pull: prepull {t['prepull']:.1f}s, canary cut-over {t['update:phpfiles']:.1f}s")


def test_without_the_pre_pull_the_canary_cut_over_includes_the_pull(sandbox, fork, tmp_path):
    """The measurement's other half (`target.prepull = false`): the same absent images, pulled by the
    canary's own update."""
    rel = _absent_release(sandbox)
    toml = fork.app_dir / "stackpatch.toml"
    toml.write_text(toml.read_text().replace("[target]\n", "[target]\nprepull = false\n", 1))
    r = cli("deploy", "--repo", str(fork.app_dir), "--release", str(write_release(rel, tmp_path / "r.json")),
            "--yes", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["state"] == "deployed" and "prepull" not in res["timings"], res
    print(f"\nwithout the pre-pull: canary cut-over {res['timings']['update:phpfiles']:.1f}s")


def test_a_one_node_swarm_that_holds_the_images_starts_no_pull_job(sandbox, fork, tmp_path):
    """The pre-pull on a swarm of one node whose store holds the release by digest (it built and pushed
    it): the step runs and names the node, but creates no job (Swarm starts a task from a digest its node
    holds without pulling); the release jobs of the same run show that the engine's events are seen."""
    rel = release(sandbox, "good")
    assert all(_present(f"{img.repository}@{img.digest}") for img in rel.images.values())
    # the engine's service-create events, streamed while the deploy runs (its replay of past events keeps
    # only the last 256 of every kind, fewer than a deploy makes)
    events = subprocess.Popen(["docker", "events", "--filter", "type=service", "--filter", "event=create",
                               "--format", "{{.Actor.Attributes.name}}"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)  # subscribed before the deploy starts
        r = cli("deploy", "--repo", str(fork.app_dir), "--release", str(write_release(rel, tmp_path / "r.json")),
                "--yes", "--json")
        time.sleep(1)
    finally:
        events.terminate()
        out, _ = events.communicate(timeout=30)
    assert r.returncode == 0, r.stderr
    assert _intents(fork.app_dir)[:2] == ["prepull", "update:phpfiles"]
    assert f"pre-pull: {_node_name()} has {rel.images['app'].ref}" in r.stderr
    names = [n for n in out.split() if n.startswith(f"{fork.stack}_")]  # this fork's only
    assert any("sp-release-" in n for n in names), names  # the migrations' jobs: the events were seen
    assert not any("sp-pull-" in n for n in names), names


def test_an_update_replaces_stale_credentials_stored_in_the_service(sandbox, fork):
    """A service created with wrong credentials cannot start a task from an image its node lacks; the
    next update through the target sends the run's credentials, and the new task pulls."""
    import docker
    from stackpatch import config, targets
    rel = _absent_release(sandbox)
    api = docker.from_env().api
    name = f"{fork.stack}_stale"
    bad = docker.auth.encode_header({"username": "nobody", "password": "stale-password",
                                     "serveraddress": sandbox.registry})
    spec = {"Name": name, "Labels": {"com.docker.stack.namespace": fork.stack},
            "TaskTemplate": {"ContainerSpec": {"Image": rel.images["app"].ref, "Command": ["sleep", "300"],
                                               "Healthcheck": {"Test": ["NONE"]}},
                             "RestartPolicy": {"Condition": "none"}},
            "Mode": {"Replicated": {"Replicas": 1}}}
    resp = api._post_json(api._url("/services/create"), data=spec,
                          headers={"X-Registry-Auth": bad.decode() if isinstance(bad, bytes) else bad})
    api._raise_for_status(resp)
    sid = resp.json()["ID"]
    try:
        def state():
            ts = sorted(api.tasks(filters={"service": sid}), key=lambda t: t["CreatedAt"])
            return (ts[-1]["Status"]["State"], ts[-1]["Status"].get("Err")) if ts else None
        got = wait_for(lambda: state() if state() and state()[0] in ("rejected", "failed", "running") else None,
                       90, "the task with stale credentials")
        assert got[0] == "rejected" and "No such image" in (got[1] or ""), got
        target = targets.for_config(config.load(fork.app_dir))
        target.update_image("stale", rel.images["app"].ref, {"stackpatch.version": rel.version}, lambda m: None)
        got = wait_for(lambda: state() if state() and state()[0] == "running" else None, 90,
                       "a task started with the refreshed credentials")
        assert got[0] == "running" and _present(rel.images["app"].ref)
    finally:
        api.remove_service(sid)


def test_a_command_check_runs_as_a_job_on_the_task_node_with_its_env(sandbox, fork):
    """The fallback for a task on a node whose engine stackpatch cannot reach: the check runs as a
    one-off job from the task's image, env and networks, pinned to that node; its output and exit code
    come back through the manager, and the job is removed."""
    import docker
    from stackpatch import config, targets
    target = targets.for_config(config.load(fork.app_dir))
    api = docker.from_env().api
    full = f"{fork.stack}_phpfiles"
    [task] = [t for t in api.tasks(filters={"service": full, "desired-state": "running"})
              if t["Status"]["State"] == "running"]
    code, out = target._exec_as_job(full, task, _node_name(),
                                    ["sh", "-c", 'echo "rev=$APP_REVISION"; getent hosts db >/dev/null && exit 7'],
                                    60)
    assert code == 7, out  # `db` resolves: the job is on the stack's network
    lines = out.splitlines()
    assert lines[0].startswith(f"[ran as job {fork.stack}_sp-check-") and f"on node {_node_name()}" in lines[0]
    assert f"rev={sandbox.revision}" in lines, out
    assert _jobs_left(fork.stack) == []
    assert target.exec("phpfiles", ["sh", "-c", "echo in-task"], 30) == (0, "in-task\n")  # the local node: exec


def test_resume_from_another_clone_under_another_hostname_waits_for_the_lock_to_expire(sandbox, fork, tmp_path):
    """kill -9 mid-run in one clone; a second clone (a real `git clone`, its journal copied from the
    first, as a CI artifact would be) runs `resume` under another hostname (`unshare --uts`)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--uts", "true"]).returncode != 0:
        pytest.skip("unshare --uts is not available (needs root)")
    rel = release(sandbox, "good")
    toml = fork.app_dir / "stackpatch.toml"
    toml.write_text(toml.read_text().replace("[timeouts]\n", "[timeouts]\nlock_ttl = 24\n", 1)
                    if "[timeouts]\n" in toml.read_text() else toml.read_text() + "\n[timeouts]\nlock_ttl = 24\n")
    p = popen("deploy", "--repo", str(fork.app_dir), "--release", str(write_release(rel, tmp_path / "r.json")),
              "--yes")
    try:
        wait_for(lambda: "update:phpfiles" in _intents(fork.app_dir), 180, "the canary's update")
    finally:
        p.send_signal(signal.SIGKILL)  # kill -9: no handler, no rollback, the lock stays
        p.communicate()
    held = lock_of(fork.stack)
    assert held is not None and held.boot_id  # the lock records host, pid and boot id
    run_id = held.run_id
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(fork.origin_dir), str(other)], check=True)
    shutil.copy(toml, other / "stackpatch.toml")
    (other / ".stackpatch" / "runs").mkdir(parents=True)
    shutil.copy(fork.app_dir / ".stackpatch" / "runs" / f"{run_id}.jsonl", other / ".stackpatch" / "runs")
    as_other = ["unshare", "--uts", "--", sys.executable, "-c",
                "import os, socket, sys; socket.sethostname('other-machine'); os.execv(sys.argv[1], sys.argv[1:])",
                CLI]
    r = subprocess.run([*as_other, "resume", "--repo", str(other)], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr
    assert "it is another machine, so only its lock's expiry proves it gone" in r.stderr, r.stderr
    assert lock_of(fork.stack).run_id == run_id
    wait_for(lambda: lock_of(fork.stack).expired(time.time()), 90, "the lock's expiry")
    r = subprocess.run([*as_other, "resume", "--repo", str(other), "--json"], capture_output=True, text=True,
                       timeout=400, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["state"] == "deployed" and res["run_id"] == run_id, res
    assert lock_of(fork.stack) is None
    resumed = [x for x in journal_records(other) if x["kind"] == "resume"]
    assert resumed and resumed[0]["host"] == "other-machine"
