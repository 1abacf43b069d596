"""The deploy state machine (run_steps, rollback, resume, abort) against the in-memory target: every
path, including the ones a real swarm rarely shows (an unhealthy new task, a converge timeout, a
failing gate or serving check, a rollback that fails, the transient-failure retry, Swarm's own
automatic rollback), in milliseconds. The real-swarm tests run the same code against Docker.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stackpatch import config
from stackpatch.errors import FaultError, UserError
from stackpatch.release import deploy as D
from stackpatch.release import journal as J
from stackpatch.release.model import PushedImage, Release
from stackpatch.release.runner import job_name, pull_name
from stackpatch.reporter import Recorder

from tests.fakes.cloudflare import FakeCloudflare
from tests.fakes.memory_target import MemoryTarget

OLD_REV, NEW_REV = "1" * 40, "2" * 40
OLD = {"phpfiles": "reg.example:5000/acme/app:git-commit-1111111@sha256:" + "a" * 64,
       "phpha": "reg.example:5000/acme/app:git-commit-1111111@sha256:" + "a" * 64,
       "web": "reg.example:5000/acme/front:git-commit-1111111@sha256:" + "b" * 64}
NEW_APP = "reg.example:5000/acme/app:git-commit-2222222@sha256:" + "c" * 64
NEW_FRONT = "reg.example:5000/acme/front:git-commit-2222222@sha256:" + "d" * 64

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
front_url = "{front}"
services = {{ phpfiles = "app", phpha = "app", web = "front" }}
[[target.waves]]
name = "canary"
services = ["phpfiles"]
[[target.waves]]
name = "rest"
services = ["phpha", "web"]
[[target.checks]]
name = "front serves the release"
url = "{{front_url}}/version"
body_contains = "{{revision}}"
[[target.checks]]
name = "app shell works"
service = "phpfiles"
command = ["true"]
[migrations]
service = "phpfiles"
command = ["python3", "/app/migrate.py"]
tenants = ["alpha", "beta"]
[timeouts]
converge = 1.5
check = 1
"""


