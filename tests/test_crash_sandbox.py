"""The crash matrix on the real sandbox: kill -9 (a real SIGKILL of the process running the operation,
tests/crash_driver.py, at an exact point) at one point per step kind and where the lock and the release
job are created, then `resume` or `abort` through the CLI. After each: the services run exactly one
recorded release, no release job, verify stack or stray container of the run is left, the lock is
released, the journal's final state says which release runs, the migration ran at most once (counted in
the database: every run of the probe migration takes a number from a sequence, which no rollback gives
back), a due purge reached the fake Cloudflare exactly once.

Bounded: one fork, six points, each recovered once (the in-memory matrix recovers every boundary both
ways). The outcomes are written to docs/crash-matrix.md's sandbox section by `make crash-matrix`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_helpers import cli, journal_records, lock_of, release, services_json, write_release
from tests.matrix_doc import sync_section
from tests.fakes.cloudflare import fake_cloudflare  # noqa: F401  (fixture)
from stackpatch.release import journal as J

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
TOKEN_ENV = "SP_SANDBOX_CF_TOKEN"
PROBE = "003_crash_probe.sql"

# (point, operation killed, where: a call of the target or the journal intent it follows, recovery)
POINTS = [
    ("lock taken, nothing journaled", "deploy", "call:create_lock:1", "abort"),
    ("gate: intent gate:canary", "deploy", "intent gate:canary", "abort"),
    ("migrate: the release job was just created", "deploy", "call:start_job:1", "resume"),
    ("rollback step: `rollback`, intent update:web", "rollback", "intent update:web", "resume"),
    ("serving: intent serving", "deploy", "intent serving", "abort"),
    ("purge: intent purge", "deploy", "intent purge", "resume"),
]


def sql(stack: str, statement: str) -> str:
    """One statement in the fork's database, from a task of phpfiles (it has psycopg2 and DATABASE_URL)."""
    from stackpatch.sandbox import engine, stack as stack_mod
    code = ("import os, psycopg2\nc = psycopg2.connect(os.environ['DATABASE_URL'])\nc.autocommit = True\n"
            "cur = c.cursor()\ncur.execute(os.environ['SQL'])\n"
            "print(cur.fetchone()[0] if cur.description else '')\n")
    return stack_mod.run_in_service(engine.client(), stack, "phpfiles",
                                    ["env", f"SQL={statement}", "python3", "-c", code]).strip()


def probe_runs(stack: str) -> int:
    return int(sql(stack, "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.crash_probe_runs"))


def leftovers(stack: str) -> list[str]:
    """Release jobs of the stack, verify stacks, and containers of removed services."""
    from stackpatch.sandbox import engine
    c = engine.client()
    out = [s["Spec"]["Name"] for s in c.api.services(filters={"label": f"com.docker.stack.namespace={stack}"})
           if (s["Spec"].get("Labels") or {}).get("stackpatch.job")]
    names = {s["Spec"]["Name"] for s in c.api.services()}
    for ct in c.api.containers(all=True, filters={"label": f"com.docker.stack.namespace={stack}"}):
        svc = (ct.get("Labels") or {}).get("com.docker.swarm.service.name")
        if svc and svc not in names:
            out.append(f"container {ct['Names'][0]} of removed service {svc}")
    return out


def driver(app: Path, op: str, release_file: Path, kill: str, env: dict) -> int:
    res = subprocess.run([sys.executable, "-m", "tests.crash_driver", "--repo", str(app), "--op", op,
                          "--release", str(release_file), "--kill", kill], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**os.environ, **env, "PYTHONPATH": str(ROOT)})
    assert res.returncode == -9, f"not killed at {kill}: {res.returncode} {res.stdout[-2000:]} {res.stderr[-2000:]}"
    return res.returncode


def test_crash_points_on_the_sandbox(sandbox, fork, tmp_path, fake_cloudflare):
    cf = fake_cloudflare
    rel = release(sandbox, "probe")
    rf = write_release(rel, tmp_path / "release.json")
    app, stack = fork.app_dir, fork.stack
    cfg_path = Path(fork.config_path)
    cfg_path.write_text(cfg_path.read_text()
                        + f'\n[cdn]\nzone = "{cf.zone}"\napi_url = "{cf.api_url}"\ntoken_env = "{TOKEN_ENV}"\n')
    env = {TOKEN_ENV: cf.token}
    os.environ[TOKEN_ENV] = cf.token
    sql(stack, "CREATE SEQUENCE IF NOT EXISTS public.crash_probe_runs")
    old = {n: s["digest"] for n, s in services_json(app)["services"].items() if s["managed"]}
    new = {"phpfiles": rel.images["app"].digest, "phpha": rel.images["app"].digest, "web": rel.images["front"].digest}
    rows = []
    try:
        for point, op, kill, how in POINTS:
            if op == "deploy":
                sql(stack, f"DELETE FROM schema_migrations WHERE name = '{PROBE}'")  # the probe may run again
            runs0, purges0 = probe_runs(stack), len(cf.accepted)
            if not kill.startswith("call:"):
                kill = "intent:" + kill.split(" ", 1)[1]
            driver(app, op, rf, kill, env)
            r = cli(how, "--repo", str(app), "--yes", "--json", env=env, timeout=600)
            assert r.returncode == 0, f"{point}: {how} failed: {r.stderr[-3000:]}"
            # every service runs one recorded release
            now = {n: s["digest"] for n, s in services_json(app)["services"].items() if s["managed"]}
            assert now in (old, new), f"{point}: a mix runs: {now}"
            which = "new" if now == new else "old"
            assert lock_of(stack) is None, f"{point}: the lock is still held"
            assert leftovers(stack) == [], f"{point}: left behind: {leftovers(stack)}"
            runs = probe_runs(stack) - runs0
            assert runs <= 1, f"{point}: the migration ran {runs} times"
            purges = len(cf.accepted) - purges0
            last = journal_records(app)
            view = J.view(last)
            state = view.state if view else "no run recorded"
            if view is not None:
                assert view.finished, f"{point}: the journal ends {view.state}"
                ran = {"deploy": new, "rollback": old}[view.op] if view.state == J.DEPLOYED else \
                    {"deploy": old, "rollback": new}[view.op]
                assert now == ran, f"{point}: the journal says {view.op} {view.state}, the stack runs {which}"
                if view.op == "deploy" and view.state == J.DEPLOYED:
                    assert runs == 1 and purges == 1, f"{point}: deployed with {runs} migration(s), {purges} purge(s)"
            assert purges <= 1
            rows.append(f"| {point} | `{how}` | {state}, {which}; migration runs {runs}; purge {purges} |")
    finally:
        os.environ.pop(TOKEN_ENV, None)
    body = ("| kill -9 after | then | outcome |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n")
    sync_section("sandbox", body)
