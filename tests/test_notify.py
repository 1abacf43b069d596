"""Notifications: one message per event to a local webhook server, retried with backoff, never changing
the run's outcome, the URL never shown. The deploy plumbing runs against the in-memory target; the
sandbox test in test_workflow_swarm.py runs it on a real swarm."""

from __future__ import annotations

import socket

import pytest

from stackpatch import config, notify
from stackpatch.config import NotifyConfig
from stackpatch.errors import FaultError
from stackpatch.release import deploy as D
from stackpatch.release import journal as J
from stackpatch.reporter import Recorder

from tests.fakes.webhook import Webhook
from tests.test_runner_memory import NEW_APP, OLD, records, release, world  # noqa: F401


@pytest.fixture
def hooks_env(monkeypatch):
    with Webhook() as slack, Webhook(path="/audit") as audit:
        monkeypatch.setenv("SP_TEAM_WEBHOOK", slack.url)
        monkeypatch.setenv("SP_AUDIT_WEBHOOK", audit.url)
        yield slack, audit


def with_notify(cfg, *entries: str):
    text = (cfg.root / "stackpatch.toml").read_text()
    (cfg.root / "stackpatch.toml").write_text(text + "\n" + "\n".join(entries))
    return config.load(cfg.root)


SLACK = '[[notify]]\nname = "team chat"\nurl_env = "SP_TEAM_WEBHOOK"\nformat = "slack"\n'
AUDIT = '[[notify]]\nurl_env = "SP_AUDIT_WEBHOOK"\nformat = "json"\nevents = ["deployed", "rolled-back", "failed"]\n'


def run(cfg, target, rec=None):
    return D.deploy(cfg, release(), yes=True, pause=False, reporter=rec or Recorder(), target=target)


def test_one_message_per_event_in_each_format(world, hooks_env):
    cfg, target, _ = world
    slack, audit = hooks_env
    cfg = with_notify(cfg, SLACK, AUDIT)
    res = run(cfg, target)                               # deployed
    target.behaviour[NEW_APP] = "crash"
    D.rollback(cfg, reporter=Recorder(), target=target)  # the rollback command: rolled-back
    target.exec_results["phpfiles"] = (1, "no shell\n")  # (OLD images run again; the next deploy's gate fails)
    del target.behaviour[NEW_APP]
    with pytest.raises(FaultError):
        run(cfg, target)                                 # automatic rollback: rolled-back
    texts = [b["text"] for b in slack.bodies]
    assert len(texts) == 3 and all(set(b) == {"text"} for b in slack.bodies)
    assert texts[0].startswith("stackpatch: deploy of 26.11.1b on acme-prod (default) by ")
    assert texts[0].endswith(f": deployed (was 26.11.1) [run {res.run_id}]")
    assert "rollback of 26.11.1 on acme-prod" in texts[1] and ": rolled back (was 26.11.1b)" in texts[1]
    assert "deploy of 26.11.1b" in texts[2] and "rolled back" in texts[2] and "no shell" in texts[2]
    events = [b["event"] for b in audit.bodies]
    assert events == ["deployed", "rolled-back", "rolled-back"]
    first = audit.bodies[0]
    assert (first["run_id"], first["state"], first["version"], first["previous_version"], first["stack"]) == (
        res.run_id, "deployed", "26.11.1b", "26.11.1", "acme-prod")
    assert first["services"] == ["phpfiles", "phpha", "web"] and "update:phpfiles" in first["steps_done"]
    assert all(r.content_type == "application/json" for r in slack.received + audit.received)
    # journaled, one record per delivery
    assert [(r["name"], r["event"], r["ok"]) for r in records(cfg) if r["kind"] == "notify"] == [
        ("team chat", "rolled-back", True), ("SP_AUDIT_WEBHOOK", "rolled-back", True)]