class Front:
    """The app's front as a real local HTTP server: /version answers the revision the memory target's
    `web` service is labelled with, as the sandbox's front answers the revision its tasks run.
    `web_labels` reads them elsewhere (the file-backed target's state file)."""

    def __init__(self, target: MemoryTarget | None, web_labels=None):
        self.target = target
        self.stale = False  # serve the old revision whatever runs (a CDN or proxy that never updates)
        self.web_labels = web_labels or (lambda: self.target.services["web"].labels)
        front = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                rev = OLD_REV if front.stale else front.web_labels().get("stackpatch.revision", OLD_REV)
                body = json.dumps({"revision": rev}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def world(tmp_path):
    target = MemoryTarget("acme-prod", OLD, replicas={"phpha": 2},
                          labels={n: {"stackpatch.version": "26.11.1", "stackpatch.revision": OLD_REV} for n in OLD})
    front = Front(target)
    (tmp_path / "stackpatch.toml").write_text(TOML.format(front=front.url))
    try:
        yield config.load(tmp_path), target, front
    finally:
        front.close()


def release() -> Release:
    return Release("26.11.1b", NEW_REV, {
        "app": PushedImage("app", "reg.example:5000/acme/app", ("git-commit-2222222", "26.11.1b"), "sha256:" + "c" * 64),
        "front": PushedImage("front", "reg.example:5000/acme/front", ("git-commit-2222222", "26.11.1b"),
                             "sha256:" + "d" * 64)})


def records(cfg) -> list[dict]:
    [path] = sorted(J.runs_dir(cfg.root).glob("*.jsonl"))[-1:]
    return J.read_records(path)


def states(cfg) -> list[str]:
    return [r["state"] for r in records(cfg) if r["kind"] == "state"]


def intents(cfg) -> list[str]:
    return [r["step"] for r in records(cfg) if r["kind"] == "intent" and not r.get("undo")]


def holder_exits(target: MemoryTarget) -> None:
    """The run that holds the lock ends (as the CLI process of an interrupted run does): its pid is dead."""
    import dataclasses
    from stackpatch.release.lock import boot_id
    target.lock = dataclasses.replace(target.lock, pid=_dead_pid(), boot_id=boot_id())


def _dead_pid() -> int:
    import subprocess
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def deploy(cfg, target, **kw):
    return D.deploy(cfg, release(), yes=True, pause=False, reporter=Recorder(), target=target, **kw)


def test_a_deploy_runs_every_step_in_order_and_releases_the_lock(world):
    cfg, target, _ = world
    res = deploy(cfg, target)
    assert res.state == J.DEPLOYED
    assert intents(cfg) == ["prepull", "update:phpfiles", "gate:canary", "migrate:alpha", "migrate:beta", "update:phpha",
                            "update:web", "gate:rest", "serving"]
    assert target.images() == {"phpfiles": NEW_APP, "phpha": NEW_APP, "web": NEW_FRONT}
    assert {s.labels["stackpatch.run-id"] for s in target.services.values()} == {res.run_id}
    assert target.services["phpha"].labels["stackpatch.previous-image"] == OLD["phpha"]
    # one job per tenant, each removed, named from the run and the step
    assert target.job_starts == [job_name(res.run_id, "migrate:alpha"), job_name(res.run_id, "migrate:beta")]
    assert all(j.removed for j in target.jobs.values())
    assert [target.jobs[n].env for n in target.job_starts] == [{"DATA": "alpha"}, {"DATA": "beta"}]
    assert target.lock is None
    start = records(cfg)[0]
    assert start["target"] == {"kind": "memory", "where": "memory://acme-prod", "name": "default"}
    assert (start["from_version"], start["from_revision"]) == ("26.11.1", OLD_REV)


def test_the_gate_runs_a_release_check_only_once_its_service_runs_the_release(world):
    cfg, target, front = world
    res = deploy(cfg, target)
    gates = {r["step"]: [c["name"] for c in r["checks"]] for r in records(cfg) if r["kind"] == "intent"
             and r["step_kind"] == "gate"}
    assert gates == {"gate:canary": ["app shell works"], "gate:rest": ["front serves the release", "app shell works"]}
    assert res.ok


@pytest.mark.parametrize("behaviour, why", [
    ("unhealthy", "1 unhealthy"),            # runs, but its healthcheck fails: never converges
    ("stuck", "did not converge within"),    # never starts: the converge timeout
    ("crash", "exited with code 1"),         # Swarm pauses the update on a crash
    ("swarm-rollback", "rolled the service back by itself"),  # Swarm's own rollback is a failure
])
def test_a_canary_that_does_not_converge_rolls_back_to_the_recorded_images(world, behaviour, why):
    cfg, target, _ = world
    target.behaviour[NEW_APP] = behaviour
    with pytest.raises(FaultError, match="rolled back") as e:
        deploy(cfg, target)
    assert why in str(e.value) and "update:phpfiles" in str(e.value)
    assert target.images() == OLD
    assert target.services["phpfiles"].labels["stackpatch.revision"] == OLD_REV
    assert "stackpatch.run-id" not in target.services["phpfiles"].labels  # the previous labels, exactly
    assert intents(cfg) == ["prepull", "update:phpfiles"]
    assert states(cfg)[-2:] == [J.ROLLING_BACK, J.ROLLED_BACK]
    assert target.job_starts == []  # no migration ran
    assert target.lock is None


def test_the_run_watches_swarms_monitor_window_instead_of_sitting_in_it(world):
    """Every new task healthy, Swarm still `updating` (its monitor window): the wave's wait ends, the
    gate and the release phase run while the window is open, and the run is deployed only once Swarm
    completed every update."""
    cfg, target, _ = world
    target.behaviour[NEW_APP] = target.behaviour[NEW_FRONT] = "monitor"
    rec = Recorder()
    res = D.deploy(cfg, release(), yes=True, pause=False, reporter=rec, target=target)
    assert res.state == J.DEPLOYED
    said = [m for _, m in rec.messages]

    def at(prefix: str) -> int:
        return next(i for i, m in enumerate(said) if m.startswith(prefix))
    # the canary's wait ended with its window open; the gate ran inside it
    assert at("update:phpfiles: ok") < at("gate:canary …") < at("phpfiles: update completed by Swarm")
    # the rest's windows are waited for before the serving check passes and the run is called deployed
    assert at("phpha: update completed by Swarm") < at("serving: ok")
    assert at("web: update completed by Swarm") < at("serving: ok")
    assert all(target._converged(s) for s in target.services.values())
    assert intents(cfg) == ["prepull", "update:phpfiles", "gate:canary", "migrate:alpha", "migrate:beta", "update:phpha",
                            "update:web", "gate:rest", "serving"]


def test_a_task_that_fails_in_the_monitor_window_rolls_back(world):
    """The canary's tasks start healthy, then one exits inside Swarm's monitor window: the look after
    the gate sees the paused update and the run rolls back, before any migration."""
    cfg, target, _ = world
    target.behaviour[NEW_APP] = "late-crash"
    target.monitor_looks = 1
    with pytest.raises(FaultError, match="rolled back") as e:
        deploy(cfg, target)
    assert "failed in Swarm's monitor window" in str(e.value) and "gate:canary" in str(e.value)
    assert target.images() == OLD
    assert intents(cfg) == ["prepull", "update:phpfiles", "gate:canary"]
    assert target.job_starts == []
    assert states(cfg)[-2:] == [J.ROLLING_BACK, J.ROLLED_BACK]


def test_a_failure_in_the_last_wave_undoes_every_service_newest_first(world):
    cfg, target, _ = world
    target.behaviour[NEW_FRONT] = "unhealthy"
    with pytest.raises(FaultError, match="rolled back"):
        deploy(cfg, target)
    assert target.images() == OLD
    undo = [r["step"] for r in records(cfg) if r["kind"] == "intent" and r.get("undo")]
    assert undo == ["update:web", "update:phpha", "update:phpfiles"]
    assert states(cfg)[-1] == J.ROLLED_BACK


def test_a_transient_engine_failure_is_retried_not_rolled_back(world):
    cfg, target, _ = world
    target.behaviour[NEW_APP] = "flaky"
    res = deploy(cfg, target)
    assert res.state == J.DEPLOYED and target.images()["phpfiles"] == NEW_APP
    assert target.services["phpfiles"].retried


def test_a_failing_gate_rolls_back(world):
    cfg, target, _ = world
    target.exec_results["phpfiles"] = (1, "permission denied\n")
    with pytest.raises(FaultError, match=r"check 'app shell works' failed .*exited 1: permission denied"):
        deploy(cfg, target)
    assert target.images() == OLD and intents(cfg) == ["prepull", "update:phpfiles", "gate:canary"]
    assert states(cfg)[-1] == J.ROLLED_BACK and target.lock is None


def test_a_failing_serving_check_rolls_back(world):
    cfg, target, front = world
    cfg = cfg.model_copy(update={"target": cfg.target.model_copy(update={"checks": []})})
    front.stale = True  # the front keeps answering the old revision
    with pytest.raises(FaultError, match=r"serves revision 1111111111111111111111111111111111111111, expected 2222"):
        deploy(cfg, target)
    assert intents(cfg)[-1] == "serving"
    assert target.images() == OLD and states(cfg)[-1] == J.ROLLED_BACK


def test_a_failing_migration_rolls_back_the_canary(world):
    cfg, target, _ = world
    target.job_exit["beta"] = 3
    with pytest.raises(FaultError, match=r"exited 3.*rolled back"):
        deploy(cfg, target)
    assert intents(cfg) == ["prepull", "update:phpfiles", "gate:canary", "migrate:alpha", "migrate:beta"]
    assert target.images() == OLD and all(j.removed for j in target.jobs.values())


def test_a_rollback_that_fails_keeps_the_lock_and_says_what_to_do(world):
    cfg, target, _ = world
    target.behaviour[NEW_FRONT] = "crash"
    target.behaviour[OLD["phpha"]] = "refuse"   # the engine refuses to put phpha back
    with pytest.raises(FaultError, match=r"the rollback did not complete \(.*\): the lock stays held; fix the "
                                         r"target, then `stackpatch abort`"):
        deploy(cfg, target)
    assert states(cfg)[-1] == J.ROLLBACK_FAILED
    assert target.lock is not None
    assert target.images()["web"] == OLD["web"]  # undone before phpha failed
    # once the engine accepts it again, abort finishes the job
    del target.behaviour[OLD["phpha"]]
    holder_exits(target)
    res = D.abort(cfg, reporter=Recorder(), target=target)
    assert res.state == J.ABORTED and target.images() == OLD and target.lock is None


def test_target_lost_mid_run_keeps_the_lock_then_resume_finishes_without_redoing(world):
    cfg, target, _ = world
    target.unreachable_after["update_image"] = 1  # the second service update finds the engine gone
    with pytest.raises(FaultError, match="target stopped answering at step update:phpha .*stackpatch resume"):
        deploy(cfg, target)
    assert states(cfg)[-1] == J.INTERRUPTED and target.lock is not None
    holder_exits(target)
    # still gone: resume refuses in one line, changes nothing
    with pytest.raises(UserError, match="does not answer"):
        D.resume(cfg, reporter=Recorder(), target=target)
    target.reachable = True
    target.unreachable_after.clear()
    res = D.resume(cfg, reporter=Recorder(), target=target)
    assert res.state == J.DEPLOYED and target.images() == {"phpfiles": NEW_APP, "phpha": NEW_APP, "web": NEW_FRONT}
    assert len(target.job_starts) == 2  # the migrations done before the loss did not run again
    assert target.lock is None


def test_target_lost_mid_wave_comes_back_and_the_run_goes_on_journaled(world):
    """timeouts.reconnect: the engine stops answering while phpha's update is made (a manager's dockerd
    restarting), answers again at the first reconnect: the run goes on from the live state and ends
    deployed, the lock released; the journal says where the target was lost and that it came back."""
    cfg, target, _ = world
    target.unreachable_after["update_image"] = 1
    target.comes_back = True
    rec = Recorder()
    res = D.deploy(cfg, release(), yes=True, pause=False, reporter=rec, target=target)
    assert res.state == J.DEPLOYED and target.lock is None
    assert target.images() == {"phpfiles": NEW_APP, "phpha": NEW_APP, "web": NEW_FRONT}
    assert target.reconnects == 1
    lost = [r for r in records(cfg) if r["kind"] == "reconnect"]
    assert [(r["step"], r["phase"]) for r in lost] == [("update:phpha", "lost"), ("update:phpha", "back")]
    assert "does not answer" in lost[0]["detail"]
    assert any(k == "warn" and "stopped answering during update:phpha" in m and "timeouts.reconnect" in m
               for k, m in rec.messages)
    assert states(cfg)[-1] == J.DEPLOYED
    assert len(target.job_starts) == 2  # each migration ran once


def test_target_lost_for_good_stops_the_run_after_the_reconnect_wait(world):
    cfg, target, _ = world
    target.unreachable_after["observe"] = 2
    with pytest.raises(FaultError, match="target stopped answering at step update:"):
        deploy(cfg, target)
    assert target.reconnects == 1 and target.lock is not None and states(cfg)[-1] == J.INTERRUPTED
    assert [r["phase"] for r in records(cfg) if r["kind"] == "reconnect"] == ["lost", "gave-up"]


def test_no_reconnect_wait_when_timeouts_reconnect_is_0(world):
    cfg, target, _ = world
    cfg = cfg.model_copy(update={"timeouts": cfg.timeouts.model_copy(update={"reconnect": 0})})
    target.unreachable_after["update_image"] = 1
    target.comes_back = True
    with pytest.raises(FaultError, match="target stopped answering"):
        deploy(cfg, target)
    assert target.reconnects == 0 and not [r for r in records(cfg) if r["kind"] == "reconnect"]


def test_target_lost_during_the_rollback_comes_back_and_the_rollback_completes(world):
    cfg, target, _ = world
    target.behaviour[NEW_APP] = "crash"           # the canary fails: the run rolls back …
    target.unreachable_after["read_service"] = 1   # … and loses the engine in the undo (its 2nd look)
    target.comes_back = True
    with pytest.raises(FaultError, match="rolled back"):
        deploy(cfg, target)
    assert target.images() == OLD and target.lock is None and states(cfg)[-1] == J.ROLLED_BACK
    assert [(r["step"], r["phase"]) for r in records(cfg) if r["kind"] == "reconnect"] == [
        ("undo update:phpfiles", "lost"), ("undo update:phpfiles", "back")]


def test_target_lost_during_a_migration_then_resume_adopts_the_job(world):
    cfg, target, _ = world
    target.job_polls = 3
    target.unreachable_after["job_status"] = 1  # the engine goes away while migrate:alpha runs
    with pytest.raises(FaultError, match="target stopped answering at step migrate:alpha"):
        deploy(cfg, target)
    target.reachable = True
    target.unreachable_after.clear()
    holder_exits(target)
    res = D.resume(cfg, reporter=Recorder(), target=target)
    assert res.state == J.DEPLOYED
    # the job of the interrupted run was adopted by name, never started a second time
    assert target.job_starts == [job_name(res.run_id, "migrate:alpha"), job_name(res.run_id, "migrate:beta")]


def test_abort_restores_every_recorded_image_and_releases_the_lock(world):
    cfg, target, _ = world
    target.unreachable_after["update_image"] = 2
    with pytest.raises(FaultError):
        deploy(cfg, target)
    target.reachable = True
    target.unreachable_after.clear()
    holder_exits(target)
    res = D.abort(cfg, reporter=Recorder(), target=target)
    assert res.state == J.ABORTED and target.images() == OLD and target.lock is None
    with pytest.raises(UserError, match="nothing to abort"):
        D.abort(cfg, reporter=Recorder(), target=target)


def test_a_second_run_is_refused_by_the_lock_naming_its_holder(world):
    cfg, target, _ = world
    from stackpatch.release import lock
    from stackpatch.targets.base import LockInfo
    target.create_lock(LockInfo("bob", "ci-7", 99, "26.11.1c", "other-run", 0.0, 9e12))
    with pytest.raises(lock.LockHeld, match="locked by bob on ci-7"):
        deploy(cfg, target)
    assert target.updates == [] and not J.runs_dir(cfg.root).exists()


def test_rollback_command_returns_to_the_images_the_last_run_replaced(world):
    cfg, target, _ = world
    deploy(cfg, target)
    res = D.rollback(cfg, reporter=Recorder(), target=target)
    assert res.state == J.DEPLOYED and res.op == "rollback"
    assert target.images() == OLD
    assert target.services["web"].labels["stackpatch.revision"] == OLD_REV


def test_the_purge_is_sent_after_success_only(world, tmp_path, monkeypatch):
    cfg, target, _ = world
    cf = FakeCloudflare().start()
    try:
        monkeypatch.setenv("SP_MEM_CF_TOKEN", cf.token)
        text = (cfg.root / "stackpatch.toml").read_text()
        (cfg.root / "stackpatch.toml").write_text(
            text + f'[cdn]\nzone = "{cf.zone}"\napi_url = "{cf.api_url}"\ntoken_env = "SP_MEM_CF_TOKEN"\n')
        cfg = config.load(cfg.root)
        target.behaviour[NEW_APP] = "crash"
        with pytest.raises(FaultError):
            deploy(cfg, target)
        assert cf.accepted == []
        del target.behaviour[NEW_APP]
        res = deploy(cfg, target)
        assert res.state == J.DEPLOYED and cf.accepted == [{"purge_everything": True}]
    finally:
        cf.stop()


# ---------------------------------------------------------------- crash points (kill -9 stand-ins)

class Killed(BaseException):
    """The process dies here: nothing after this point runs, no handler sees it (as with kill -9)."""


class KillAt(Recorder):
    """A reporter that kills the run when a message matching `when` is shown, or calls `probe` on each."""

    def __init__(self, when: str | None = None, probe=None):
        super().__init__()
        self.when, self.probe = when, probe

    def _add(self, kind: str, msg: str) -> None:
        super()._add(kind, msg)
        if self.probe:
            self.probe(msg)
        if self.when and self.when in msg:
            raise Killed(msg)


def test_a_run_killed_during_the_purge_is_not_final_and_resume_sends_it_once(world, monkeypatch):
    cfg, target, _ = world
    cf = FakeCloudflare().start()
    try:
        monkeypatch.setenv("SP_MEM_CF_TOKEN", cf.token)
        text = (cfg.root / "stackpatch.toml").read_text()
        (cfg.root / "stackpatch.toml").write_text(
            text + f'[cdn]\nzone = "{cf.zone}"\napi_url = "{cf.api_url}"\ntoken_env = "SP_MEM_CF_TOKEN"\n')
        cfg = config.load(cfg.root)
        with pytest.raises(Killed):
            D.deploy(cfg, release(), yes=True, pause=False, reporter=KillAt("CDN purge ("), target=target)
        assert states(cfg)[-1] == J.PURGING and cf.accepted == []
        from stackpatch.release import history
        assert history.unfinished(cfg.root, "acme-prod") is not None  # not final: resume finds it
        holder_exits(target)
        res = D.resume(cfg, reporter=Recorder(), target=target)
        assert res.state == J.DEPLOYED and states(cfg)[-1] == J.DEPLOYED
        assert cf.accepted == [{"purge_everything": True}]  # sent exactly once
        assert len(target.updates) == 3 and target.lock is None  # nothing was redone
    finally:
        cf.stop()


def test_the_heartbeat_keeps_the_lock_of_a_run_longer_than_its_ttl(world):
    import time
    cfg, target, _ = world
    cfg = cfg.model_copy(update={"timeouts": cfg.timeouts.model_copy(update={"lock_ttl": 0.9})})
    target.job_polls, target.poll_s = 6, 0.4  # each migration takes about 2 s: the run outlives the ttl several times
    seen: list[bool] = []

    def probe(msg: str) -> None:
        if target.lock is not None and msg.startswith("update:phpha"):
            seen.append(target.lock.expires_at > time.time())
    res = D.deploy(cfg, release(), yes=True, pause=False, reporter=KillAt(probe=probe), target=target)
    assert res.state == J.DEPLOYED
    assert target.renewals >= 3 and seen and all(seen)
    assert target.lock is None


def test_a_lock_left_by_a_run_killed_before_its_journal_is_released_by_abort(world):
    import socket
    from stackpatch.release import lock
    from stackpatch.targets.base import LockInfo
    cfg, target, _ = world
    target.create_lock(LockInfo("alice", socket.gethostname(), 1, "26.11.1b", "20261127T000000Z-dead00",
                                0.0, 9e12, lock.boot_id()))
    holder_exits(target)
    with pytest.raises(lock.LockHeld, match="stopped before it changed anything: `stackpatch abort` releases"):
        deploy(cfg, target)
    res = D.abort(cfg, reporter=Recorder(), target=target)
    assert res.state == J.ABORTED and target.lock is None and target.updates == []
    assert deploy(cfg, target).state == J.DEPLOYED


def test_a_failed_rollback_says_what_runs_where(world):
    cfg, target, _ = world
    target.behaviour[NEW_FRONT] = "crash"
    target.behaviour[OLD["phpha"]] = "refuse"
    with pytest.raises(FaultError) as e:
        deploy(cfg, target)
    msg = str(e.value)
    assert "\n" not in msg
    assert ("the rollback did not complete (phpfiles still on the new image, phpha still on the new image, "
            "web back on the previous image)") in msg, msg
    assert "stackpatch abort" in msg


def test_a_run_killed_during_its_rollback_is_undone_to_the_end_by_resume(world):
    cfg, target, _ = world
    target.behaviour[NEW_FRONT] = "crash"
    with pytest.raises(Killed):  # killed once web is back, before phpha is
        D.deploy(cfg, release(), yes=True, pause=False, reporter=KillAt("web: back on"), target=target)
    assert states(cfg)[-1] == J.ROLLING_BACK and target.images()["phpha"] == NEW_APP
    holder_exits(target)
    res = D.resume(cfg, reporter=Recorder(), target=target)  # never rolls forward what was being undone
    assert res.state == J.ROLLED_BACK and states(cfg)[-1] == J.ROLLED_BACK
    assert target.images() == OLD and target.lock is None


def test_abort_lets_a_running_migration_end_and_journals_it(world):
    cfg, target, _ = world
    target.job_polls = 4
    with pytest.raises(Killed):  # killed while migrate:alpha runs
        D.deploy(cfg, release(), yes=True, pause=False, reporter=KillAt("migrating alpha"), target=target)
    name = job_name(records(cfg)[0]["run_id"], "migrate:alpha")
    assert not target.jobs[name].removed
    holder_exits(target)
    res = D.abort(cfg, reporter=Recorder(), target=target)
    assert res.state == J.ABORTED and target.images() == OLD and target.lock is None
    assert target.job_starts == [name] and target.jobs[name].removed  # waited for, then removed; never rerun
    assert [(r["step"], r["exit_code"]) for r in records(cfg) if r["kind"] == "job"] == [("migrate:alpha", 0)]


def test_a_lock_left_after_the_final_record_is_released_by_resume(world):
    cfg, target, _ = world
    res = deploy(cfg, target)
    target.lock = D._lock_info(cfg, res.run_id, "26.11.1b")  # killed between `deployed` and the release
    holder_exits(target)
    with pytest.raises(Exception, match=r"ended \(deployed\) but stopped before it released the lock: "
                                        r"`stackpatch abort` releases the lock"):
        deploy(cfg, target)
    out = D.resume(cfg, reporter=Recorder(), target=target)
    assert target.lock is None and "released its lock" in (out.detail or "")
    assert states(cfg)[-1] == J.DEPLOYED  # the journal is untouched


# ---------------------------------------------------------------- the pre-pull (issue 11)

def test_every_new_image_is_pulled_before_the_canary_and_the_pull_jobs_are_removed(world):
    cfg, target, _ = world
    target.nodes = ["manager", "worker-1", "worker-2"]
    target.job_polls = 3  # the nodes report pending twice before they have pulled
    res = deploy(cfg, target)
    assert res.state == J.DEPLOYED
    assert intents(cfg)[:2] == ["prepull", "update:phpfiles"]
    assert target.pulls == [(pull_name(res.run_id, "prepull", 0), NEW_APP, ["phpfiles", "phpha"]),
                            (pull_name(res.run_id, "prepull", 1), NEW_FRONT, ["web"])]
    assert all(target.jobs[name].removed for name, _, _ in target.pulls)
    step = records(cfg)[0]["plan"][0]
    assert step["kind"] == "prepull" and step["timeout"] == cfg.timeouts.prepull


def test_a_node_that_cannot_pull_fails_the_run_before_the_canary_in_one_line(world):
    cfg, target, _ = world
    target.nodes = ["manager", "worker-1", "worker-2"]
    target.pull_fail["worker-2"] = f"No such image: {NEW_APP}"
    with pytest.raises(FaultError) as e:
        deploy(cfg, target)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"node worker-2 could not pull {NEW_APP} (for phpfiles, phpha): No such image: "), msg
    assert "nothing was changed" in msg
    assert target.updates == [] and target.images() == OLD and target.lock is None
    assert states(cfg)[-1] == J.FAILED and intents(cfg) == ["prepull"]
    assert all(target.jobs[name].removed for name, _, _ in target.pulls)


