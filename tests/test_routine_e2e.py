"""The whole routine through the CLI, as a person runs it (issue 5's Done-when):

start → one-line fix → push → ship --yes (under steady load, with a CDN) → status, history → finish
→ rollback --to the first release.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy_helpers import RequestLoop, version_of
from tests.fakes.cloudflare import FakeCloudflare

pytestmark = [pytest.mark.docker, pytest.mark.serial]  # measures the traffic: alone, after the parallel phase

CLI = str(Path(sys.executable).with_name("stackpatch"))


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def sp(*args: str, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def status(app: Path, env: dict) -> dict:
    r = sp("status", "--json", cwd=app, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_whole_routine_from_start_to_rollback(sandbox, fork, tmp_path):
    app = fork.app_dir
    cf = FakeCloudflare().start()
    env = {**os.environ, "STACKPATCH_CACHE_DIR": str(tmp_path / "cache"), "SP_E2E_CF_TOKEN": cf.token}
    try:
        with fork.config_path.open("a") as f:  # the fork's config is skip-worktree: the tree stays clean
            f.write(f'\n[cdn]\nzone = "{cf.zone}"\napi_url = "{cf.api_url}"\ntoken_env = "SP_E2E_CF_TOKEN"\n'
                    'purge = "files"\nitems = ["https://acme.example/static/app.js", '
                    '"https://acme.example/static/style.css"]\n')
        first = status(app, env)["services"]
        # db and edge run the base image (PostgreSQL, HAProxy), not a release of the app
        assert {s["version"] for n, s in first.items() if n not in ("db", "edge")} == {"26.11.1"}

        # 1. start from the deployed release
        r = sp("start", cwd=app, env=env)
        assert r.returncode == 0, r.stderr
        assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=app) == "hotfix/26.11.1b"

        # 2. a one-line fix, pushed (only pushed code ships)
        server = app / "app" / "server.py"
        server.write_text(server.read_text() + "# 26.11.1b: one-line fix\n")
        git("commit", "-q", "-am", "Fix: one line", cwd=app)
        git("push", "-q", cwd=app)
        sha = git("rev-parse", "HEAD", cwd=app)

        # 3. what `plan` shows is what `ship` journals and runs
        r = sp("plan", "--json", cwd=app, env=env)
        assert r.returncode == 0, r.stderr
        planned = json.loads(r.stdout)
        assert planned["engine"] == "unix:///var/run/docker.sock"
        planned_deploy = [s["detail"] for s in planned["steps"] if s["half"] == "deploy"]
        assert [s["id"] for s in planned_deploy][-1] == "purge"

        # 4. ship under steady load
        loop = RequestLoop(fork.front_url, rate=20, max_seconds=300).start()
        time.sleep(1.0)
        t0 = time.monotonic()
        r = sp("ship", "--yes", "--json", cwd=app, env=env)
        ship_s = time.monotonic() - t0
        time.sleep(1.0)
        samples = loop.stop()
        assert r.returncode == 0, r.stderr[-4000:]
        out = json.loads(r.stdout)
        run = out["run"]
        assert run["state"] == "deployed", run
        digests = {n: i["digest"] for n, i in out["release"]["images"].items()}

        # every service runs the new digest, its labels name the hotfix version and revision
        now = status(app, env)
        for svc, image in (("phpfiles", "app"), ("phpha", "app"), ("web", "front")):
            s = now["services"][svc]
            assert s["digest"] == digests[image], (svc, s)
            assert s["version"] == "26.11.1b" and s["revision"] == sha, (svc, s)
            assert s["replicas"]["running"] == s["replicas"]["desired"], (svc, s)
        assert now["lock"] is None
        # the front serves the new revision
        served = version_of(fork.front_url)
        assert (served["release"], served["revision"]) == ("26.11.1b", sha), served
        # the fake Cloudflare received a valid purge of the configured files
        assert cf.accepted == [{"files": ["https://acme.example/static/app.js",
                                          "https://acme.example/static/style.css"]}]
        # no request failed during the run
        failed = [s for s in samples if not s.ok]
        print(f"\nship took {ship_s:.1f}s; {len(samples)} requests, {len(failed)} failed")
        assert len(samples) >= 20 * 5
        assert not failed, [f"{s.t:.2f}s {s.error}" for s in failed[:5]]
        journal = "".join(p.read_text() for p in (app / ".stackpatch" / "runs").glob("*.jsonl"))
        recs = [json.loads(ln) for ln in journal.splitlines()]
        # the steps the run journaled are the steps `plan` showed, the digests filled in by the push
        pushed = json.dumps(planned_deploy)
        for i in out["release"]["images"].values():
            pushed = pushed.replace(f'{i["repository"]}:{i["tags"][0]}@<digest after push>',
                                    f'{i["repository"]}:{i["tags"][0]}@{i["digest"]}')
        intents = [{"id": rec["step"], "kind": rec["step_kind"],
                    **{k: v for k, v in rec.items() if k not in ("ts", "kind", "step", "step_kind")}}
                   for rec in recs if rec["kind"] == "intent" and not rec.get("undo")]
        assert intents == json.loads(pushed)
        # the journal holds the build phases and never the secrets
        start_rec = next(rec for rec in recs if rec["kind"] == "run-start")
        phases = set(start_rec["build_timings"])
        assert {"workdir", "build:app", "build:front", "verify"} <= phases, phases
        assert any(p.startswith("push") for p in phases), phases
        env_file = sandbox.registry_env_file.read_text()
        secrets = [cf.token] + [ln.split("=", 1)[1] for ln in env_file.splitlines() if "PASSWORD" in ln]
        assert len(secrets) == 2
        for secret in secrets:
            assert secret not in journal and secret not in r.stdout and secret not in r.stderr

        # 5. status and history show it
        r = sp("history", "--json", cwd=app, env=env)
        assert r.returncode == 0, r.stderr
        hist = json.loads(r.stdout)
        assert hist[0]["version"] == "26.11.1b" and hist[0]["from_version"] == "26.11.1"
        assert hist[0]["state"] == "deployed" and hist[0]["live"] is True
        r = sp("status", cwd=app, env=env)
        assert r.returncode == 0 and "26.11.1b" in r.stdout and "lock: free" in r.stdout, r.stdout

        # 6. finish the hotfix: merged into master and develop, tagged, pushed, branch deleted
        r = sp("finish", cwd=app, env=env)
        assert r.returncode == 0, r.stderr
        assert git("rev-parse", "26.11.1b^{commit}", cwd=fork.origin_dir) == git(
            "rev-parse", "master", cwd=fork.origin_dir)
        assert not git("branch", "--list", "hotfix/26.11.1b", cwd=fork.origin_dir)
        assert subprocess.run(["git", "merge-base", "--is-ancestor", sha, "develop"], cwd=fork.origin_dir
                              ).returncode == 0

        # 7. rollback to the first release: every service back on its exact recorded image
        r = sp("rollback", "--to", "26.11.1", "--yes", cwd=app, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        back = status(app, env)["services"]
        for svc in ("phpfiles", "phpha", "web"):
            assert back[svc]["image"] == first[svc]["image"], (svc, back[svc]["image"], first[svc]["image"])
            assert back[svc]["version"] == "26.11.1"
        assert version_of(fork.front_url)["release"] == "26.11.1"
    finally:
        cf.stop()
