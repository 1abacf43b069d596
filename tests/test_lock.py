"""The deploy lock on the target: a Swarm config object, created atomically, refused with the holder's
name, broken only when expired and only with `unlock --force`. Real swarm, unique names."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from stackpatch.release import lock
from stackpatch.targets.base import LockInfo
from stackpatch.targets.swarm import SwarmTarget, lock_name

from deploy_helpers import cli

pytestmark = pytest.mark.docker

TOML = """
[registry]
host = "127.0.0.1:5999"
[images.app]
repository = "app"
[target]
stack = "{stack}"
services = {{ app = "app" }}
"""


@pytest.fixture
def stack(tmp_path):
    name = f"tlock{uuid.uuid4().hex[:8]}"
    (tmp_path / "stackpatch.toml").write_text(TOML.format(stack=name))
    target = SwarmTarget("unix:///var/run/docker.sock", name)
    try:
        yield name, target, tmp_path
    finally:
        for c in target.engine.configs(filters={"name": lock_name(name)}):
            target.engine.remove_config(c["ID"])


def _info(run_id: str, ttl: float = 600, owner: str = "alice") -> LockInfo:
    now = time.time()
    return LockInfo(owner=owner, host="laptop", pid=4242, version="26.11.1b", run_id=run_id,
                    started_at=now, expires_at=now + ttl)


def test_one_holder_at_a_time_and_refusal_names_it(stack):
    name, target, repo = stack
    # ten concurrent takers: exactly one wins (create is atomic on the manager)
    def take(i):
        try:
            lock.acquire(target, _info(f"run{i}", owner=f"user{i}"))
            return i
        except lock.LockHeld:
            return None
    with ThreadPoolExecutor(10) as ex:
        winners = [w for w in ex.map(take, range(10)) if w is not None]
    assert len(winners) == 1
    holder = target.read_lock()
    assert holder.run_id == f"run{winners[0]}" and holder.owner == f"user{winners[0]}"
    with pytest.raises(lock.LockHeld, match=f"locked by user{winners[0]} on laptop .*run run{winners[0]}"):
        lock.acquire(target, _info("other"))
    # only the holder's run releases it
    assert lock.release(target, "other") is False
    assert target.read_lock() is not None
    # the same run (resumed after kill -9) takes it over; no one else does
    lock.acquire(target, _info(f"run{winners[0]}", owner="resumer"), take_over_run=True)
    assert target.read_lock().owner == "resumer"
    with pytest.raises(lock.LockHeld):
        lock.acquire(target, _info("intruder"), take_over_run=True)
    assert lock.release(target, f"run{winners[0]}") is True
    assert target.read_lock() is None


def test_status_shows_the_lock_and_unlock_breaks_only_an_expired_one(stack):
    name, target, repo = stack
    lock.acquire(target, _info("live-run", ttl=600))
    st = cli("status", "--repo", str(repo), "--json")
    assert st.returncode == 0, st.stderr
    data = json.loads(st.stdout)
    assert data["lock"]["run_id"] == "live-run" and data["lock"]["expired"] is False
    assert "alice on laptop" in data["lock"]["holder"]
    # a live lock is never broken, even with --force
    r = cli("unlock", "--repo", str(repo), "--force")
    assert r.returncode == 2 and "locked by alice on laptop" in r.stderr and "not expired" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert target.read_lock().run_id == "live-run"
    lock.release(target, "live-run")
    # an expired one: refused without --force, broken with it
    lock.acquire(target, _info("dead-run", ttl=-5))
    r = cli("unlock", "--repo", str(repo))
    assert r.returncode == 2 and "unlock --force" in r.stderr
    assert target.read_lock() is not None
    r = cli("unlock", "--repo", str(repo), "--force")
    assert r.returncode == 0, r.stderr
    assert "dead-run" in r.stderr and target.read_lock() is None
    r = cli("unlock", "--repo", str(repo), "--force")
    assert r.returncode == 0 and "not locked" in r.stderr