def test_purge_failed_is_its_own_event(world, hooks_env):
    cfg, target, _ = world
    slack, audit = hooks_env
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    cfg = with_notify(cfg, SLACK, AUDIT, f'[cdn]\nzone = "z"\napi_url = "http://127.0.0.1:{dead}"\n'
                                         'token_env = "SP_NOTIFY_CF"\nretries = 0\n')
    res = run(cfg, target)
    assert res.state == J.PURGE_FAILED
    [msg] = slack.bodies
    assert ": deployed (CDN purge failed) (was 26.11.1): " in msg["text"]
    assert audit.bodies == []   # it did not ask for purge-failed


def test_a_rollback_that_fails_is_a_failed_event(world, hooks_env):
    cfg, target, _ = world
    slack, audit = hooks_env
    cfg = with_notify(cfg, SLACK, AUDIT)
    target.behaviour[NEW_APP] = "crash"
    target.behaviour[OLD["phpfiles"]] = "refuse"
    with pytest.raises(FaultError, match="rollback did not complete"):
        run(cfg, target)
    [msg] = slack.bodies
    assert ": FAILED (was 26.11.1): undo update:phpfiles" in msg["text"]
    [summary] = audit.bodies
    assert (summary["event"], summary["state"]) == ("failed", J.ROLLBACK_FAILED)


def test_delivery_is_retried_with_backoff_and_a_failure_changes_no_outcome(world, hooks_env):
    cfg, target, _ = world
    slack, _ = hooks_env
    cfg = with_notify(cfg, SLACK)
    slack.fail_next(2, status=503)
    rec = Recorder()
    assert run(cfg, target, rec).state == J.DEPLOYED
    assert [r.status for r in slack.received] == [503, 503, 200] and len(slack.bodies) == 1
    # now it never answers well: warned and journaled, the run stays deployed
    slack.fail_next(10, status=500)
    D.rollback(cfg, reporter=rec, target=target)
    assert target.images() == OLD
    [warn] = [m for k, m in rec.messages if k == "warn"]
    assert "team chat (rolled-back) not delivered after 4 attempts: HTTP 500" in warn
    assert slack.url not in rec.text() and "127.0.0.1" not in warn
    last = J.view(records(cfg))
    assert last.state == J.DEPLOYED and last.op == "rollback"
    [r] = [r for r in records(cfg) if r["kind"] == "notify"]
    assert (r["ok"], r["attempts"]) == (False, 4) and slack.url not in str(r)


def test_a_client_error_is_not_retried_and_a_missing_variable_is_said(monkeypatch):
    with Webhook() as hook:
        slept = []
        hook.fail_next(1, status=400)
        entry = NotifyConfig(url_env="SP_X_WEBHOOK", retries=5)
        s = notify.summary("deployed", op="deploy", state="deployed", version="1", revision="r", previous_version=None,
                           target="default", stack="s", run_id="x", performer="me", services=[])
        d = notify.deliver(entry, "deployed", s, env={"SP_X_WEBHOOK": hook.url}, sleep=slept.append)
        assert (d.ok, d.attempts, slept) == (False, 1, [])
        hook.fail_next(2, status=429, retry_after="0")
        d = notify.deliver(entry, "deployed", s, env={"SP_X_WEBHOOK": hook.url}, sleep=slept.append)
        assert (d.ok, d.attempts, slept) == (True, 3, [0.0, 0.0])   # Retry-After honoured
        d = notify.deliver(entry, "deployed", s, env={}, sleep=slept.append)
        assert (d.ok, d.detail) == (False, "environment variable SP_X_WEBHOOK is not set")


def test_a_webhook_url_in_the_file_is_refused(tmp_path):
    from stackpatch.errors import ConfigError
    (tmp_path / "stackpatch.toml").write_text(
        '[registry]\nhost = "r:5000"\n[images.app]\nrepository = "app"\n[target]\nstack = "s"\n'
        'services = { web = "app" }\n[[notify]]\nurl_env = "https://hooks.slack.com/services/T/B/X"\n')
    with pytest.raises(ConfigError, match=r"notify\[0\]\.url_env: must be the NAME of an environment variable"):
        config.load(tmp_path)