def test_prepull_false_plans_no_pull_and_an_unchanged_service_is_not_pulled(world):
    cfg, target, _ = world
    off = cfg.model_copy(update={"target": cfg.target.model_copy(update={"prepull": False})})
    assert deploy(off, target).state == J.DEPLOYED
    assert target.pulls == [] and "prepull" not in intents(off)
    from stackpatch.release.deploy_plan import plan_deploy
    # web already runs the new front: only the app image is pulled, for its services
    target.services["phpfiles"].image = OLD["phpfiles"]
    target.services["phpha"].image = OLD["phpha"]
    steps = plan_deploy(cfg, release(), target.read_state().services)
    assert steps[0]["images"] == [{"image": NEW_APP, "services": ["phpfiles", "phpha"]}]


def test_a_run_stopped_during_the_pull_is_resumed_by_adopting_its_job(world):
    cfg, target, _ = world
    target.job_polls = 2
    target.unreachable_after["pull_status"] = 0  # the engine goes away while the nodes pull
    with pytest.raises(FaultError, match="target stopped answering at step prepull"):
        deploy(cfg, target)
    assert target.updates == [] and target.lock is not None
    target.reachable = True
    target.unreachable_after.clear()
    holder_exits(target)
    res = D.resume(cfg, reporter=Recorder(), target=target)
    assert res.state == J.DEPLOYED
    assert len(target.pulls) == 2  # the interrupted run's jobs adopted by name, not started again
    assert all(target.jobs[name].removed for name, _, _ in target.pulls)


