"""Shared fixtures: ONE sandbox for the whole session, and a fresh fork of it per test.

The sandbox gets a unique name and a directory under the system temp dir, so it never collides with
a user's `make demo` sandbox (`acme` in ./.sandbox) or with other developers' test runs on the same
engine. It is torn down at the end of the session (without --all: the base image stays cached).
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("stackpatch"))


def pytest_configure(config):
    """`timeout pytest ...` sends SIGTERM: turn it into an interrupt so the fixtures' teardown still runs
    (no registry process, stack or volume left behind on the shared engine)."""
    def _term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _term)
    if config.getoption("dist", "no") == "loadgroup" and not _loadgroup_groups():
        raise pytest.UsageError(
            f"pytest-xdist {_xdist_version()}'s --dist loadgroup does not group on pytest {pytest.__version__} "
            "(pytest-xdist#1386): the 3-node tests would each make a 3-node sandbox of their own, at the same "
            "time, on both workers. Install pytest<9.2 (`make setup` does), or run without -n")


def _xdist_version() -> str:
    from importlib.metadata import version
    return version("pytest-xdist")


def _loadgroup_groups() -> bool:
    """False for the pytest and pytest-xdist pair whose `--dist loadgroup` silently ignores the groups:
    pytest 9.2 keeps node ids in a structure that xdist 3.8's suffix (`nodeid@group`) no longer reaches."""
    xdist = tuple(int(x) for x in _xdist_version().split(".")[:2] if x.isdigit())
    return not (pytest.version_tuple[:2] >= (9, 2) and xdist <= (3, 8))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """A test marked `nodes3_last` takes the shared 3-node sandbox down: it runs right after the last
    other test that uses `nodes3`, whatever file that is in (tests/test_multinode_faults.py sorts after
    tests/test_multinode.py), so the 3 nodes do not outlive the tests that need them.

    Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`, see scripts/test.sh) every test of the
    3-node sandbox is in one group, `nodes3`: one worker runs them all, in this order, on one sandbox.
    (tryfirst: xdist reads the group marks in its own hook of the same name.)"""
    for i in items:
        if "nodes3" in getattr(i, "fixturenames", ()) or i.get_closest_marker("nodes3_last"):
            i.add_marker(pytest.mark.xdist_group("nodes3"))
    last = [i for i in items if i.get_closest_marker("nodes3_last")]
    if not last:
        return
    rest = [i for i in items if not i.get_closest_marker("nodes3_last")]
    users = [k for k, i in enumerate(rest) if "nodes3" in getattr(i, "fixturenames", ())]
    at = users[-1] + 1 if users else len(rest)
    items[:] = rest[:at] + last + rest[at:]


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def remove_registry_tags(registry: str) -> int:
    """Remove this engine's tags under `registry` (HOST:PORT, a test sandbox's own registry, on a port it
    picked): the images the tests' ships and scripts built and pushed there. `sandbox down` removes only
    the sandbox's own images; without this every `make test` left ~70 tags of registries that no longer
    exist. Returns how many were removed."""
    from stackpatch.sandbox import engine
    c = engine.client()
    removed = 0
    try:
        for img in c.api.images():
            for tag in img.get("RepoTags") or ():
                if tag.startswith(f"{registry}/"):
                    try:
                        c.api.remove_image(tag)
                        removed += 1
                    except Exception:  # noqa: BLE001 - still used by a container, or gone meanwhile
                        pass
    finally:
        c.close()
    return removed


@pytest.fixture(scope="session")
def sandbox():
    """`stackpatch.sandbox.api.up` on a unique name in a temp dir; `down` at session end, then the local
    tags the tests made under its registry."""
    from stackpatch.sandbox import api
    root = Path(tempfile.mkdtemp(prefix="stackpatch-test-sandbox-"))
    name = unique("sb")
    registry = None
    try:
        info = api.up(root / "sandbox", name=name)
        registry = info.registry
        yield info
    finally:
        try:
            api.down(root / "sandbox")
            if registry:
                remove_registry_tags(registry)
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fork(sandbox, tmp_path):
    """An independent repo + bare origin + running stack (from the pushed 26.11.1 images) for one test."""
    from stackpatch.sandbox import api
    stack = f"{unique('f')}-prod"
    try:
        yield api.fork(sandbox, tmp_path / "fork", stack)
    finally:
        api.remove_stack(stack)  # with the deploy lock a test that stopped a run mid-way may leave


@pytest.fixture(scope="session")
def nodes3():
    """ONE 3-node sandbox (`stackpatch sandbox up --nodes 3`: a manager and two workers, each a dockerd in
    its own network namespace) shared by every multi-node test; `sandbox down` at session end, even when
    a test failed (tests/test_multinode.py's test marked `nodes3_last`, run after every other test, runs
    down itself and checks what it leaves). STACKPATCH_TEST_NODES3_DIR=DIR reuses (or makes) the sandbox
    in DIR and keeps it: `make test` (scripts/test.sh) sets it so that its two phases share one sandbox,
    and takes it down at its exit if it is still there; a developer iterating deselects the `nodes3_last`
    test (-m "multinode and not nodes3_last")."""
    import json
    import os
    import subprocess
    import time
    kept = os.environ.get("STACKPATCH_TEST_NODES3_DIR")  # a developer's own 3-node sandbox: reused, kept
    root = Path(kept) if kept else Path(tempfile.mkdtemp(prefix="stackpatch-test-nodes-"))
    dir = root / "sandbox" if not kept else root
    name = json.loads((dir / "state.json").read_text())["name"] if kept and (dir / "state.json").exists() \
        else unique("mn")
    info: dict = {}
    try:
        t0 = time.monotonic()
        proc = subprocess.run([CLI, "sandbox", "up", "--nodes", "3", "--dir", str(dir), "--name", name,
                               "--json"], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        info = json.loads(proc.stdout)
        info["up_seconds"] = round(time.monotonic() - t0, 1)
        print(f"\nsandbox up --nodes 3: {info['up_seconds']}s", file=sys.stderr)
        yield info
    finally:
        if not kept:
            try:
                if (dir / "state.json").exists():
                    subprocess.run([CLI, "sandbox", "down", "--dir", str(dir)], capture_output=True, timeout=300)
                    if info.get("registry"):
                        remove_registry_tags(info["registry"])
            finally:
                shutil.rmtree(root, ignore_errors=True)
