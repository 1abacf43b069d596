"""The second half of `ship` on a fork of the sandbox: a hotfix release rolled out in waves (canary,
release phase, rest), visible in `status` and `history`, then `rollback` back to 26.11.1."""

from __future__ import annotations

import json
import time

import pytest

from tests.fakes.cloudflare import FakeCloudflare

from deploy_helpers import cli, lock_of, release, services_json, version_of, write_release

pytestmark = pytest.mark.docker


def test_deploy_then_status_history_purge_and_rollback_to_the_recorded_release(sandbox, fork, tmp_path):
    rel = release(sandbox, "good")
    repo = str(fork.app_dir)
    before = services_json(fork.app_dir)["services"]
    cf = FakeCloudflare().start()
    try:
        toml = fork.app_dir / "stackpatch.toml"  # skip-worktree: the committed file is unchanged
        text = toml.read_text()
        assert text.count('when = "after-canary"\n') == 1
        toml.write_text(text.replace('when = "after-canary"\n', 'when = "after-canary"\ntenants = ["alpha", "beta"]\n'))
        with toml.open("a") as f:
            f.write(f'\n[cdn]\nzone = "{cf.zone}"\napi_url = "{cf.api_url}"\ntoken_env = "SP_TEST_CF_TOKEN"\n'
                    'retries = 1\n'
                    # a command check inside the canary, part of its gate
                    '\n[[target.checks]]\nname = "canary runs the release"\nservice = "phpfiles"\n'
                    'command = ["sh", "-c", "test \\"$APP_REVISION\\" = {revision}"]\n')
        t0 = time.monotonic()
        # a wrong token: Cloudflare answers 401; the release is deployed all the same, the purge is not
        r = cli("deploy", "--repo", repo, "--release", str(write_release(rel, tmp_path / "r.json")), "--yes",
                "--json", env={"SP_TEST_CF_TOKEN": "wrong-token-value"})
        deploy_s = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        deploy_err = r.stderr
        res = json.loads(r.stdout)
        assert res["state"] == "deployed-purge-failed", res
        assert "401" in res["purge_error"] or "uthentication" in res["purge_error"], res["purge_error"]
        assert cf.accepted == []
        r = cli("purge", "--repo", repo, "--json", env={"SP_TEST_CF_TOKEN": cf.token})
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["state"] == "deployed"
        assert cf.accepted == [{"purge_everything": True}]
        r = cli("purge", "--repo", repo, env={"SP_TEST_CF_TOKEN": cf.token})
        assert r.returncode == 2 and "nothing to retry" in r.stderr  # only a failed purge is retried
    finally:
        cf.stop()
    journal = "".join(p.read_text() for p in (fork.app_dir / ".stackpatch" / "runs").glob("*.jsonl"))
    assert cf.token not in journal and "wrong-token-value" not in journal
    from stackpatch.config import read_env_file
    secrets = [v for k, v in read_env_file(sandbox.registry_env_file).items() if "PASSWORD" in k and v]
    assert secrets  # the registry password the deploy passed on as X-Registry-Auth
    labels = json.dumps(services_json(fork.app_dir))
    for secret in secrets:
        assert secret not in journal and secret not in deploy_err and secret not in labels
    assert res["version"] == rel.version and res["from_version"] == sandbox.release
    # the release phase once per tenant (the routine's DATA profiles), from the new image, output streamed
    assert list(res["timings"])[:5] == ["prepull", "update:phpfiles", "gate:canary", "migrate:alpha", "migrate:beta"]
    assert "(DATA=alpha)" in deploy_err and "(DATA=beta)" in deploy_err
    assert "│ migrate: schema alpha" in deploy_err and "│ migrate: schema beta" in deploy_err
    assert "check canary runs the release: ok" in deploy_err

    st = services_json(fork.app_dir)
    for name, img in (("phpfiles", "app"), ("phpha", "app"), ("web", "front")):
        s = st["services"][name]
        assert s["digest"] == rel.images[img].digest
        assert s["image"] == rel.images[img].ref
        assert s["version"] == rel.version and s["revision"] == rel.revision
        assert s["run_id"] == res["run_id"] and s["previous_image"] == before[name]["image"]
        assert s["replicas"]["running"] == s["replicas"]["desired"]
    assert st["services"]["db"]["image"] == before["db"]["image"]  # not managed: untouched
    assert st["lock"] is None and st["last_run"]["state"] == "deployed"
    v = version_of(fork.front_url)
    assert (v["release"], v["revision"]) == (rel.version, rel.revision)

    from stackpatch.release import history
    assert history.shipped(fork.app_dir, rel.version) is True

    h = cli("history", "--repo", repo, "--json")
    rows = json.loads(h.stdout)
    assert rows[0]["run_id"] == res["run_id"] and rows[0]["live"]
    assert (rows[0]["from_version"], rows[0]["version"], rows[0]["state"]) == (sandbox.release, rel.version, "deployed")
    assert rows[0]["owner"] and rows[0]["host"]
    text = cli("history", "--repo", repo).stdout
    assert res["run_id"] in text and rel.version in text and "deployed" in text

    # rollback (no --to): every service back to the exact images recorded before the run
    t0 = time.monotonic()
    r = cli("rollback", "--repo", repo, "--yes", "--json")
    rollback_s = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == sandbox.release
    after = services_json(fork.app_dir)["services"]
    for name in ("phpfiles", "phpha", "web"):
        assert after[name]["image"] == before[name]["image"] and after[name]["version"] == sandbox.release
    assert version_of(fork.front_url)["revision"] == sandbox.revision
    # and forward again to a version named in the history
    r = cli("rollback", "--repo", repo, "--to", rel.version, "--yes", "--json")
    assert r.returncode == 0, r.stderr
    assert version_of(fork.front_url)["revision"] == rel.revision
    r = cli("rollback", "--repo", repo, "--to", "26.10.9", "--yes")
    assert r.returncode == 2 and "26.10.9 is not recorded" in r.stderr
    assert lock_of(fork.stack) is None
    print(f"\nrollout of 3 services: {deploy_s:.1f}s; rollback of 3 services: {rollback_s:.1f}s")


def test_refusals_change_nothing(sandbox, fork, tmp_path):
    repo = str(fork.app_dir)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = cli("deploy", "--repo", repo, "--release", str(bad), "--yes")
    assert r.returncode == 2 and "not a release JSON" in r.stderr
    r = cli("deploy", "--repo", repo, "--release", str(write_release(release(sandbox, "good"), tmp_path / "r.json")),
            "--pause")
    assert r.returncode == 2 and "--pause" in r.stderr and "--yes" in r.stderr
    for cmd in (("resume", "--yes"), ("abort", "--yes"), ("purge",)):
        r = cli(*cmd, "--repo", repo)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli("rollback", "--repo", repo)  # no terminal, no --yes
    assert r.returncode == 2 and "--yes" in r.stderr
    assert not (fork.app_dir / ".stackpatch" / "runs").exists() or not list((fork.app_dir / ".stackpatch" / "runs").glob("*"))