# ---------------------------------------------------------------- who may take over a lock (issue 11)

def test_a_lock_is_proven_dead_only_on_its_own_machine_or_by_its_expiry():
    import dataclasses
    import os
    import socket
    import time
    from stackpatch.release.lock import boot_id, holder_alive
    from stackpatch.targets.base import LockInfo
    now = time.time()
    mine = LockInfo("me", socket.gethostname(), os.getpid(), "v", "r", now, now + 600, boot_id())
    assert boot_id() and holder_alive(mine)
    dead = dataclasses.replace(mine, pid=_dead_pid())
    assert not holder_alive(dead)                                       # same machine, pid gone
    assert not holder_alive(dataclasses.replace(mine, boot_id="0" * 36))  # same hostname, rebooted since
    assert holder_alive(dataclasses.replace(mine, boot_id=""))          # no boot id: the hostname proves nothing
    other = dataclasses.replace(dead, host="another-machine")          # its pid means nothing here
    assert holder_alive(other)
    assert not holder_alive(other, now=now + 601)                       # until the lock expires


def test_another_clone_on_another_machine_resumes_once_the_lock_has_expired(world, tmp_path):
    import dataclasses
    import shutil
    import time
    cfg, target, _ = world
    target.unreachable_after["update_image"] = 1  # the run stops once the canary is updated, lock held
    with pytest.raises(FaultError, match="target stopped answering"):
        deploy(cfg, target)
    target.reachable = True
    target.unreachable_after.clear()
    run_id = records(cfg)[0]["run_id"]
    target.lock = dataclasses.replace(target.lock, host="laptop-of-alice")  # it ran on another machine
    other = tmp_path / "other-clone"
    other.mkdir()
    shutil.copy(cfg.root / "stackpatch.toml", other / "stackpatch.toml")
    cfg2 = config.load(other)
    # the run changed phpfiles and its journal is not here: never released as an orphan
    with pytest.raises(UserError, match=rf"locked by run {run_id} .* which changed phpfiles, and its journal is "
                                        r"not in .*copy its"):
        D.resume(cfg2, reporter=Recorder(), target=target)
    assert target.lock is not None and target.lock.run_id == run_id
    (other / ".stackpatch" / "runs").mkdir(parents=True)
    shutil.copy(J.runs_dir(cfg.root) / f"{run_id}.jsonl", other / ".stackpatch" / "runs")
    # its journal is here now, but nothing proves the holder dead on another machine until its lock expires
    with pytest.raises(UserError, match=r"may still be running .* on laptop-of-alice\): it is another machine, "
                                        r"so only its lock's expiry proves it gone"):
        D.resume(cfg2, reporter=Recorder(), target=target)
    target.lock = dataclasses.replace(target.lock, expires_at=time.time() - 1)
    res = D.resume(cfg2, reporter=Recorder(), target=target)
    assert res.state == J.DEPLOYED and res.run_id == run_id, res.detail
    assert target.images() == {"phpfiles": NEW_APP, "phpha": NEW_APP, "web": NEW_FRONT} and target.lock is None
